//! The POP3 client session: the single owner of everything that is in flight on a connection.
//!
//! Commands go in and are queued, in wire order, with the kind of reply each expects (RFC 1939
//! replies are strictly FIFO, also when pipelined: RFC 2449 §6.6). Received bytes go in and are
//! decoded for the oldest outstanding command only. A reply is handed to the request that
//! asked for it and to nobody else: replies that belong to a batch still being iterated are
//! read ahead and kept for it, replies nobody waits for any more (an abandoned batch, the rest
//! of a stream left early, a `_putline` never read) are decoded and dropped. So whatever the
//! interleaving of calls, no call can receive another command's reply, and a message body is
//! never parsed as a status line.
//!
//! Drivers run a [`Job`] with [`Session::step`], which says what I/O it needs next (write the
//! outgoing bytes, read more, do the TLS handshake) until the job is done. No sockets, clocks,
//! TLS or Python here.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use super::capa::parse_capa;
pub use super::capa::Capabilities;
use super::command::{encode_line, redact, verb};
use super::response::{
    check_status, BodyDecoder, BodySink, BytesSink, Limits, LineReader, LinesSink, Segment,
};
use super::ProtoError;

/// Commands in flight at once in a pipelined batch (RFC 2449 PIPELINING). Commands are tiny, so
/// a window always fits in the socket buffers: writing it never blocks while the server is
/// blocked writing replies to us. It also bounds what a batch can hold read ahead.
pub const WINDOW: usize = 256;

/// The entry of the server's greeting, queued before anything is sent.
const GREETING: u64 = 0;

/// How many recent secrets the trace masks in replies.
const MAX_SECRETS: usize = 8;

/// Largest CAPA reply accepted: real ones are well under 1 KiB.
pub const MAX_CAPA: usize = 64 * 1024;

/// What kind of reply a command gets (RFC 1939 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// One status line.
    Status,
    /// A status line and, after `+OK`, a multi-line body kept as lines.
    Lines,
    /// The same, the body kept as one buffer with CRLF line ends.
    Bytes,
    /// A multi-line body handed out in chunks ([`Request::StreamNext`]).
    Stream,
}

/// RFC 1939 §3 session states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum State {
    #[default]
    Authorization,
    Transaction,
    /// QUIT was accepted: the server applies deletions and closes.
    Update,
}

/// One decoded reply. A `-ERR` is `Err(ProtoError::ServerError)`, delivered to its caller
/// like any reply; the session stays usable.
#[derive(Debug)]
pub enum Reply {
    Status(Vec<u8>),
    Lines {
        status: Vec<u8>,
        lines: LinesSink,
        octets: usize,
    },
    Bytes {
        status: Vec<u8>,
        data: Vec<u8>,
        octets: usize,
    },
}

pub type Outcome = Result<Reply, ProtoError>;

/// One message of the maildrop as `messages()` returns it: number, size, UIDL unique-id.
pub type MessageRow = (u64, u64, Option<Vec<u8>>);

/// What a caller asks of the session.
#[derive(Debug)]
pub enum Request {
    /// Send a command line and wait for its reply. `secret`: never traced in clear. Inside an
    /// AUTH exchange (RFC 5034) a line is a SASL response (traced masked), and only lines
    /// marked `secret` or `raw` (poplib's `_shortcmd`, for SASL by hand) may be sent there.
    Command {
        line: Vec<u8>,
        expect: Expect,
        secret: bool,
        raw: bool,
    },
    /// poplib's `_putline`: send only; the reply is claimed later with [`Request::Claim`].
    Put { line: Vec<u8> },
    /// poplib's `_getresp` / `_getlongresp`: the reply to the oldest command sent with `Put`
    /// (or the greeting), read as `expect` says.
    Claim { expect: Expect },
    /// poplib's `_getline`: one line as it arrived (line end included), of the oldest reply
    /// sent with `Put`, or of whatever comes next.
    RawLine,
    /// CAPA (RFC 2449); the session keeps what it learns.
    Capa,
    /// LIST and UIDL (pipelined when the server allows it), merged.
    Messages,
    /// Send a command whose body is then read with `StreamNext`; done with its status line.
    StreamOpen { line: Vec<u8> },
    /// The next chunk of about `max` bytes of stream `id`; `None` at its end.
    StreamNext { id: u64, max: usize },
    /// The next reply of batch `id`: `(index, outcome)`, `None` once all are read.
    BatchNext { id: u64 },
    /// STLS (RFC 2595) and, after `+OK`, the handshake the driver performs.
    StartTls,
}

