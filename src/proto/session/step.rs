//! The step loop: advances a job until it needs I/O or is done.

use super::listings::{parse_listing, Pairing};
use super::*;

impl Session {
    /// Advances `job`: the I/O it needs next, or its result. A fatal error closes the session
    /// (every later request fails with it); a `-ERR` is a normal result. Closed meanwhile
    /// (from another thread), the job stops here.
    pub fn step(&mut self, job: &mut Job) -> Result<Step, ProtoError> {
        self.closed.check()?;
        let result = self.step_inner(job);
        if let Err(err) = &result {
            self.fail(err);
        }
        result
    }

    pub(super) fn step_inner(&mut self, job: &mut Job) -> Result<Step, ProtoError> {
        loop {
            if !self.out.is_empty() {
                return Ok(Step::Write);
            }
            let progressed = match &mut job.phase {
                Phase::Flush if job.ended_stream => return Ok(self.finish(job, Done::Chunk(None))),
                Phase::Flush => return Ok(self.finish(job, Done::Sent)),
                Phase::RawLine(id) => {
                    let id = *id;
                    let front = self.queue.front().map(|e| e.id);
                    if front.is_some_and(|front| front != id) {
                        // Replies in front of it first (kept for a batch, or dropped).
                        self.reply_for(front.expect("front exists"))?.is_some()
                    } else {
                        // A body line of a reply whose status line was read by hand is
                        // bounded as body lines are, not as status lines.
                        let body = self.queue.front().is_some_and(|entry| {
                            entry.raw_status_read && entry.framing != Expect::Status
                        });
                        let (limit, what) = if body {
                            (self.limits.max_line_length, "message")
                        } else {
                            (self.limits.max_status_line, "status")
                        };
                        let Request::RawLine { max } = job.request else {
                            unreachable!("raw line phase without a raw line request")
                        };
                        let max = max.unwrap_or(usize::MAX);
                        match self.reader.next_raw_part(limit, what, max)? {
                            Some((part, whole)) => {
                                if let Some(raw) = whole {
                                    let line = self.reader.raw(raw).to_vec();
                                    self.raw_line_read(&line);
                                }
                                return Ok(self.finish(job, Done::Line(part)));
                            }
                            None => false,
                        }
                    }
                }
                Phase::Await(id) => {
                    let id = *id;
                    match self.reply_for(id)? {
                        None => false,
                        Some(outcome) => return Ok(self.complete(job, outcome)),
                    }
                }
                Phase::TlsHandshake(status) => {
                    if !self.facts.tls {
                        return Ok(Step::Handshake);
                    }
                    let status = std::mem::take(status);
                    return Ok(self.finish(job, Done::Reply(Ok(Reply::Status(status)))));
                }
                Phase::MessagesCapa(id) => {
                    let id = *id;
                    match self.reply_for(id)? {
                        None => false,
                        Some(_) => {
                            let pipelining = self.capabilities().is_some_and(|c| c.pipelining);
                            job.phase = self.send_listing(pipelining)?;
                            true
                        }
                    }
                }
                Phase::MessagesList { list, uidl } => {
                    let (list, uidl) = (*list, *uidl);
                    match self.reply_for(list)? {
                        None => false,
                        Some(Err(err)) => {
                            if let Some(uidl) = uidl {
                                self.forget(uidl);
                            }
                            return Ok(self.finish(job, Done::Reply(Err(err))));
                        }
                        Some(Ok(reply)) => {
                            // A malformed line is the server's data, not a framing error: the
                            // session stays in step (the pipelined UIDL is dropped).
                            let rows = match parse_listing(&reply) {
                                Ok(rows) => rows,
                                Err(err) => {
                                    if let Some(uidl) = uidl {
                                        self.forget(uidl);
                                    }
                                    return Ok(self.finish(job, Done::Reply(Err(err))));
                                }
                            };
                            let uidl = match uidl {
                                Some(id) => id,
                                None => self.send(
                                    &Command::Uidl(None),
                                    Expect::Lines,
                                    Owner::Caller,
                                    Verb::Other,
                                )?,
                            };
                            job.phase = Phase::MessagesUidl {
                                pairing: Pairing::new(rows),
                                uidl,
                            };
                            true
                        }
                    }
                }
                Phase::MessagesUidl { pairing, uidl } => {
                    let uidl = *uidl;
                    match self.reply_for(uidl)? {
                        None => false,
                        Some(outcome) => {
                            let mut pairing = std::mem::replace(pairing, Pairing::new(Vec::new()));
                            let lines = match outcome {
                                Ok(Reply::Lines { lines, .. }) => Some(lines),
                                // A server without UIDL answers -ERR: sizes without unique-ids.
                                Ok(_) | Err(ProtoError::ServerError(_)) => None,
                                Err(err) => return Ok(self.finish(job, Done::Reply(Err(err)))),
                            };
                            for line in lines.iter().flat_map(|l| l.lines()) {
                                if pairing.failed.is_some() {
                                    break;
                                }
                                pairing.failed = pairing.line(line).err();
                            }
                            if let Some(err) = pairing.failed.take() {
                                return Ok(self.finish(job, Done::Reply(Err(err))));
                            }
                            return Ok(self.finish(job, Done::Messages(pairing.finish())));
                        }
                    }
                }
                Phase::BatchCapa(id) => {
                    let id = *id;
                    match self.reply_for(id)? {
                        None => false,
                        Some(_) => {
                            job.phase = Phase::Batch;
                            true
                        }
                    }
                }
                Phase::Batch => {
                    let Request::BatchNext { id } = job.request else {
                        unreachable!("batch phase without a batch request")
                    };
                    match self.batch_step(id)? {
                        BatchStep::Sent => true,
                        BatchStep::Wait => false,
                        BatchStep::Item(item) => return Ok(self.finish(job, Done::Item(item))),
                    }
                }
                Phase::Stream(id) => {
                    let id = *id;
                    let Request::StreamNext { max, .. } = job.request else {
                        unreachable!("stream phase without a stream request")
                    };
                    match self.stream_chunk(id, max)? {
                        None => false,
                        Some(chunk) => return Ok(self.finish(job, Done::Chunk(chunk))),
                    }
                }
            };
            if !progressed && self.out.is_empty() {
                return Ok(Step::Read);
            }
        }
    }

    pub(super) fn finish(&mut self, job: &mut Job, done: Done) -> Step {
        job.finished = true;
        Step::Done(done)
    }

    /// The reply for a plain request has arrived: apply its effects on the session.
    pub(super) fn complete(&mut self, job: &mut Job, outcome: Outcome) -> Step {
        match (&job.request, outcome) {
            (Request::StartTls, Ok(Reply::Status(status))) => {
                // Bytes after the STLS +OK were sent in plaintext before TLS: an injection.
                let extra = self.reader.buffered().len();
                if extra > 0 {
                    let err = ProtoError::StlsInjection(extra);
                    self.fail(&err);
                    return self.finish(job, Done::Reply(Err(err)));
                }
                job.phase = Phase::TlsHandshake(status);
                Step::Handshake
            }
            (Request::StreamOpen { .. }, Ok(Reply::Status(status))) => {
                let Phase::Await(id) = job.phase else {
                    unreachable!("stream open without an entry")
                };
                self.finish(job, Done::Stream(id, status))
            }
            (Request::Capa, Ok(Reply::Lines { .. })) => {
                let caps = self.capabilities().cloned().unwrap_or_default();
                self.finish(job, Done::Capabilities(caps))
            }
            (_, outcome) => self.finish(job, Done::Reply(outcome)),
        }
    }
}
