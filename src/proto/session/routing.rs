//! Routing: decoding the front reply and handing it to its owner (the caller, a batch read
//! ahead, or nobody), and the session state a status line changes.

use super::*;

impl Session {
    /// The reply of entry `id` if it is complete, reading ahead (and keeping or dropping)
    /// the replies in front of it.
    pub(super) fn reply_for(&mut self, id: u64) -> Result<Option<Outcome>, ProtoError> {
        loop {
            if let Some(outcome) = self.ready.remove(&id) {
                return Ok(Some(outcome));
            }
            let Some(front) = self.queue.front() else {
                return Err(ProtoError::Usage(
                    "internal error: awaited a reply that was never requested".into(),
                ));
            };
            let (front_id, front_owner, front_expect) = (front.id, front.owner, front.expect);
            if front_owner == Owner::Raw && front_id != id && self.body.is_none() {
                let status_read = self.queue.front().is_some_and(|e| e.raw_status_read);
                if status_read {
                    // Its caller read part of a body line by line: the rest is dropped.
                    self.body = Some(Body {
                        status: Vec::new(),
                        decoder: BodyDecoder::new(),
                        sink: Sink::Discard,
                        superseded_at: None,
                    });
                }
            }
            // A stream in front of another request is superseded: its rest is dropped.
            if let Owner::Stream(stream) = front_owner {
                if stream != id {
                    if let Some(body) = &mut self.body {
                        body.superseded_at = Some(body.decoder.octets);
                        self.streams.insert(stream, StreamState::Superseded);
                        self.forget(stream);
                    }
                }
            }
            let superseded_at = self.body.as_ref().and_then(|b| b.superseded_at);
            let Some(outcome) = self.decode_front()? else {
                return Ok(None);
            };
            // An opened stream stays in front: its body follows.
            let streaming = self.body.is_some();
            let front = self.queue.front_mut().expect("front exists");
            if !streaming
                && front.framing != Expect::Status
                && matches!(outcome, Ok(Reply::Status(_)))
            {
                // Its caller read only the status line (poplib's `_getresp` after
                // `_putcmd("RETR 1")`): the body that follows stays this entry's, read on with
                // `RawLine` or dropped by the next request, never taken for another reply.
                front.owner = Owner::Raw;
                front.expect = front.framing;
                front.raw_status_read = true;
            } else if !streaming {
                self.queue.pop_front();
                if front_expect == Expect::Stream {
                    self.stream_gone(front_id, superseded_at, &outcome);
                }
            }
            if front_id == id {
                return Ok(Some(outcome));
            }
            if streaming {
                // Nobody waits for this stream's status (its opener is gone): drop the body.
                self.streams.insert(front_id, StreamState::Superseded);
                self.forget(front_id);
            } else if let Owner::Batch(_) = front_owner {
                self.ready.insert(front_id, outcome);
            }
        }
    }

    /// Follows the framing of an entry read line by line, so that it leaves the queue when its
    /// reply ends, or its rest is dropped when a later request passes it.
    pub(super) fn raw_line_read(&mut self, raw: &[u8]) {
        let Some(entry) = self.queue.front_mut() else {
            return;
        };
        let content = crate::proto::response::strip_line_end(raw);
        let (greeting, ended) = if entry.raw_status_read {
            (false, content == b".")
        } else {
            entry.raw_status_read = true;
            let ended = entry.framing == Expect::Status || !content.starts_with(b"+");
            (entry.id == GREETING, ended)
        };
        if greeting {
            self.facts_mut().greeting = Some(content.to_vec());
        }
        if ended {
            self.queue.pop_front();
        }
    }

    /// A stream's entry left the queue without `stream_chunk`: it failed to open (its iterator
    /// gets nothing more), or its rest was dropped after a later request superseded it.
    pub(super) fn stream_gone(&mut self, id: u64, superseded_at: Option<usize>, outcome: &Outcome) {
        match (superseded_at, outcome) {
            (Some(octets), Ok(Reply::Bytes { octets: end, .. })) if octets == *end => {
                // Nothing followed the last chunk handed out: the stream simply ended.
                if self.streams.contains_key(&id) {
                    self.streams.insert(id, StreamState::Ended);
                }
            }
            (Some(_), _) => {}
            (None, _) => {
                if self.streams.get(&id) == Some(&StreamState::Open) {
                    self.streams.remove(&id);
                }
            }
        }
    }