/// What a finished job gives back.
#[derive(Debug)]
pub enum Done {
    Reply(Outcome),
    /// `Put` was written.
    Sent,
    Messages(Vec<MessageRow>),
    /// A stream opened: its id and status line.
    Stream(u64, Vec<u8>),
    Chunk(Option<Vec<u8>>),
    /// `RawLine`: the line with its line end.
    Line(Vec<u8>),
    Item(Option<(usize, Outcome)>),
    /// `Capa`: what the server advertised, as the session now keeps it.
    Capabilities(Capabilities),
}

/// What the server said that outlives its reply: the session is their only owner and replaces
/// this value whenever one of them changes, so a connection can publish it (an `Arc` clone)
/// for readers that must not wait for an operation in progress.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// The greeting's status line (RFC 1939 §4), once read.
    pub greeting: Option<Vec<u8>>,
    /// CAPA as last read (RFC 2449); `None` when not read since the last change that
    /// invalidates it (login, RFC 2449 §5; TLS, RFC 2595 §4); empty when the server has none.
    pub capabilities: Option<Capabilities>,
    /// TLS is up: implicit TLS, or STLS completed.
    pub tls: bool,
    pub state: State,
}

/// What the driver must do for the job to progress.
#[derive(Debug)]
pub enum Step {
    /// Write [`Session::outgoing`], then call [`Session::wrote`].
    Write,
    /// Read into [`Session::read_buf`], then call [`Session::received`].
    Read,
    /// Perform the TLS handshake now, then call [`Session::tls_started`].
    Handshake,
    Done(Done),
}

/// Who gets a reply once it is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    /// The request in progress (or about to resume).
    Caller,
    /// A batch: kept until its iterator asks.
    Batch(u64),
    /// A stream; its status goes to the opener.
    Stream(u64),
    /// Sent with `Put`; claimed with `Claim`, else dropped. The greeting starts this way.
    Put,
    /// Read line by line by its caller (poplib's `_getline`): its end is the caller's
    /// business, so a later request passes it without reading.
    Raw,
    /// CAPA the session asked for itself, or a reply nobody wants any more.
    Internal,
}

#[derive(Debug)]
struct Entry {
    id: u64,
    expect: Expect,
    owner: Owner,
    verb: Verb,
    /// How the server frames this reply, whatever its caller reads of it: a `Put` of RETR
    /// claimed as a status line still has a body, which stays this entry's until its end.
    framing: Expect,
    /// For an entry read line by line (`Owner::Raw`): its status line was read.
    raw_status_read: bool,
}

/// The verbs whose replies change session state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verb {
    Login,
    Auth,
    Sasl,
    Capa,
    Quit,
    Stls,
    Other,
}

fn classify(line: &[u8]) -> Verb {
    match verb(line).as_str() {
        "PASS" | "APOP" | "RPOP" => Verb::Login,
        // `AUTH` alone lists mechanisms (a multi-line reply); `AUTH mech` starts an exchange.
        "AUTH" if line.len() > 5 => Verb::Auth,
        "CAPA" => Verb::Capa,
        "QUIT" => Verb::Quit,
        "STLS" => Verb::Stls,
        _ => Verb::Other,
    }
}

/// The reply kind a `Put` command gets when nobody claims it.
fn inferred(line: &[u8]) -> Expect {
    let has_arg = line.contains(&b' ');
    match verb(line).as_str() {
        "RETR" | "TOP" | "CAPA" => Expect::Lines,
        "LIST" | "UIDL" | "LANG" | "AUTH" if !has_arg => Expect::Lines,
        _ => Expect::Status,
    }
}

/// The body of the reply at the front of the queue, once its `+OK` has been read.
#[derive(Debug)]
struct Body {
    status: Vec<u8>,
    decoder: BodyDecoder,
    sink: Sink,
    /// A stream's body superseded by a later request: its octets at that moment. If none
    /// follow before its end, nothing was lost and the stream simply ended.
    superseded_at: Option<usize>,
}

#[derive(Debug)]
enum Sink {
    Lines(LinesSink),
    Bytes(BytesSink),
    /// A stream's body, handed out chunk by chunk.
    Stream,
    /// Read and dropped.
    Discard,
}

