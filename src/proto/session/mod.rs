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
//!
//! This file holds the types and the session's state with its driver-facing surface; the rest
//! by seam: `admission` (what a request may do, queueing what it sends), `step` (the step
//! loop), `routing` (decoding the front reply, handing it to its owner, state changes),
//! `batches`, `streams`, `listings` (LIST/UIDL for `messages()`), `trace`, `closed` (the
//! connection's error/closed state and the one policy for errors). What a request sends is a
//! typed [`Command`] (`super::command`).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

pub use self::closed::{Closed, ClosedCell};
use super::capa::parse_capa;
pub use super::capa::Capabilities;
pub use super::command::{Command, Secret, Shape};
use super::response::{
    check_status, BodyDecoder, BodySink, BytesSink, Limits, LineReader, LinesSink, Segment,
};
use super::ProtoError;

mod admission;
mod batches;
mod closed;
mod listings;
mod routing;
mod step;
mod streams;
mod trace;

/// Commands in flight at once in a pipelined batch (RFC 2449 PIPELINING). Commands are tiny, so
/// a window always fits in the socket buffers: writing it never blocks while the server is
/// blocked writing replies to us. It also bounds what a batch can hold read ahead.
pub const WINDOW: usize = 256;

/// The entry of the server's greeting, queued before anything is sent.
const GREETING: u64 = 0;

/// How many recent secrets the session masks in the status lines it reads.
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

/// How a multi-line body is handed to its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Collect {
    /// As lines, without their line ends.
    Lines,
    /// As one buffer with CRLF line ends.
    Bytes,
}

impl Collect {
    /// What an entry for `command` expects.
    fn expect(self, command: &Command) -> Expect {
        match (command.shape(), self) {
            (Shape::Status, _) => Expect::Status,
            (Shape::MultiLine, Collect::Lines) => Expect::Lines,
            (Shape::MultiLine, Collect::Bytes) => Expect::Bytes,
        }
    }
}

/// What a caller asks of the session.
#[derive(Debug)]
pub enum Request {
    /// Send `command` and wait for its reply, its body (if any) kept as `collect` says. Inside
    /// an AUTH exchange (RFC 5034) only a SASL answer or a line written by hand (poplib's
    /// `_shortcmd`, for SASL by hand) may be sent.
    Command { command: Command, collect: Collect },
    /// poplib's `_putline`: send only; the reply is claimed later with [`Request::Claim`].
    Put { command: Command },
    /// poplib's `_getresp` / `_getlongresp`: the reply to the oldest command sent with `Put`
    /// (or the greeting), read as `expect` says.
    Claim { expect: Expect },
    /// poplib's `_getline`: one line as it arrived (line end included), of the oldest reply
    /// sent with `Put`, or of whatever comes next. With `max`, io's `readline(max)`: at most
    /// `max` bytes of it, the next `RawLine` going on from there.
    RawLine { max: Option<usize> },
    /// CAPA (RFC 2449); the session keeps what it learns.
    Capa,
    /// LIST and UIDL (pipelined when the server allows it), merged.
    Messages,
    /// Send a command whose body is then read with `StreamNext`; done with its status line.
    StreamOpen { command: Command },
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
    /// `RawLine`: the line with its line end (or the part of it asked for).
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

impl Verb {
    /// What `command`'s reply may change; inside an AUTH exchange everything sent is SASL.
    fn of(command: &Command, in_auth_exchange: bool) -> Verb {
        if in_auth_exchange {
            return Verb::Sasl;
        }
        match command {
            Command::Pass(_) | Command::Apop { .. } | Command::Rpop(_) => Verb::Login,
            Command::Auth { .. } => Verb::Auth,
            Command::Capa => Verb::Capa,
            Command::Quit => Verb::Quit,
            Command::Stls => Verb::Stls,
            Command::Raw { line, .. } => match super::command::verb(line).as_str() {
                "PASS" | "APOP" | "RPOP" => Verb::Login,
                // `AUTH` alone lists mechanisms (a multi-line reply); `AUTH mech` starts one.
                "AUTH" if line.len() > 5 => Verb::Auth,
                "CAPA" => Verb::Capa,
                "QUIT" => Verb::Quit,
                "STLS" => Verb::Stls,
                _ => Verb::Other,
            },
            _ => Verb::Other,
        }
    }
}

/// The expectation of an entry framed as `shape` (a `Put` nobody claimed yet).
fn framed(shape: Shape) -> Expect {
    match shape {
        Shape::Status => Expect::Status,
        Shape::MultiLine => Expect::Lines,
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
    commands: Vec<Command>,
    collect: Collect,
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
        pairing: listings::Pairing,
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

impl Job {
    /// The job sends a login step ([`Command::is_login_step`]): a bare `-ERR` to it means
    /// the credentials were refused.
    pub fn is_login_step(&self) -> bool {
        matches!(&self.request, Request::Command { command, .. } if command.is_login_step())
    }
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
    /// Why the connection can no longer be used, shared with the connection ([`closed`]).
    closed: ClosedCell,
    /// Lines sent and status lines received, secrets masked, when tracing is on.
    trace: Option<Vec<(bool, Vec<u8>)>>,
    /// Secrets recently sent, masked wherever a status line repeats them.
    secrets: Vec<Secret>,
}

enum BatchStep {
    Sent,
    Wait,
    Item(Option<(usize, Outcome)>),
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
            closed: ClosedCell::default(),
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

    /// Why the connection can no longer be used; `None` while it can.
    pub fn closed(&self) -> Option<Closed> {
        self.closed.get()
    }

    /// The cell holding [`closed`](Self::closed), for the connection to set what happens
    /// outside the session (close, cancel, a driver's failure) and to read it at any time.
    pub fn closed_cell(&self) -> &ClosedCell {
        &self.closed
    }

    /// Closes the session for `why` (the first reason stays); every later request fails.
    pub fn close(&self, why: Closed) {
        self.closed.close(why);
    }

    /// Applies the one policy ([`ProtoError::is_fatal`]) to an error a request ended with:
    /// a fatal one closes the connection with it as the reason.
    pub fn fail(&self, err: &ProtoError) {
        if err.is_fatal() {
            self.close(Closed::Failed(err.to_string()));
        }
    }

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
            self.fail(&err);
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

    /// `messages()` rows already complete while UIDL is still arriving, so a driver can convert
    /// them while the rest comes; the final [`Done::Messages`] holds the others. Empty for any
    /// other job.
    pub fn take_rows(&mut self, job: &mut Job) -> Vec<MessageRow> {
        let Phase::MessagesUidl { pairing, uidl } = &mut job.phase else {
            return Vec::new();
        };
        if self.queue.front().map(|e| e.id) != Some(*uidl) {
            return Vec::new();
        }
        if let Some(Body {
            sink: Sink::Lines(lines),
            ..
        }) = &mut self.body
        {
            for segment in lines.take_full() {
                for line in segment.lines() {
                    if pairing.failed.is_some() {
                        break;
                    }
                    pairing.failed = pairing.line(line).err();
                }
            }
        }
        pairing.take_ready()
    }

    /// The handshake asked for by [`Step::Handshake`] succeeded.
    pub fn tls_started(&mut self) {
        self.facts_mut().tls = true;
        // RFC 2595 §4: what was advertised before TLS cannot be trusted; ask again.
        self.set_capabilities(None);
    }
}

#[cfg(test)]
mod tests;
