//! Admission: what a request may do now, and queueing what it sends (batches and streams
//! registered, entries forgotten when their owners go away).

use super::*;

impl Session {
    /// Registers a batch of commands run in order, pipelined when the server allows; its
    /// replies are read with [`Request::BatchNext`]. Nothing is sent yet. Every line is
    /// checked first, so a bad argument anywhere sends nothing.
    pub fn batch(&mut self, lines: Vec<Vec<u8>>, expect: Expect) -> Result<u64, ProtoError> {
        let mut scratch = Vec::new();
        for line in &lines {
            encode_line(line, &mut scratch)?;
            scratch.clear();
        }
        let id = self.fresh_id();
        self.batches.insert(
            id,
            Batch {
                lines,
                expect,
                sent: 0,
                next: 0,
                in_flight: VecDeque::new(),
            },
        );
        Ok(id)
    }

    /// The batch's iterator is gone: replies still in flight are read and dropped.
    pub fn drop_batch(&mut self, id: u64) {
        if let Some(batch) = self.batches.remove(&id) {
            for entry_id in batch.in_flight {
                self.forget(entry_id);
            }
        }
    }

    /// The stream's iterator is gone: the rest of its body is read and dropped.
    pub fn drop_stream(&mut self, id: u64) {
        if self.streams.remove(&id).is_some() {
            self.forget(id);
        }
    }

    /// Nobody wants entry `id`'s reply any more.
    pub(super) fn forget(&mut self, id: u64) {
        self.ready.remove(&id);
        if let Some(entry) = self.queue.iter_mut().find(|e| e.id == id) {
            entry.owner = Owner::Internal;
        }
        if self.queue.front().is_some_and(|e| e.id == id) {
            if let Some(body) = &mut self.body {
                body.sink = Sink::Discard;
            }
        }
    }