impl BodySink for Sink {
    fn line(&mut self, content: &[u8]) -> Result<(), ProtoError> {
        match self {
            Sink::Lines(s) => s.line(content),
            Sink::Bytes(s) => s.line(content),
            Sink::Stream | Sink::Discard => Ok(()),
        }
    }

    fn line_cost(&self) -> usize {
        match self {
            Sink::Lines(s) => s.line_cost(),
            _ => 0,
        }
    }
}

#[derive(Debug)]
struct Batch {
    lines: Vec<Vec<u8>>,
    expect: Expect,
    sent: usize,
    /// Index of the next reply to hand out.
    next: usize,
    /// Entry ids of the commands sent and not yet handed out, in order.
    in_flight: VecDeque<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamState {
    Open,
    /// A later request came first: the rest of the body was dropped.
    Superseded,
    /// The last chunk was handed out; the next request for one gets the end.
    Ended,
}

/// Progress of a multi-step request.
#[derive(Debug)]
enum Phase {
    /// Waiting for the reply of entry `id`.
    Await(u64),
    /// `Messages`: CAPA first, since pipelining depends on it.
    MessagesCapa(u64),
    MessagesList {
        list: u64,
        uidl: Option<u64>,
    },
    MessagesUidl {
        rows: Vec<(u64, u64)>,
        uidl: u64,
    },
    /// `BatchNext` waiting for the CAPA that decides the window.
    BatchCapa(u64),
    Batch,
    /// `StartTls`: after the handshake, the `+OK` goes to the caller.
    TlsHandshake(Vec<u8>),
    /// `Put`: done once the line is written.
    Flush,
    /// `RawLine`: the entry whose lines are read one by one.
    RawLine(u64),
    Stream(u64),
}

/// A request in progress; give it to [`Session::step`] until it is done.
#[derive(Debug)]
pub struct Job {
    request: Request,
    phase: Phase,
    /// The job ended with its reply claimed (used to forget the caller's entry on drop).
    finished: bool,
    /// `StreamNext` on a stream whose last chunk was already handed out.
    ended_stream: bool,
}

#[derive(Debug)]
pub struct Session {
    reader: LineReader,
    limits: Limits,
    out: Vec<u8>,
    queue: VecDeque<Entry>,
    /// The front entry's body, once its status line is read.
    body: Option<Body>,
    /// Replies read ahead for a batch, by entry id.
    ready: HashMap<u64, Outcome>,
    batches: HashMap<u64, Batch>,
    /// Streams whose iterators may still ask for chunks.
    streams: HashMap<u64, StreamState>,
    next_id: u64,
    facts: Arc<Facts>,
    /// An AUTH exchange awaits the client's next SASL response.
    sasl_open: bool,
    /// A fatal error: the byte stream can no longer be trusted.
    broken: Option<ProtoError>,
    /// Lines sent and status lines received, secrets masked, when tracing is on.
    trace: Option<Vec<(bool, Vec<u8>)>>,
    /// Secrets recently sent, masked wherever a traced reply repeats them.
    secrets: Vec<Vec<u8>>,
}

impl Session {
    /// A session waiting for the server's greeting (claimed with `Claim { Status }`).
    pub fn new(limits: Limits) -> Self {
        let mut session = Session {
            reader: LineReader::new(),
            limits,
            out: Vec::new(),
            queue: VecDeque::new(),
            body: None,
            ready: HashMap::new(),
            batches: HashMap::new(),
            streams: HashMap::new(),
            next_id: 1,
            facts: Arc::default(),
            sasl_open: false,
            broken: None,
            trace: None,
            secrets: Vec::new(),
        };
        session.queue.push_back(Entry {
            id: GREETING,
            expect: Expect::Status,
            owner: Owner::Put,
            verb: Verb::Other,
            framing: Expect::Status,
            raw_status_read: false,
        });
        session
    }

