//! Admission: what a request may do now, and queueing what it sends (batches and streams
//! registered, entries forgotten when their owners go away).

use super::*;

impl Session {
    /// Registers a batch of commands run in order, pipelined when the server allows; its
    /// replies are read with [`Request::BatchNext`], bodies kept as `collect` says. Nothing
    /// is sent yet. Every command is checked first, so a bad argument anywhere sends nothing.
    pub fn batch(&mut self, commands: Vec<Command>, collect: Collect) -> Result<u64, ProtoError> {
        let mut scratch = Vec::new();
        for command in &commands {
            command.encode(&mut scratch)?;
            scratch.clear();
            if command.is_login_step() || matches!(command, Command::Stls) {
                return Err(ProtoError::Usage(
                    "login and STLS commands cannot be sent in a batch".into(),
                ));
            }
        }
        let id = self.fresh_id();
        self.batches.insert(
            id,
            Batch {
                commands,
                collect,
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
        self.closed.check()?;
        let answer = match &request {
            Request::Command { command, .. } => {
                command.is_sasl_answer() || matches!(command, Command::Raw { .. })
            }
            Request::Put { .. } | Request::Claim { .. } => true,
            _ => false,
        };
        if self.sasl_open && !answer {
            return Err(ProtoError::Usage(
                "an AUTH exchange is in progress: answer the server's challenge or cancel it with \"*\" first".into(),
            ));
        }
        if let Request::Command { command, .. } = &request {
            if command.is_sasl_answer() && !self.sasl_open {
                return Err(ProtoError::Usage(
                    "no AUTH exchange is in progress: a SASL response answers a server's challenge"
                        .into(),
                ));
            }
            if matches!(command, Command::Stls) {
                return Err(ProtoError::Usage(
                    "STLS is sent by the STARTTLS request, which also performs the TLS handshake"
                        .into(),
                ));
            }
        }
        if self.facts.state == State::Update {
            return Err(ProtoError::Usage(
                "QUIT was sent: the session is over; open a new connection".into(),
            ));
        }
        let phase = match &request {
            Request::Command { command, collect } => {
                let verb = Verb::of(command, self.sasl_open);
                Phase::Await(self.send(command, collect.expect(command), Owner::Caller, verb)?)
            }
            Request::Put { command } => {
                let verb = Verb::of(command, self.sasl_open);
                self.send(command, framed(command.framing()), Owner::Put, verb)?;
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
            Request::Capa => Phase::Await(self.send(&Command::Capa, Expect::Lines, Owner::Caller, Verb::Capa)?),
            Request::Messages => match self.capabilities().map(|c| c.pipelining) {
                None => Phase::MessagesCapa(self.send(&Command::Capa, Expect::Lines, Owner::Internal, Verb::Capa)?),
                Some(pipelining) => self.send_listing(pipelining)?,
            },
            Request::StreamOpen { command } => {
                if command.shape() != Shape::MultiLine || command.is_login_step() {
                    return Err(ProtoError::Usage("only a multi-line reply can be streamed".into()));
                }
                let verb = Verb::of(command, false);
                Phase::Await(self.send(command, Expect::Stream, Owner::Caller, verb)?)
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
                    None => Phase::BatchCapa(self.send(&Command::Capa, Expect::Lines, Owner::Internal, Verb::Capa)?),
                    Some(_) => Phase::Batch,
                }
            }
            Request::StartTls => {
                if self.facts.tls {
                    return Err(ProtoError::Usage("TLS is already active on this connection".into()));
                }
                Phase::Await(self.send(&Command::Stls, Expect::Status, Owner::Caller, Verb::Stls)?)
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
        let list = self.send(
            &Command::List(None),
            Expect::Lines,
            Owner::Caller,
            Verb::Other,
        )?;
        let uidl = if pipelining {
            Some(self.send(
                &Command::Uidl(None),
                Expect::Lines,
                Owner::Caller,
                Verb::Other,
            )?)
        } else {
            None
        };
        Ok(Phase::MessagesList { list, uidl })
    }

    /// Queues one command; CR, LF and NUL are refused before anything is queued.
    pub(super) fn send(
        &mut self,
        command: &Command,
        expect: Expect,
        owner: Owner,
        verb: Verb,
    ) -> Result<u64, ProtoError> {
        command.encode(&mut self.out)?;
        let in_auth_exchange = verb == Verb::Sasl;
        if let Some(trace) = &mut self.trace {
            trace.push((true, command.traced(in_auth_exchange)));
        }
        self.remember_secret(command.secret(in_auth_exchange));
        // How the server frames the reply, whatever the caller reads of it.
        let framing = match (expect, command.framing()) {
            (Expect::Status, shape) => framed(shape),
            (expect, _) => expect,
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