    /// Decodes the front entry's reply as far as the buffered bytes allow.
    pub(super) fn decode_front(&mut self) -> Result<Option<Outcome>, ProtoError> {
        let limits = self.limits;
        let entry = self.queue.front().expect("decode_front needs an entry");
        let (id, expect, verb, owner) = (entry.id, entry.expect, entry.verb, entry.owner);
        if self.body.is_none() {
            let Some(raw) = self
                .reader
                .next_raw_line(limits.max_status_line, "status")?
            else {
                return Ok(None);
            };
            // A secret sent and echoed back is masked in every status line handed out: the
            // reply returned, the error raised, the trace.
            let line = self.masked(self.reader.content(raw));
            if id == GREETING {
                self.facts_mut().greeting = Some(line.clone());
            }
            if let Some(trace) = &mut self.trace {
                trace.push((false, line.clone()));
            }
            let ok = check_status(&line);
            self.apply(verb, &line, ok.is_ok());
            if let Err(err) = ok {
                return Ok(Some(Err(err)));
            }
            // Nobody will read this body: an entry forgotten, or a `Put` nobody claimed (a claimed
            // one belongs to its caller by now). CAPA is still read: the session learns from it.
            let discard =
                matches!(owner, Owner::Internal | Owner::Put | Owner::Raw) && verb != Verb::Capa;
            let sink = match expect {
                Expect::Status => return Ok(Some(Ok(Reply::Status(line)))),
                _ if discard => Sink::Discard,
                Expect::Lines => Sink::Lines(LinesSink::default()),
                Expect::Bytes => Sink::Bytes(BytesSink::default()),
                Expect::Stream => {
                    self.body = Some(Body {
                        status: line.clone(),
                        decoder: BodyDecoder::new(),
                        sink: Sink::Stream,
                        superseded_at: None,
                    });
                    // The opener gets the status now; the body follows chunk by chunk.
                    return Ok(Some(Ok(Reply::Status(line))));
                }
            };
            self.body = Some(Body {
                status: line,
                decoder: BodyDecoder::new(),
                sink,
                superseded_at: None,
            });
        }
        let body = self.body.as_mut().expect("body is set");
        let body_limits = match (&body.sink, verb) {
            (_, Verb::Capa) => Limits {
                max_response_size: MAX_CAPA,
                ..limits
            },
            (Sink::Discard | Sink::Stream, _) => Limits {
                max_response_size: usize::MAX,
                ..limits
            },
            _ => limits,
        };
        let Some(octets) = body
            .decoder
            .advance(&mut self.reader, &body_limits, &mut body.sink)?
        else {
            return Ok(None);
        };
        let body = self.body.take().expect("body is set");
        self.reader.release();
        let reply = match body.sink {
            Sink::Lines(lines) => Reply::Lines {
                status: body.status,
                lines,
                octets,
            },
            Sink::Bytes(bytes) => Reply::Bytes {
                status: body.status,
                data: bytes.data,
                octets,
            },
            Sink::Stream | Sink::Discard => Reply::Bytes {
                status: body.status,
                data: Vec::new(),
                octets,
            },
        };
        if verb == Verb::Capa {
            if let Reply::Lines { lines, .. } = &reply {
                self.set_capabilities(Some(parse_capa(lines.lines())));
            }
        }
        Ok(Some(Ok(reply)))
    }

    /// State changes carried by a status line.
    pub(super) fn apply(&mut self, verb: Verb, line: &[u8], ok: bool) {
        let continuation = line.first() == Some(&b'+') && !line.starts_with(b"+OK");
        match verb {
            Verb::Auth | Verb::Sasl => {
                self.sasl_open = continuation;
                if ok && !continuation {
                    self.logged_in();
                }
            }
            Verb::Login if ok => self.logged_in(),
            Verb::Quit if ok => self.facts_mut().state = State::Update,
            // A server without CAPA: nothing is advertised.
            Verb::Capa if !ok => self.set_capabilities(Some(Capabilities::default())),
            _ => {}
        }
    }

    pub(super) fn logged_in(&mut self) {
        self.facts_mut().state = State::Transaction;
        // RFC 2449 §5: capabilities may change after authentication.
        self.set_capabilities(None);
    }
}