    /// A session on a connection whose TLS is up from the start (implicit TLS, port 995).
    pub fn new_tls(limits: Limits) -> Self {
        let mut session = Session::new(limits);
        session.facts_mut().tls = true;
        session
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    pub fn state(&self) -> State {
        self.facts.state
    }

    pub fn tls(&self) -> bool {
        self.facts.tls
    }

    pub fn capabilities(&self) -> Option<&Capabilities> {
        self.facts.capabilities.as_ref()
    }

    /// The greeting, capabilities, TLS and RFC 1939 state, as one shareable value.
    pub fn facts(&self) -> &Arc<Facts> {
        &self.facts
    }

    fn facts_mut(&mut self) -> &mut Facts {
        Arc::make_mut(&mut self.facts)
    }

    fn set_capabilities(&mut self, caps: Option<Capabilities>) {
        if self.facts.capabilities.is_some() || caps.is_some() {
            self.facts_mut().capabilities = caps;
        }
    }

    /// Turns recording of [`Session::take_trace`] on or off.
    pub fn set_trace(&mut self, on: bool) {
        if on != self.trace.is_some() {
            self.trace = on.then(Vec::new);
        }
    }

    /// `(sent, line)` pairs since the last call: command lines (secrets masked) and status lines.
    pub fn take_trace(&mut self) -> Vec<(bool, Vec<u8>)> {
        self.trace.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// The error that broke the session, if any.
    pub fn broken(&self) -> Option<&ProtoError> {
        self.broken.as_ref()
    }

    /// Marks the session unusable (the driver's I/O failed): later requests get `err`.
    pub fn break_with(&mut self, err: ProtoError) {
        self.broken.get_or_insert(err);
    }

    // -- I/O surface for drivers ----------------------------------------------------------

    pub fn outgoing(&self) -> &[u8] {
        &self.out
    }

    pub fn wrote(&mut self) {
        self.out.clear();
    }

    pub fn read_buf(&mut self) -> &mut [u8] {
        self.reader.read_buf()
    }

    /// `n` bytes were read into `read_buf`; `0` means the server closed the connection.
    pub fn received(&mut self, n: usize) -> Result<(), ProtoError> {
        if n == 0 {
            let err = ProtoError::Closed;
            self.broken = Some(err.clone());
            return Err(err);
        }
        self.reader.commit(n);
        Ok(())
    }

    /// Full segments of the body `job` is waiting for, handed over before the body ends
    /// ([`LinesSink::take_full`]); the final reply holds the rest. Empty for anything else.
    pub fn take_segments(&mut self, job: &Job) -> Vec<Segment> {
        let Phase::Await(id) = job.phase else {
            return Vec::new();
        };
        if self.queue.front().map(|e| e.id) != Some(id) {
            return Vec::new();
        }
        match &mut self.body {
            Some(Body {
                sink: Sink::Lines(lines),
                ..
            }) => lines.take_full(),
            _ => Vec::new(),
        }
    }

    /// The handshake asked for by [`Step::Handshake`] succeeded.
    pub fn tls_started(&mut self) {
        self.facts_mut().tls = true;
        // RFC 2595 §4: what was advertised before TLS cannot be trusted; ask again.
        self.set_capabilities(None);
    }

    // -- handles --------------------------------------------------------------------------

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
    fn forget(&mut self, id: u64) {
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

    /// What a command line carries that must never be traced, not even echoed back by the
    /// server: a PASS argument, an APOP digest, an AUTH initial response, a SASL response.
    fn remember_secret(&mut self, line: &[u8], verb: Verb) {
        let secret = match verb {
            Verb::Sasl => line,
            Verb::Login | Verb::Auth => {
                let skip = if verb == Verb::Login
                    && !line.starts_with(b"APOP")
                    && !line.starts_with(b"apop")
                {
                    1
                } else {
                    2
                };
                let mut words = line.splitn(skip + 1, |b| *b == b' ');
                match words.nth(skip) {
                    Some(rest) => rest,
                    None => return,
                }
            }
            _ => return,
        };
        // Short strings ("*", "=") would mask ordinary text; a few recent secrets suffice.
        if secret.len() >= 4 {
            if self.secrets.len() == MAX_SECRETS {
                self.secrets.remove(0);
            }
            self.secrets.push(secret.to_vec());
        }
    }

    /// A received line fit for the trace: secrets the server echoes back are masked.
    fn masked(&self, line: &[u8]) -> Vec<u8> {
        let mut out = line.to_vec();
        for secret in &self.secrets {
            while let Some(at) = memchr::memmem::find(&out, secret) {
                out.splice(at..at + secret.len(), b"****".iter().copied());
            }
        }
        out
    }

    /// A secret line outside an AUTH exchange is traced with only its verb.
    fn mask_last_trace(&mut self, line: &[u8]) {
        if let Some((_, traced)) = self.trace.as_mut().and_then(|t| t.last_mut()) {
            if verb(line) != "AUTH" {
                *traced = [verb(line).as_bytes(), b" ****"].concat();
            }
        }
    }

    fn fresh_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    // -- requests -------------------------------------------------------------------------

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
            Request::RawLine => {
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

    fn send_listing(&mut self, pipelining: bool) -> Result<Phase, ProtoError> {
        let list = self.send(b"LIST", Expect::Lines, Owner::Caller, Verb::Other)?;
        let uidl = if pipelining {
            Some(self.send(b"UIDL", Expect::Lines, Owner::Caller, Verb::Other)?)
        } else {
            None
        };
        Ok(Phase::MessagesList { list, uidl })
    }

    /// Queues one command line; CR, LF and NUL are refused before anything is queued.
    fn send(
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

    /// Advances `job`: the I/O it needs next, or its result. A fatal error breaks the session
    /// (every later request fails with it); a `-ERR` is a normal result.
    pub fn step(&mut self, job: &mut Job) -> Result<Step, ProtoError> {
        if let Some(err) = &self.broken {
            return Err(err.clone());
        }
        let result = self.step_inner(job);
        if let Err(err) = &result {
            self.broken = Some(err.clone());
        }
        result
    }

    fn step_inner(&mut self, job: &mut Job) -> Result<Step, ProtoError> {
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
                        let limit = self.limits.max_status_line;
                        match self.reader.next_raw_line(limit, "status")? {
                            Some(raw) => {
                                let line = self.reader.raw(raw).to_vec();
                                self.raw_line_read(&line);
                                return Ok(self.finish(job, Done::Line(line)));
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
                                None => {
                                    self.send(b"UIDL", Expect::Lines, Owner::Caller, Verb::Other)?
                                }
                            };
                            job.phase = Phase::MessagesUidl { rows, uidl };
                            true
                        }
                    }
                }
                Phase::MessagesUidl { rows, uidl } => {
                    let uidl = *uidl;
                    match self.reply_for(uidl)? {
                        None => false,
                        Some(outcome) => {
                            // A server without UIDL answers -ERR: sizes without unique-ids.
                            let uids = match outcome.and_then(|reply| parse_uidl(&reply)) {
                                Ok(uids) => uids,
                                Err(ProtoError::ServerError(_)) => HashMap::new(),
                                Err(err) => return Ok(self.finish(job, Done::Reply(Err(err)))),
                            };
                            let mut uids = uids;
                            let rows = std::mem::take(rows)
                                .into_iter()
                                .map(|(n, size)| (n, size, uids.remove(&n)))
                                .collect();
                            return Ok(self.finish(job, Done::Messages(rows)));
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

    fn finish(&mut self, job: &mut Job, done: Done) -> Step {
        job.finished = true;
        Step::Done(done)
    }

    /// The reply for a plain request has arrived: apply its effects on the session.
    fn complete(&mut self, job: &mut Job, outcome: Outcome) -> Step {
        match (&job.request, outcome) {
            (Request::StartTls, Ok(Reply::Status(status))) => {
                // Bytes after the STLS +OK were sent in plaintext before TLS: an injection.
                let extra = self.reader.buffered().len();
                if extra > 0 {
                    let err = ProtoError::StlsInjection(extra);
                    self.broken = Some(err.clone());
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

    /// The reply of entry `id` if it is complete, reading ahead (and keeping or dropping)
    /// the replies in front of it.
    fn reply_for(&mut self, id: u64) -> Result<Option<Outcome>, ProtoError> {
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
    fn raw_line_read(&mut self, raw: &[u8]) {
        let Some(entry) = self.queue.front_mut() else {
            return;
        };
        let content = super::response::strip_line_end(raw);
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
    fn stream_gone(&mut self, id: u64, superseded_at: Option<usize>, outcome: &Outcome) {
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
    fn decode_front(&mut self) -> Result<Option<Outcome>, ProtoError> {
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
            let line = self.reader.content(raw).to_vec();
            if id == GREETING {
                self.facts_mut().greeting = Some(line.clone());
            }
            if self.trace.is_some() {
                let shown = self.masked(&line);
                if let Some(trace) = &mut self.trace {
                    trace.push((false, shown));
                }
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
    fn apply(&mut self, verb: Verb, line: &[u8], ok: bool) {
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

    fn logged_in(&mut self) {
        self.facts_mut().state = State::Transaction;
        // RFC 2449 §5: capabilities may change after authentication.
        self.set_capabilities(None);
    }

    /// One step of a batch: send more of it, hand out its next reply, or wait.
    fn batch_step(&mut self, id: u64) -> Result<BatchStep, ProtoError> {
        let window = if self.capabilities().is_some_and(|c| c.pipelining) {
            WINDOW
        } else {
            1
        };
        let batch = self.batches.get_mut(&id).expect("batch exists");
        if batch.next == batch.lines.len() {
            self.batches.remove(&id);
            return Ok(BatchStep::Item(None));
        }
        // Refill once half the window has been answered, so writes stay few and large.
        if batch.sent < batch.lines.len() && batch.in_flight.len() < window / 2 + 1 {
            let end = batch
                .lines
                .len()
                .min(batch.sent + window - batch.in_flight.len());
            let lines: Vec<Vec<u8>> = batch.lines[batch.sent..end].to_vec();
            let expect = batch.expect;
            batch.sent = end;
            for line in lines {
                let entry = self.send(&line, expect, Owner::Batch(id), classify(&line))?;
                self.batches
                    .get_mut(&id)
                    .expect("batch exists")
                    .in_flight
                    .push_back(entry);
            }
            return Ok(BatchStep::Sent);
        }
        let next_entry = *batch.in_flight.front().expect("a batch reply is in flight");
        let Some(outcome) = self.reply_for(next_entry)? else {
            return Ok(BatchStep::Wait);
        };
        let batch = self.batches.get_mut(&id).expect("batch exists");
        batch.in_flight.pop_front();
        let index = batch.next;
        batch.next += 1;
        Ok(BatchStep::Item(Some((index, outcome))))
    }

    /// The next chunk of stream `id`: `Some(None)` at its end, `None` if more data is needed.
    fn stream_chunk(&mut self, id: u64, max: usize) -> Result<Option<Option<Vec<u8>>>, ProtoError> {
        // Replies in front of the stream (a batch's, read ahead) come first.
        while self.queue.front().is_some_and(|e| e.id != id) {
            let front = self.queue.front().expect("front exists").id;
            if self.reply_for(front)?.is_none() {
                return Ok(None);
            }
        }
        let limits = Limits {
            max_response_size: usize::MAX,
            ..self.limits
        };
        let body = self
            .body
            .as_mut()
            .expect("an open stream has its body in front");
        let mut sink = BytesSink::chunked(max);
        let done = body.decoder.advance(&mut self.reader, &limits, &mut sink)?;
        if done.is_some() {
            self.queue.pop_front();
            self.body = None;
            if sink.data.is_empty() {
                self.streams.remove(&id);
                return Ok(Some(None));
            }
            self.streams.insert(id, StreamState::Ended);
            return Ok(Some(Some(sink.data)));
        }
        if sink.data.is_empty() {
            return Ok(None);
        }
        Ok(Some(Some(sink.data)))
    }
}

enum BatchStep {
    Sent,
    Wait,
    Item(Option<(usize, Outcome)>),
}

fn malformed(what: &str, line: &[u8]) -> ProtoError {
    let shown: String = String::from_utf8_lossy(&line[..line.len().min(100)])
        .escape_debug()
        .collect();
    ProtoError::Malformed(format!("malformed {what} line: \"{shown}\""))
}

/// LIST's `n size [text]` lines (RFC 1939 §5 allows text after the size).
fn parse_listing(reply: &Reply) -> Result<Vec<(u64, u64)>, ProtoError> {
    let Reply::Lines { lines, .. } = reply else {
        return Ok(Vec::new());
    };
    lines
        .lines()
        .map(|line| {
            let mut words = line.split(|b| *b == b' ').filter(|w| !w.is_empty());
            let number = words.next().and_then(parse_u64);
            let size = words.next().and_then(parse_u64);
            number.zip(size).ok_or_else(|| malformed("LIST", line))
        })
        .collect()
}

/// UIDL's `n unique-id` lines (RFC 1939 §7), unique-ids kept as exact bytes.
fn parse_uidl(reply: &Reply) -> Result<HashMap<u64, Vec<u8>>, ProtoError> {
    let Reply::Lines { lines, .. } = reply else {
        return Ok(HashMap::new());
    };
    lines
        .lines()
        .map(|line| {
            let mut words = line.split(|b| *b == b' ').filter(|w| !w.is_empty());
            let number = words.next().and_then(parse_u64);
            let uid = words.next().map(<[u8]>::to_vec);
            number.zip(uid).ok_or_else(|| malformed("UIDL", line))
        })
        .collect()
}

fn parse_u64(word: &[u8]) -> Option<u64> {
    std::str::from_utf8(word)
        .ok()
        .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse().ok())
}

#[cfg(test)]
mod tests;