    pub(super) fn fresh_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Starts a request: checks it is allowed now and queues what it sends.
    pub fn start(&mut self, request: Request) -> Result<Job, ProtoError> {
        if let Some(err) = &self.broken {
            return Err(err.clone());
        }
        let response = matches!(
            request,
            Request::Command { secret: true, .. }
                | Request::Command { raw: true, .. }
                | Request::Put { .. }
                | Request::Claim { .. }
        );
        if self.sasl_open && !response {
            return Err(ProtoError::Usage(
                "an AUTH exchange is in progress: answer the server's challenge or cancel it with \"*\" first".into(),
            ));
        }
        if self.facts.state == State::Update {
            return Err(ProtoError::Usage(
                "QUIT was sent: the session is over; open a new connection".into(),
            ));
        }
        let phase = match &request {
            Request::Command { line, expect, secret, .. } => {
                let verb = if self.sasl_open { Verb::Sasl } else { classify(line) };
                let id = self.send(line, *expect, Owner::Caller, verb)?;
                if *secret && verb != Verb::Sasl {
                    self.mask_last_trace(line);
                }
                Phase::Await(id)
            }
            Request::Put { line } => {
                let expect = inferred(line);
                let verb = if self.sasl_open { Verb::Sasl } else { classify(line) };
                self.send(line, expect, Owner::Put, verb)?;
                Phase::Flush
            }
            Request::Claim { expect } => {
                // poplib's `_getresp`: the oldest `Put` entry, read as the caller says. `Put`
                // entries nobody claims are dropped when a later reply is read past them.
                let Some(entry) = self.queue.iter_mut().find(|e| e.owner == Owner::Put) else {
                    return Err(ProtoError::Usage("no reply is outstanding: send a command before reading its reply".into()));
                };
                entry.expect = *expect;
                entry.owner = Owner::Caller;
                Phase::Await(entry.id)
            }
            Request::RawLine { .. } => {
                let id = match self.queue.iter_mut().find(|e| matches!(e.owner, Owner::Put | Owner::Raw)) {
                    Some(entry) => {
                        entry.owner = Owner::Raw;
                        entry.id
                    }
                    None => {
                        let id = self.fresh_id();
                        let entry = Entry { id, expect: Expect::Status, owner: Owner::Raw, verb: Verb::Other, framing: Expect::Status, raw_status_read: false };
                        self.queue.push_back(entry);
                        id
                    }
                };
                Phase::RawLine(id)
            }
            Request::Capa => Phase::Await(self.send(b"CAPA", Expect::Lines, Owner::Caller, Verb::Capa)?),
            Request::Messages => match self.capabilities().map(|c| c.pipelining) {
                None => Phase::MessagesCapa(self.send(b"CAPA", Expect::Lines, Owner::Internal, Verb::Capa)?),
                Some(pipelining) => self.send_listing(pipelining)?,
            },
            Request::StreamOpen { line } => {
                let id = self.send(line, Expect::Stream, Owner::Caller, classify(line))?;
                Phase::Await(id)
            }
            Request::StreamNext { max: 0, .. } => {
                return Err(ProtoError::InvalidArgument("a chunk must be at least 1 byte".into()))
            }
            Request::StreamNext { id, .. } => match self.streams.get(id) {
                Some(StreamState::Open) => Phase::Stream(*id),
                Some(StreamState::Ended) => {
                    self.streams.remove(id);
                    return Ok(Job { request, phase: Phase::Flush, finished: false, ended_stream: true });
                }
                Some(StreamState::Superseded) => {
                    return Err(ProtoError::Usage(
                        "this message stream was abandoned: another command was issued before it was read to the end, \
                         and its rest was discarded; retrieve the message again"
                            .into(),
                    ))
                }
                None => return Err(ProtoError::Usage("this message stream is finished or closed".into())),
            },
            Request::BatchNext { id } => {
                if !self.batches.contains_key(id) {
                    return Err(ProtoError::Usage("this batch is finished or closed".into()));
                }
                match self.facts.capabilities {
                    None => Phase::BatchCapa(self.send(b"CAPA", Expect::Lines, Owner::Internal, Verb::Capa)?),
                    Some(_) => Phase::Batch,
                }
            }
            Request::StartTls => {
                if self.facts.tls {
                    return Err(ProtoError::Usage("TLS is already active on this connection".into()));
                }
                Phase::Await(self.send(b"STLS", Expect::Status, Owner::Caller, Verb::Stls)?)
            }
        };
        Ok(Job {
            request,
            phase,
            finished: false,
            ended_stream: false,
        })
    }

    pub(super) fn send_listing(&mut self, pipelining: bool) -> Result<Phase, ProtoError> {
        let list = self.send(b"LIST", Expect::Lines, Owner::Caller, Verb::Other)?;
        let uidl = if pipelining {
            Some(self.send(b"UIDL", Expect::Lines, Owner::Caller, Verb::Other)?)
        } else {
            None
        };
        Ok(Phase::MessagesList { list, uidl })
    }

    /// Queues one command line; CR, LF and NUL are refused before anything is queued.
    pub(super) fn send(
        &mut self,
        line: &[u8],
        expect: Expect,
        owner: Owner,
        verb: Verb,
    ) -> Result<u64, ProtoError> {
        encode_line(line, &mut self.out)?;
        if let Some(trace) = &mut self.trace {
            trace.push((true, redact(line, verb == Verb::Sasl)));
            self.remember_secret(line, verb);
        }
        let framing = if owner == Owner::Put {
            inferred(line)
        } else {
            expect
        };
        let id = self.fresh_id();
        let owner = if expect == Expect::Stream {
            self.streams.insert(id, StreamState::Open);
            Owner::Stream(id)
        } else {
            owner
        };
        self.queue.push_back(Entry {
            id,
            expect,
            owner,
            verb,
            framing,
            raw_status_read: false,
        });
        Ok(id)
    }
}
