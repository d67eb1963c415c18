//! Session tests: scripted server bytes, no sockets.
//!
//! A tiny driver ([`Wire`]) runs each job the way the transports do (write what the session
//! wants written, read when it asks to read) against a scripted server: the bytes the server
//! "sent" wait in `pending` and are handed to the session in pieces of a chosen size, and
//! everything the session wrote is collected, so a test can check what was on the wire before
//! each reply was fed. Most scenarios run with several splits of the server's bytes (whole,
//! byte by byte, pseudo-random pieces from fixed seeds) and must give the same results.

use super::*;
use crate::proto::response::LINE_COST;

// ---------------------------------------------------------------------------------------------
// The driver.

/// How the server's bytes are cut into reads.
#[derive(Debug, Clone, Copy)]
enum Split {
    /// Everything pending in one read (up to the read buffer's size).
    Whole,
    /// One byte per read.
    Bytewise,
    /// Pieces of 1..=17 bytes from a xorshift generator with this seed.
    Random(u64),
}

const SPLITS: [Split; 5] = [
    Split::Whole,
    Split::Bytewise,
    Split::Random(1),
    Split::Random(7),
    Split::Random(0x5eed),
];

/// Where a job stopped.
#[derive(Debug)]
enum Pumped {
    Done(Done),
    /// The session wants to read but the script has nothing more to send.
    Starved,
    /// The session asks for the TLS handshake.
    Handshake,
    Failed(ProtoError),
}

type Responder = Box<dyn FnMut(&[u8]) -> Vec<u8>>;

/// The scripted server end of the connection.
struct Wire {
    split: Split,
    rng: u64,
    /// Server bytes not read by the client yet.
    pending: VecDeque<u8>,
    /// What the client wrote since the last `take_written`.
    written: Vec<u8>,
    /// Every line the client wrote, in order (for the responder and for counting).
    lines: Vec<Vec<u8>>,
    /// Written bytes not yet cut into lines.
    partial: Vec<u8>,
    /// Answers each command line as soon as it is written, if set.
    responder: Option<Responder>,
    /// Number of `Step::Write`s and of reads.
    writes: usize,
    reads: usize,
}

impl Wire {
    fn new(split: Split) -> Self {
        let rng = match split {
            Split::Random(seed) => seed | 1,
            _ => 1,
        };
        Wire {
            split,
            rng,
            pending: VecDeque::new(),
            written: Vec::new(),
            lines: Vec::new(),
            partial: Vec::new(),
            responder: None,
            writes: 0,
            reads: 0,
        }
    }

    /// A server that answers every command line with `respond(line)` as soon as it arrives.
    fn answering(split: Split, respond: impl FnMut(&[u8]) -> Vec<u8> + 'static) -> Self {
        let mut wire = Wire::new(split);
        wire.responder = Some(Box::new(respond));
        wire
    }

    /// The server sends `bytes` (queued until the session reads them).
    fn serve(&mut self, bytes: &[u8]) {
        self.pending.extend(bytes);
    }

    /// What the client wrote since the last call.
    fn take_written(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.written)
    }

    fn piece(&mut self) -> usize {
        match self.split {
            Split::Whole => usize::MAX,
            Split::Bytewise => 1,
            Split::Random(_) => {
                self.rng ^= self.rng << 13;
                self.rng ^= self.rng >> 7;
                self.rng ^= self.rng << 17;
                1 + (self.rng % 17) as usize
            }
        }
    }

    /// Runs `job` until it is done, fails, starves or asks for a handshake.
    fn pump(&mut self, session: &mut Session, job: &mut Job) -> Pumped {
        loop {
            match session.step(job) {
                Err(err) => return Pumped::Failed(err),
                Ok(Step::Done(done)) => return Pumped::Done(done),
                Ok(Step::Handshake) => return Pumped::Handshake,
                Ok(Step::Write) => {
                    let out = session.outgoing().to_vec();
                    assert!(!out.is_empty(), "Step::Write with nothing to write");
                    session.wrote();
                    self.writes += 1;
                    self.written.extend_from_slice(&out);
                    self.partial.extend_from_slice(&out);
                    while let Some(end) = self.partial.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = self.partial.drain(..=end).collect();
                        let line = line
                            .strip_suffix(b"\r\n")
                            .expect("commands end in CRLF")
                            .to_vec();
                        if let Some(respond) = &mut self.responder {
                            let reply = respond(&line);
                            self.pending.extend(reply);
                        }
                        self.lines.push(line);
                    }
                }
                Ok(Step::Read) => {
                    if self.pending.is_empty() {
                        return Pumped::Starved;
                    }
                    let want = self.piece().min(self.pending.len());
                    let buf = session.read_buf();
                    assert!(!buf.is_empty(), "read_buf offers no space");
                    let n = want.min(buf.len());
                    for (slot, byte) in buf.iter_mut().zip(self.pending.drain(..n)) {
                        *slot = byte;
                    }
                    self.reads += 1;
                    session.received(n).expect("a non-empty read is accepted");
                }
            }
        }
    }

    /// Starts `request` and runs it to its end; a refused request or a fatal error is `Err`.
    fn run(&mut self, session: &mut Session, request: Request) -> Result<Done, ProtoError> {
        let mut job = session.start(request)?;
        match self.pump(session, &mut job) {
            Pumped::Done(done) => Ok(done),
            Pumped::Failed(err) => Err(err),
            other => panic!("the job stopped early: {other:?}"),
        }
    }

    /// Runs `request`, which must succeed with a reply.
    fn reply(&mut self, session: &mut Session, request: Request) -> R {
        match self.run(session, request) {
            Ok(Done::Reply(outcome)) => r(outcome),
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    fn command(&mut self, session: &mut Session, line: &[u8], expect: Expect) -> R {
        self.reply(session, cmd(line, expect))
    }

    /// Runs CAPA, which must succeed: what the session learned.
    fn capa(&mut self, session: &mut Session) -> Capabilities {
        match self.run(session, Request::Capa) {
            Ok(Done::Capabilities(caps)) => caps,
            other => panic!("expected capabilities, got {other:?}"),
        }
    }
}

/// The typed command a test's line stands for (a line written by hand when it is none of
/// them, or when `expect` reads it in another shape).
fn typed(line: &[u8], expect: Expect) -> Command {
    let text = std::str::from_utf8(line).expect("test lines are text");
    let mut words = text.splitn(2, ' ');
    let verb = words.next().unwrap_or_default();
    let arg = words.next().map(|a| a.as_bytes().to_vec());
    let command = match (verb, arg) {
        ("USER", Some(a)) => Command::User(a),
        ("PASS", Some(a)) => Command::Pass(Secret::new(a)),
        ("STAT", None) => Command::Stat,
        ("LIST", a) => Command::List(a),
        ("RETR", Some(a)) => Command::Retr(a),
        ("DELE", Some(a)) => Command::Dele(a),
        ("NOOP", None) => Command::Noop,
        ("RSET", None) => Command::Rset,
        ("QUIT", None) => Command::Quit,
        ("UIDL", a) => Command::Uidl(a),
        ("CAPA", None) => Command::Capa,
        ("UTF8", None) => Command::Utf8,
        ("AUTH", Some(a)) => {
            let mut parts = a.splitn(2, |b| *b == b' ');
            let mechanism = parts.next().unwrap_or_default().to_vec();
            let initial = parts.next().map(Secret::new);
            Command::Auth { mechanism, initial }
        }
        _ => return Command::raw(line.to_vec(), Some(shape_of(expect))),
    };
    if command.shape() == shape_of(expect) {
        command
    } else {
        Command::raw(line.to_vec(), Some(shape_of(expect)))
    }
}

fn shape_of(expect: Expect) -> Shape {
    match expect {
        Expect::Status => Shape::Status,
        _ => Shape::MultiLine,
    }
}

fn collect_of(expect: Expect) -> Collect {
    match expect {
        Expect::Bytes => Collect::Bytes,
        _ => Collect::Lines,
    }
}

fn cmd(line: &[u8], expect: Expect) -> Request {
    Request::Command {
        command: typed(line, expect),
        collect: collect_of(expect),
    }
}

/// poplib's `_shortcmd`: a line sent as is (SASL by hand).
fn raw(line: &[u8]) -> Request {
    Request::Command {
        command: Command::raw(line.to_vec(), Some(Shape::Status)),
        collect: Collect::Lines,
    }
}

/// A command carrying a secret: AUTH or PASS, else a SASL response (RFC 5034 §4; `*`
/// cancels).
fn secret(line: &[u8]) -> Request {
    let command = match line {
        b"*" => Command::SaslCancel,
        _ if matches!(crate::proto::command::verb(line).as_str(), "AUTH" | "PASS") => {
            typed(line, Expect::Status)
        }
        _ => Command::SaslResponse(Secret::new(line)),
    };
    Request::Command {
        command,
        collect: Collect::Lines,
    }
}

/// poplib's `_putline`.
fn put(line: &[u8]) -> Request {
    Request::Put {
        command: Command::raw(line.to_vec(), None),
    }
}

impl Session {
    /// A batch of `lines`, read as `expect` says.
    fn batch_lines(&mut self, lines: Vec<Vec<u8>>, expect: Expect) -> Result<u64, ProtoError> {
        let commands = lines.iter().map(|line| typed(line, expect)).collect();
        self.batch(commands, collect_of(expect))
    }
}

/// A reply in comparable form.
#[derive(Debug, PartialEq)]
enum R {
    Status(Vec<u8>),
    Lines(Vec<u8>, Vec<Vec<u8>>, usize),
    Bytes(Vec<u8>, Vec<u8>, usize),
    Err(ProtoError),
}

fn r(outcome: Outcome) -> R {
    match outcome {
        Ok(Reply::Status(s)) => R::Status(s),
        Ok(Reply::Lines {
            status,
            lines,
            octets,
        }) => R::Lines(status, lines.lines().map(<[u8]>::to_vec).collect(), octets),
        Ok(Reply::Bytes {
            status,
            data,
            octets,
        }) => R::Bytes(status, data, octets),
        Err(e) => R::Err(e),
    }
}

fn status(s: &[u8]) -> R {
    R::Status(s.to_vec())
}

fn server_err(s: &[u8]) -> R {
    R::Err(ProtoError::ServerError(s.to_vec()))
}

/// The `Lines` reply a server sending `lines` (with CRLF) gives.
fn lines_of(status: &[u8], lines: &[&[u8]]) -> R {
    R::Lines(
        status.to_vec(),
        lines.iter().map(|l| l.to_vec()).collect(),
        octets(lines),
    )
}

fn bytes_of(status: &[u8], lines: &[&[u8]]) -> R {
    R::Bytes(status.to_vec(), crlf(lines), octets(lines))
}

fn crlf(lines: &[&[u8]]) -> Vec<u8> {
    lines.iter().flat_map(|l| [*l, b"\r\n"].concat()).collect()
}

fn octets(lines: &[&[u8]]) -> usize {
    lines.iter().map(|l| l.len() + 2).sum()
}

/// A multi-line reply on the wire: status, dot-stuffed lines, terminator.
fn multi(status: &[u8], lines: &[&[u8]]) -> Vec<u8> {
    let mut wire = [status, b"\r\n"].concat();
    for line in lines {
        if line.starts_with(b".") {
            wire.push(b'.');
        }
        wire.extend_from_slice(line);
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b".\r\n");
    wire
}

fn line(s: &[u8]) -> Vec<u8> {
    [s, b"\r\n"].concat()
}

const GREETING: &[u8] = b"+OK POP3 ready <1896.697170952@dbc.mtview.ca.us>";
const CAPA_PIPELINING: &[&[u8]] = &[b"TOP", b"UIDL", b"PIPELINING", b"SASL PLAIN login", b"STLS"];
const CAPA_PLAIN: &[&[u8]] = &[b"TOP", b"UIDL", b"USER"];

/// A session whose greeting has been claimed.
fn greeted(wire: &mut Wire) -> Session {
    greeted_with(wire, Limits::default())
}

/// A greeted session whose limits are set to `limits` after the greeting.
fn greeted_with(wire: &mut Wire, limits: Limits) -> Session {
    let mut session = Session::new(Limits::default());
    wire.serve(&line(GREETING));
    assert_eq!(
        wire.reply(
            &mut session,
            Request::Claim {
                expect: Expect::Status
            }
        ),
        status(GREETING)
    );
    assert_eq!(wire.take_written(), b"");
    session.set_limits(limits);
    assert_eq!(session.limits(), limits);
    session
}

/// A greeted session that has learned the server's capabilities.
fn with_caps(wire: &mut Wire, pipelining: bool) -> Session {
    let mut session = greeted(wire);
    let caps = if pipelining {
        CAPA_PIPELINING
    } else {
        CAPA_PLAIN
    };
    wire.serve(&multi(b"+OK capability list follows", caps));
    let learned = wire.capa(&mut session);
    let names: Vec<&[u8]> = learned.list.iter().map(|(n, _)| n.as_bytes()).collect();
    let first_words: Vec<&[u8]> = caps
        .iter()
        .map(|l| l.split(|b| *b == b' ').next().unwrap())
        .collect();
    assert_eq!(names, first_words);
    assert_eq!(wire.take_written(), b"CAPA\r\n");
    assert_eq!(
        session.capabilities().map(|c| c.pipelining),
        Some(pipelining)
    );
    session
}

fn is_usage(result: Result<Job, ProtoError>) -> bool {
    matches!(result, Err(ProtoError::Usage(_)))
}

/// A server that answers `RETR n` with a short message, `DELE n` / `NOOP` with a status line
/// naming the command, and `CAPA` with the given capabilities.
fn mailbox(pipelining: bool) -> impl FnMut(&[u8]) -> Vec<u8> {
    move |command: &[u8]| {
        let text = String::from_utf8(command.to_vec()).unwrap();
        let mut words = text.split(' ');
        match words.next().unwrap() {
            "CAPA" => multi(
                b"+OK caps",
                if pipelining {
                    CAPA_PIPELINING
                } else {
                    CAPA_PLAIN
                },
            ),
            "RETR" => {
                let n = words.next().unwrap();
                let body = retr_body(n);
                multi(
                    format!("+OK message {n}").as_bytes(),
                    &body.iter().map(Vec::as_slice).collect::<Vec<_>>(),
                )
            }
            _ => line(format!("+OK did {text}").as_bytes()),
        }
    }
}

/// The message `RETR n` gets from [`mailbox`]: fake status lines and a terminator-like line
/// in the body, so that a reply taken by the wrong caller would show.
fn retr_body(n: &str) -> Vec<Vec<u8>> {
    vec![
        format!("Subject: message {n}").into_bytes(),
        b"".to_vec(),
        b"+OK 99 octets".to_vec(),
        b".".to_vec(),
        format!("-ERR not really, body of {n}").into_bytes(),
    ]
}

fn retr_reply(n: usize) -> R {
    let body = retr_body(&n.to_string());
    lines_of(
        format!("+OK message {n}").as_bytes(),
        &body.iter().map(Vec::as_slice).collect::<Vec<_>>(),
    )
}

fn item(done: Done) -> Option<(usize, R)> {
    match done {
        Done::Item(item) => item.map(|(i, o)| (i, r(o))),
        other => panic!("expected a batch item, got {other:?}"),
    }
}

fn chunk(done: Done) -> Option<Vec<u8>> {
    match done {
        Done::Chunk(chunk) => chunk,
        other => panic!("expected a chunk, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Greeting, plain commands, Put / Claim.

#[test]
fn greeting_is_claimed_as_a_status_reply() {
    for split in SPLITS {
        let mut wire = Wire::new(split);
        let mut session = greeted(&mut wire);
        assert_eq!(session.state(), State::Authorization);
        assert!(!session.tls());
        assert!(session.capabilities().is_none());
        // Nothing else is outstanding.
        assert!(is_usage(session.start(Request::Claim {
            expect: Expect::Status
        })));
    }
}

#[test]
fn err_greeting_is_a_normal_reply() {
    let mut wire = Wire::new(Split::Whole);
    let mut session = Session::new(Limits::default());
    wire.serve(b"-ERR [SYS/TEMP] too busy\r\n");
    assert_eq!(
        wire.reply(
            &mut session,
            Request::Claim {
                expect: Expect::Status
            }
        ),
        server_err(b"-ERR [SYS/TEMP] too busy")
    );
    assert!(session.closed().is_none());
    wire.serve(b"+OK bye\r\n");
    assert_eq!(
        wire.command(&mut session, b"QUIT", Expect::Status),
        status(b"+OK bye")
    );
}

#[test]
fn unclaimed_greeting_is_dropped() {
    for split in SPLITS {
        let mut wire = Wire::new(split);
        let mut session = Session::new(Limits::default());
        wire.serve(&line(GREETING));
        wire.serve(b"+OK bob is welcome\r\n");
        assert_eq!(
            wire.command(&mut session, b"USER bob", Expect::Status),
            status(b"+OK bob is welcome")
        );
        assert_eq!(wire.take_written(), b"USER bob\r\n");
        assert!(is_usage(session.start(Request::Claim {
            expect: Expect::Status
        })));
    }
}

#[test]
fn command_replies_of_each_kind() {
    for split in SPLITS {
        let mut wire = Wire::new(split);
        let mut session = greeted(&mut wire);

        wire.serve(b"+OK 2 320\r\n");
        assert_eq!(
            wire.command(&mut session, b"STAT", Expect::Status),
            status(b"+OK 2 320")
        );
        assert_eq!(wire.take_written(), b"STAT\r\n");

        wire.serve(&multi(b"+OK 2 messages", &[b"1 120", b"2 200"]));
        assert_eq!(
            wire.command(&mut session, b"LIST", Expect::Lines),
            lines_of(b"+OK 2 messages", &[b"1 120", b"2 200"])
        );

        // Dot-stuffed lines come back unstuffed; octets as poplib counts them.
        let body: &[&[u8]] = &[
            b"Subject: x",
            b"",
            b".",
            b"..",
            b".hidden",
            b"+OK not a reply",
        ];
        wire.serve(&multi(b"+OK 99 octets", body));
        assert_eq!(
            wire.command(&mut session, b"RETR 1", Expect::Bytes),
            bytes_of(b"+OK 99 octets", body)
        );
        wire.serve(&multi(b"+OK 99 octets", body));
        assert_eq!(
            wire.command(&mut session, b"RETR 1", Expect::Lines),
            lines_of(b"+OK 99 octets", body)
        );

        // -ERR for each kind: one line, delivered to its caller, the session goes on.
        for expect in [Expect::Status, Expect::Lines, Expect::Bytes] {
            wire.serve(b"-ERR no such message\r\n");
            assert_eq!(
                wire.command(&mut session, b"RETR 9", expect),
                server_err(b"-ERR no such message")
            );
        }
        wire.serve(b"+OK\r\n");
        assert_eq!(
            wire.command(&mut session, b"NOOP", Expect::Status),
            status(b"+OK")
        );
        assert_eq!(
            wire.take_written(),
            b"LIST\r\nRETR 1\r\nRETR 1\r\nRETR 9\r\nRETR 9\r\nRETR 9\r\nNOOP\r\n"
        );
        assert_eq!(session.state(), State::Authorization);
        assert!(session.closed().is_none());
    }
}

#[test]
fn command_with_cr_lf_or_nul_is_refused_and_sends_nothing() {
    let mut wire = Wire::new(Split::Whole);
    let mut session = greeted(&mut wire);
    for bad in [&b"USER a\r\nDELE 1"[..], b"USER a\nb", b"USER \0"] {
        assert!(matches!(
            session.start(cmd(bad, Expect::Status)),
            Err(ProtoError::InvalidArgument(_))
        ));
        assert!(matches!(
            session.start(put(bad)),
            Err(ProtoError::InvalidArgument(_))
        ));
        assert!(matches!(
            session.batch_lines(vec![b"NOOP".to_vec(), bad.to_vec()], Expect::Status),
            Err(ProtoError::InvalidArgument(_))
        ));
    }
    assert!(session.outgoing().is_empty());
    wire.serve(b"+OK\r\n");
    assert_eq!(
        wire.command(&mut session, b"NOOP", Expect::Status),
        status(b"+OK")
    );
    assert_eq!(wire.take_written(), b"NOOP\r\n");
}

/// Ctrl-C or a watchdog abandons a job mid-reply: the next request reads the rest of that
/// reply, drops it, and gets its own.
#[test]
fn abandoned_job_reply_is_dropped() {
    let body: &[&[u8]] = &[b"+OK fake status", b"-ERR fake", b"."];
    for request in [
        cmd(b"RETR 1", Expect::Lines),
        cmd(b"RETR 1", Expect::Bytes),
        Request::StreamOpen {
            command: typed(b"RETR 1", Expect::Lines),
        },
        Request::Capa,
    ] {
        for split in SPLITS {
            let reply = multi(b"+OK", body);
            for cut in [2, 5, reply.len() / 2, reply.len() - 1] {
                let mut wire = Wire::new(split);
                let mut session = greeted(&mut wire);
                wire.serve(&reply[..cut]);
                let mut job = session.start(request_clone(&request)).unwrap();
                match wire.pump(&mut session, &mut job) {
                    Pumped::Starved => drop(job),
                    // A stream opens with its status line; its body is then left unread.
                    Pumped::Done(Done::Stream(..)) if cut >= 5 => {}
                    other => panic!("{other:?}"),
                }
                wire.serve(&reply[cut..]);
                wire.serve(b"+OK mine\r\n");
                assert_eq!(
                    wire.command(&mut session, b"NOOP", Expect::Status),
                    status(b"+OK mine")
                );
                assert!(wire.pending.is_empty());
                assert!(is_usage(session.start(Request::Claim {
                    expect: Expect::Status
                })));
            }
        }
    }
}

fn request_clone(request: &Request) -> Request {
    match request {
        Request::Command { command, collect } => Request::Command {
            command: command.clone(),
            collect: *collect,
        },
        Request::StreamOpen { command } => Request::StreamOpen {
            command: command.clone(),
        },
        Request::Capa => Request::Capa,
        other => unimplemented!("{other:?}"),
    }
}

/// poplib's `_putcmd("RETR 1"); _getresp()`, then `lines` calls of `_getline()`: the lines read.
fn retr_claimed_as_status(wire: &mut Wire, session: &mut Session, lines: usize) -> Vec<Vec<u8>> {
    let put = put(b"RETR 1");
    assert!(matches!(wire.run(session, put), Ok(Done::Sent)));
    let claim = Request::Claim {
        expect: Expect::Status,
    };
    assert_eq!(wire.reply(session, claim), status(b"+OK 1"));
    (0..lines)
        .map(
            |_| match wire.run(session, Request::RawLine { max: None }) {
                Ok(Done::Line(line)) => line,
                other => panic!("{other:?}"),
            },
        )
        .collect()
}

#[test]
fn a_body_left_after_a_status_claim_is_never_another_reply() {
    // The body carries what a forged reply would look like.
    let body: &[&[u8]] = &[b"Subject: one", b"+OK forged", b"Subject: forged", b"..x"];
    for split in SPLITS {
        for read in 0..=5 {
            let mut wire = Wire::new(split);
            let mut session = greeted(&mut wire);
            wire.serve(&multi(b"+OK 1", body));
            let got = retr_claimed_as_status(&mut wire, &mut session, read);
            // `_getline()` goes on reading the body as it arrived (dot-stuffed), then its end.
            let stuffed =
                |l: &[u8]| [if l.starts_with(b".") { &b"."[..] } else { b"" }, l].concat();
            let mut expected: Vec<Vec<u8>> = body.iter().map(|l| line(&stuffed(l))).collect();
            expected.push(b".\r\n".to_vec());
            assert_eq!(got, expected[..read.min(5)], "{split:?} {read}");
            wire.serve(&multi(b"+OK 2", &[b"two"]));
            assert_eq!(
                wire.command(&mut session, b"RETR 2", Expect::Lines),
                lines_of(b"+OK 2", &[b"two"]),
                "{split:?} after {read} lines"
            );
            assert!(wire.pending.is_empty());
        }
    }
}

/// io's `readline(max)` through the session: parts of a line, the line framed whole.
#[test]
fn raw_lines_read_in_parts_are_framed_whole() {
    // "..x" arrives stuffed as "...x": a part "." followed by "..x\r\n" must not look like
    // the terminator to whoever reads on, and a part of a status line is not a status.
    let body: &[&[u8]] = &[b"Subject: one", b"..x", b"+OK forged"];
    for split in SPLITS {
        for max in [1, 2, 3, 7] {
            for read_parts in [0, 1, 2, 5, 9, 14, 50] {
                let mut wire = Wire::new(split);
                let mut session = greeted(&mut wire);
                wire.serve(&multi(b"+OK 1", body));
                let put = Request::Put {
                    command: Command::raw(b"RETR 1".to_vec(), None),
                };
                assert!(matches!(wire.run(&mut session, put), Ok(Done::Sent)));
                let all = multi(b"+OK 1", body);
                let mut got = Vec::new();
                for _ in 0..read_parts {
                    if got.len() == all.len() {
                        break;
                    }
                    match wire.run(&mut session, Request::RawLine { max: Some(max) }) {
                        Ok(Done::Line(part)) => {
                            assert!(!part.is_empty() && part.len() <= max, "{part:?}");
                            got.extend(part);
                        }
                        other => panic!("{other:?}"),
                    }
                }
                // The whole reply read in parts is the reply as it arrived.
                assert_eq!(got, all[..got.len()], "{split:?} {max} {read_parts}");
                // A whole-line read goes on from where the parts ended.
                if got.len() < all.len() {
                    let Ok(Done::Line(rest)) =
                        wire.run(&mut session, Request::RawLine { max: None })
                    else {
                        panic!("a line")
                    };
                    let end = got.len() + rest.len();
                    assert_eq!(rest, all[got.len()..end]);
                    assert!(rest.ends_with(b"\n"));
                }
                wire.serve(&multi(b"+OK 2", &[b"two"]));
                assert_eq!(
                    wire.command(&mut session, b"RETR 2", Expect::Lines),
                    lines_of(b"+OK 2", &[b"two"]),
                    "{split:?} {max} after {read_parts} parts"
                );
                assert!(wire.pending.is_empty());
            }
        }
    }
}

#[test]
fn put_then_claim() {
    for split in SPLITS {
        let mut wire = Wire::new(split);
        let mut session = greeted(&mut wire);
        // The server's answers are already there: Put must not read them.
        wire.serve(b"+OK bob\r\n");
        wire.serve(&multi(b"+OK follows", &[b"a", b".b"]));
        let reads = wire.reads;
        assert!(matches!(
            wire.run(&mut session, put(b"USER bob")),
            Ok(Done::Sent)
        ));
        assert!(matches!(
            wire.run(&mut session, put(b"RETR 1")),
            Ok(Done::Sent)
        ));
        assert_eq!(wire.take_written(), b"USER bob\r\nRETR 1\r\n");
        assert_eq!(wire.reads, reads);
        // Claimed oldest first, each read as the claimer says.
        assert_eq!(
            wire.reply(
                &mut session,
                Request::Claim {
                    expect: Expect::Status
                }
            ),
            status(b"+OK bob")
        );
        assert_eq!(
            wire.reply(
                &mut session,
                Request::Claim {
                    expect: Expect::Bytes
                }
            ),
            bytes_of(b"+OK follows", &[b"a", b".b"])
        );
        assert!(is_usage(session.start(Request::Claim {
            expect: Expect::Status
        })));
        assert_eq!(wire.take_written(), b"");
    }
}

#[test]
fn put_never_claimed_is_dropped_not_returned() {
    for split in SPLITS {
        let mut wire = Wire::new(split);
        let mut session = greeted(&mut wire);
        // LIST without argument: a multi-line reply whose body holds status-like lines.
        for put in [
            &b"LIST"[..],
            b"NOOP",
            b"RETR 1",
            b"TOP 1 0",
            b"UIDL",
            b"CAPA",
        ] {
            assert!(matches!(
                wire.run(&mut session, self::put(put)),
                Ok(Done::Sent)
            ));
        }
        wire.serve(&multi(b"+OK listing", &[b"+OK 1 120", b"-ERR 2 200"]));
        wire.serve(b"+OK noop\r\n");
        wire.serve(&multi(b"+OK message", &[b"+OK fake", b"."]));
        wire.serve(&multi(b"+OK top", &[b"Subject: x"]));
        wire.serve(&multi(b"+OK uidl", &[b"1 abc"]));
        wire.serve(&multi(b"+OK capa", &[b"TOP"]));
        wire.serve(b"+OK 1 120\r\n");
        assert_eq!(
            wire.command(&mut session, b"STAT", Expect::Status),
            status(b"+OK 1 120")
        );
        assert_eq!(
            wire.take_written(),
            b"LIST\r\nNOOP\r\nRETR 1\r\nTOP 1 0\r\nUIDL\r\nCAPA\r\nSTAT\r\n"
        );
        // They are gone: nothing left to claim.
        assert!(is_usage(session.start(Request::Claim {
            expect: Expect::Status
        })));
        wire.serve(b"+OK next\r\n");
        assert_eq!(
            wire.command(&mut session, b"NOOP", Expect::Status),
            status(b"+OK next")
        );
        assert!(wire.pending.is_empty());
    }
}

#[test]
fn put_unclaimed_err_to_a_multiline_command_is_one_line() {
    let mut wire = Wire::new(Split::Random(3));
    let mut session = greeted(&mut wire);
    assert!(matches!(
        wire.run(&mut session, put(b"RETR 7")),
        Ok(Done::Sent)
    ));
    wire.serve(b"-ERR no such message\r\n+OK 0 0\r\n");
    assert_eq!(
        wire.command(&mut session, b"STAT", Expect::Status),
        status(b"+OK 0 0")
    );
}

#[test]
fn put_unclaimed_auth_listing_is_dropped_whole() {
    let mut wire = Wire::new(Split::Whole);
    let mut session = greeted(&mut wire);
    assert!(matches!(
        wire.run(&mut session, put(b"AUTH")),
        Ok(Done::Sent)
    ));
    wire.serve(&multi(b"+OK methods", &[b"PLAIN", b"LOGIN"]));
    wire.serve(b"+OK noop\r\n");
    assert_eq!(
        wire.command(&mut session, b"NOOP", Expect::Status),
        status(b"+OK noop")
    );
}

// ---------------------------------------------------------------------------------------------
// Capabilities, login.

#[test]
fn capa_is_learned_and_summarised() {
    for split in SPLITS {
        let mut wire = Wire::new(split);
        let session = with_caps(&mut wire, true);
        let caps = session.capabilities().unwrap();
        assert!(caps.pipelining && caps.uidl && caps.top && caps.stls);
        assert_eq!(caps.sasl, vec!["PLAIN".to_string(), "LOGIN".to_string()]);
        let session = with_caps(&mut Wire::new(split), false);
        let caps = session.capabilities().unwrap();
        assert!(!caps.pipelining && caps.uidl && caps.top && !caps.stls && caps.sasl.is_empty());
    }
}

/// One line the CAPA parser refuses (8-bit text, e.g. a UTF-8 `IMPLEMENTATION` name, which
/// poplib's `capa()` decodes fine) must not hide the capabilities the other lines advertise.
#[test]
fn one_odd_capa_line_does_not_hide_the_others() {
    let mut wire = Wire::new(Split::Whole);
    let mut session = greeted(&mut wire);
    let capa: &[&[u8]] = &[
        b"IMPLEMENTATION Serveur-\xc3\xa9l\xc3\xa9gant",
        b"PIPELINING",
        b"STLS",
        b"SASL PLAIN",
    ];
    wire.serve(&multi(b"+OK", capa));
    let learned = wire.capa(&mut session);
    assert_eq!(learned.list.len(), 4);
    assert_eq!(learned.list[0].1, ["Serveur-\u{e9}l\u{e9}gant"]);
    let caps = session.capabilities().unwrap();
    assert_eq!(*caps, learned);
    assert!(caps.pipelining && caps.stls, "{caps:?}");
    assert_eq!(caps.sasl, vec!["PLAIN".to_string()]);
}

#[test]
fn capa_err_means_nothing_advertised() {
    let mut wire = Wire::new(Split::Whole);
    let mut session = greeted(&mut wire);
    wire.serve(b"-ERR unknown command\r\n");
    assert_eq!(
        wire.reply(&mut session, Request::Capa),
        server_err(b"-ERR unknown command")
    );
    let caps = session
        .capabilities()
        .expect("a -ERR CAPA is knowledge too");
    assert!(!caps.pipelining && !caps.uidl && !caps.top && !caps.stls);
}

#[test]
fn login_moves_to_transaction_and_forgets_capabilities() {
    for (user, pass) in [
        (&b"USER bob"[..], &b"PASS secret"[..]),
        (b"USER bob", b"pass secret"),
    ] {
        let mut wire = Wire::new(Split::Random(11));
        let mut session = with_caps(&mut wire, true);
        wire.serve(b"+OK\r\n-ERR [AUTH] bad password\r\n");
        assert_eq!(
            wire.command(&mut session, user, Expect::Status),
            status(b"+OK")
        );
        assert_eq!(
            wire.reply(&mut session, secret(pass)),
            server_err(b"-ERR [AUTH] bad password")
        );
        assert_eq!(session.state(), State::Authorization);
        assert!(session.capabilities().is_some());
        wire.serve(b"+OK\r\n+OK logged in\r\n");
        assert_eq!(
            wire.command(&mut session, user, Expect::Status),
            status(b"+OK")
        );
        assert_eq!(
            wire.reply(&mut session, secret(pass)),
            status(b"+OK logged in")
        );
        assert_eq!(session.state(), State::Transaction);
        // RFC 2449 §5: capabilities may change after login.
        assert!(session.capabilities().is_none());
    }
    let mut wire = Wire::new(Split::Whole);
    let mut session = greeted(&mut wire);
    wire.serve(b"+OK maildrop locked\r\n");
    let apop = b"APOP mrose c4c9334bac560ecc979e58001b3e22fb";
    assert_eq!(
        wire.command(&mut session, apop, Expect::Status),
        status(b"+OK maildrop locked")
    );
    assert_eq!(session.state(), State::Transaction);
}

#[test]
fn trace_masks_secrets() {
    let mut wire = Wire::new(Split::Whole);
    let mut session = greeted(&mut wire);
    session.set_trace(true);
    wire.serve(b"+OK\r\n+OK in\r\n");
    wire.command(&mut session, b"USER bob", Expect::Status);
    wire.reply(&mut session, secret(b"PASS hunter2"));
    let trace = session.take_trace();
    let want: Vec<(bool, Vec<u8>)> = vec![
        (true, b"USER bob".to_vec()),
        (false, b"+OK".to_vec()),
        (true, b"PASS ****".to_vec()),
        (false, b"+OK in".to_vec()),
    ];
    assert_eq!(trace, want);
    assert!(
        wire.written.windows(7).any(|w| w == b"hunter2"),
        "the password itself is sent: only the trace masks it"
    );
    assert!(session.take_trace().is_empty());
}

// ---------------------------------------------------------------------------------------------
// Batches.

#[test]
fn batch_without_pipelining_keeps_one_command_in_flight() {
    for split in SPLITS {
        let mut wire = Wire::new(split);
        let mut session = with_caps(&mut wire, false);
        let id = session
            .batch_lines(
                vec![b"RETR 1".to_vec(), b"RETR 2".to_vec(), b"RETR 3".to_vec()],
                Expect::Lines,
            )
            .unwrap();
        assert_eq!(
            session.outgoing(),
            b"",
            "a batch sends nothing until it is iterated"
        );
        for n in 1..=3usize {
            let mut job = session.start(Request::BatchNext { id }).unwrap();
            assert!(matches!(wire.pump(&mut session, &mut job), Pumped::Starved));
            // Exactly one command is on the wire before its reply comes.
            assert_eq!(wire.take_written(), format!("RETR {n}\r\n").into_bytes());
            wire.serve(&mailbox(false)(format!("RETR {n}").as_bytes()));
            let Pumped::Done(done) = wire.pump(&mut session, &mut job) else {
                panic!("batch item {n} did not arrive")
            };
            assert_eq!(item(done), Some((n - 1, retr_reply(n))));
        }
        assert_eq!(
            item(wire.run(&mut session, Request::BatchNext { id }).unwrap()),
            None
        );
        assert!(is_usage(session.start(Request::BatchNext { id })));
        assert_eq!(wire.take_written(), b"");
    }
}

#[test]
fn batch_with_pipelining_sends_ahead() {
    for split in SPLITS {
        let mut wire = Wire::new(split);
        let mut session = with_caps(&mut wire, true);
        let id = session
            .batch_lines(
                vec![b"RETR 1".to_vec(), b"RETR 2".to_vec(), b"RETR 3".to_vec()],
                Expect::Lines,
            )
            .unwrap();
        let mut job = session.start(Request::BatchNext { id }).unwrap();
        assert!(matches!(wire.pump(&mut session, &mut job), Pumped::Starved));
        assert_eq!(wire.take_written(), b"RETR 1\r\nRETR 2\r\nRETR 3\r\n");
        assert_eq!(
            wire.writes, 2,
            "one write for CAPA, one for the whole batch"
        );
        for n in 1..=3 {
            wire.serve(&mailbox(true)(format!("RETR {n}").as_bytes()));
        }
        let Pumped::Done(done) = wire.pump(&mut session, &mut job) else {
            panic!("no first item")
        };
        assert_eq!(item(done), Some((0, retr_reply(1))));
        for n in 2..=3 {
            assert_eq!(
                item(wire.run(&mut session, Request::BatchNext { id }).unwrap()),
                Some((n - 1, retr_reply(n)))
            );
        }
        assert_eq!(
            item(wire.run(&mut session, Request::BatchNext { id }).unwrap()),
            None
        );
        assert_eq!(wire.take_written(), b"");
    }
}

#[test]
fn batch_learns_capabilities_first() {
    for pipelining in [false, true] {
        let mut wire = Wire::new(Split::Random(5));
        let mut session = greeted(&mut wire);
        let id = session
            .batch_lines(vec![b"DELE 1".to_vec(), b"DELE 2".to_vec()], Expect::Status)
            .unwrap();
        let mut job = session.start(Request::BatchNext { id }).unwrap();
        assert!(matches!(wire.pump(&mut session, &mut job), Pumped::Starved));
        assert_eq!(
            wire.take_written(),
            b"CAPA\r\n",
            "nothing of the batch before the window is known"
        );
        wire.serve(&multi(
            b"+OK",
            if pipelining {
                CAPA_PIPELINING
            } else {
                CAPA_PLAIN
            },
        ));
        assert!(matches!(wire.pump(&mut session, &mut job), Pumped::Starved));
        let want: &[u8] = if pipelining {
            b"DELE 1\r\nDELE 2\r\n"
        } else {
            b"DELE 1\r\n"
        };
        assert_eq!(wire.take_written(), want);
        wire.serve(b"+OK 1 deleted\r\n");
        let Pumped::Done(done) = wire.pump(&mut session, &mut job) else {
            panic!("no first item")
        };
        assert_eq!(item(done), Some((0, status(b"+OK 1 deleted"))));
        wire.serve(b"-ERR 2 already deleted\r\n");
        assert_eq!(
            item(wire.run(&mut session, Request::BatchNext { id }).unwrap()),
            Some((1, server_err(b"-ERR 2 already deleted")))
        );
        assert_eq!(
            wire.take_written(),
            if pipelining { &b""[..] } else { b"DELE 2\r\n" }
        );
        assert_eq!(
            item(wire.run(&mut session, Request::BatchNext { id }).unwrap()),
            None
        );
    }
}

#[test]
fn batch_window_is_bounded_and_refilled() {
    let total = 2 * WINDOW + 10;
    for pipelining in [false, true] {
        let mut wire = Wire::answering(Split::Random(9), mailbox(pipelining));
        let mut session = greeted(&mut wire);
        let lines: Vec<Vec<u8>> = (1..=total)
            .map(|n| format!("DELE {n}").into_bytes())
            .collect();
        let id = session.batch_lines(lines, Expect::Status).unwrap();
        let window = if pipelining { WINDOW } else { 1 };
        let mut most_ahead = 0;
        for n in 0..total {
            let got = item(wire.run(&mut session, Request::BatchNext { id }).unwrap());
            assert_eq!(
                got,
                Some((n, status(format!("+OK did DELE {}", n + 1).as_bytes())))
            );
            // Commands on the wire whose reply has not been handed out yet (CAPA aside).
            let ahead = wire.lines.len() - 1 - (n + 1);
            assert!(
                ahead < window,
                "{ahead} commands in flight with a window of {window}"
            );
            most_ahead = most_ahead.max(ahead + 1);
            // And the pipe never runs dry: refilled once half the window has been answered.
            let remaining = total - (n + 1);
            assert!(
                ahead >= remaining.min(window / 2),
                "only {ahead} commands in flight after item {n}"
            );
        }
        assert_eq!(most_ahead, window, "the window is used in full");
        assert_eq!(
            item(wire.run(&mut session, Request::BatchNext { id }).unwrap()),
            None
        );
        assert_eq!(wire.lines.len(), total + 1);
        if pipelining {
            // Refilled by half windows, not one command per write.
            assert!(
                wire.writes <= 2 + 2 * total / WINDOW + 1,
                "{} writes",
                wire.writes
            );
        }
    }
}

/// The fetch-store-delete loop: `for each batch item: DELE n`.
#[test]
fn command_inside_a_batch_loop_gets_its_own_reply() {
    for pipelining in [false, true] {
        for split in SPLITS {
            let mut wire = Wire::answering(split, mailbox(pipelining));
            let mut session = greeted(&mut wire);
            let id = session
                .batch_lines(
                    (1..=4).map(|n| format!("RETR {n}").into_bytes()).collect(),
                    Expect::Lines,
                )
                .unwrap();
            let mut seen = 0;
            while let Some((index, reply)) =
                item(wire.run(&mut session, Request::BatchNext { id }).unwrap())
            {
                assert_eq!((index, reply), (seen, retr_reply(seen + 1)));
                let dele = format!("DELE {}", index + 1);
                assert_eq!(
                    wire.command(&mut session, dele.as_bytes(), Expect::Status),
                    status(format!("+OK did {dele}").as_bytes())
                );
                seen += 1;
            }
            assert_eq!(seen, 4);
            let order: Vec<String> = wire
                .lines
                .iter()
                .map(|l| String::from_utf8_lossy(l).into_owned())
                .collect();
            let want = if pipelining {
                vec![
                    "CAPA", "RETR 1", "RETR 2", "RETR 3", "RETR 4", "DELE 1", "DELE 2", "DELE 3",
                    "DELE 4",
                ]
            } else {
                vec![
                    "CAPA", "RETR 1", "DELE 1", "RETR 2", "DELE 2", "RETR 3", "DELE 3", "RETR 4",
                    "DELE 4",
                ]
            };
            assert_eq!(order, want);
            assert!(wire.pending.is_empty());
        }
    }
}

#[test]
fn batch_dropped_early_drops_its_replies() {
    for pipelining in [false, true] {
        for split in SPLITS {
            let mut wire = Wire::answering(split, mailbox(pipelining));
            let mut session = greeted(&mut wire);
            let id = session
                .batch_lines(
                    (1..=5).map(|n| format!("RETR {n}").into_bytes()).collect(),
                    Expect::Lines,
                )
                .unwrap();
            assert_eq!(
                item(wire.run(&mut session, Request::BatchNext { id }).unwrap()),
                Some((0, retr_reply(1)))
            );
            assert_eq!(
                item(wire.run(&mut session, Request::BatchNext { id }).unwrap()),
                Some((1, retr_reply(2)))
            );
            session.drop_batch(id);
            assert!(is_usage(session.start(Request::BatchNext { id })));
            // RETR 3..5 are in flight when pipelining: read and dropped.
            assert_eq!(
                wire.command(&mut session, b"NOOP", Expect::Status),
                status(b"+OK did NOOP")
            );
            assert_eq!(
                wire.command(&mut session, b"STAT", Expect::Status),
                status(b"+OK did STAT")
            );
            let sent = wire.lines.iter().filter(|l| l.starts_with(b"RETR")).count();
            assert_eq!(
                sent,
                if pipelining { 5 } else { 2 },
                "the rest of a dropped batch is never sent"
            );
            assert!(wire.pending.is_empty());
        }
    }
}

/// `break` out of the loop while an item's reply is half read (the job is abandoned).
#[test]
fn batch_dropped_mid_reply() {
    for split in SPLITS {
        let mut wire = Wire::new(split);
        let mut session = with_caps(&mut wire, true);
        let id = session
            .batch_lines(vec![b"RETR 1".to_vec(), b"RETR 2".to_vec()], Expect::Bytes)
            .unwrap();
        let reply = multi(b"+OK", &[b"line one", b"+OK fake", b"line three"]);
        wire.serve(&reply[..reply.len() / 2]);
        let mut job = session.start(Request::BatchNext { id }).unwrap();
        assert!(matches!(wire.pump(&mut session, &mut job), Pumped::Starved));
        drop(job);
        session.drop_batch(id);
        wire.serve(&reply[reply.len() / 2..]);
        wire.serve(&reply);
        wire.serve(b"+OK noop\r\n");
        assert_eq!(
            wire.command(&mut session, b"NOOP", Expect::Status),
            status(b"+OK noop")
        );
        assert_eq!(wire.take_written(), b"RETR 1\r\nRETR 2\r\nNOOP\r\n");
    }
}

/// A dropped batch's replies are discarded unread, so they are not held to `max_response_size`.
#[test]
fn dropped_batch_replies_are_not_collected() {
    let limits = Limits {
        max_response_size: 100,
        ..Limits::default()
    };
    let mut wire = Wire::new(Split::Random(2));
    let mut session = greeted_with(&mut wire, limits);
    wire.serve(&multi(b"+OK", &[b"PIPELINING"]));
    let id = session
        .batch_lines(vec![b"RETR 1".to_vec(), b"RETR 2".to_vec()], Expect::Lines)
        .unwrap();
    wire.serve(&multi(b"+OK small", &[b"x"]));
    let big: Vec<Vec<u8>> = (0..50)
        .map(|i| format!("line {i} of a big message").into_bytes())
        .collect();
    wire.serve(&multi(
        b"+OK big",
        &big.iter().map(Vec::as_slice).collect::<Vec<_>>(),
    ));
    wire.serve(b"+OK noop\r\n");
    assert_eq!(
        item(wire.run(&mut session, Request::BatchNext { id }).unwrap()),
        Some((0, lines_of(b"+OK small", &[b"x"])))
    );
    session.drop_batch(id);
    assert_eq!(
        wire.command(&mut session, b"NOOP", Expect::Status),
        status(b"+OK noop")
    );
}

// ---------------------------------------------------------------------------------------------
// Streams.

fn open_stream(wire: &mut Wire, session: &mut Session, line: &[u8]) -> (u64, Vec<u8>) {
    match wire.run(
        session,
        Request::StreamOpen {
            command: typed(line, Expect::Lines),
        },
    ) {
        Ok(Done::Stream(id, status)) => (id, status),
        other => panic!("expected a stream, got {other:?}"),
    }
}

/// Lines of a long message with dots and status-like lines in it.
fn long_message() -> Vec<Vec<u8>> {
    (0..40)
        .map(|i| match i % 5 {
            0 => b".".to_vec(),
            1 => format!("..dots {i}").into_bytes(),
            2 => b"+OK 99 octets".to_vec(),
            3 => Vec::new(),
            _ => format!("line {i} {}", "x".repeat(i)).into_bytes(),
        })
        .collect()
}

#[test]
fn stream_chunks_respect_the_size_and_rebuild_the_body() {
    let message = long_message();
    let body: Vec<&[u8]> = message.iter().map(Vec::as_slice).collect();
    let want = crlf(&body);
    for (max, split, late_end) in [1, 5, 64, 1000, 1 << 20]
        .into_iter()
        .flat_map(|max| SPLITS.map(|split| (max, split)))
        .flat_map(|(max, split)| [(max, split, false), (max, split, true)])
    {
        let mut wire = Wire::new(split);
        let mut session = greeted(&mut wire);
        // With `late_end`, the terminator comes only once the session starves for it.
        let reply = multi(b"+OK 99 octets", &body);
        wire.serve(if late_end {
            reply.strip_suffix(b".\r\n").unwrap()
        } else {
            &reply
        });
        let (id, opened) = open_stream(&mut wire, &mut session, b"RETR 1");
        assert_eq!(opened, b"+OK 99 octets");
        assert_eq!(wire.take_written(), b"RETR 1\r\n");
        let mut got = Vec::new();
        loop {
            let mut job = session.start(Request::StreamNext { id, max }).unwrap();
            let done = match wire.pump(&mut session, &mut job) {
                Pumped::Done(done) => done,
                Pumped::Starved => {
                    wire.serve(b".\r\n");
                    match wire.pump(&mut session, &mut job) {
                        Pumped::Done(done) => done,
                        other => panic!("{other:?}"),
                    }
                }
                other => panic!("{other:?}"),
            };
            let Some(piece) = chunk(done) else { break };
            assert!(!piece.is_empty(), "an empty chunk is not the end");
            // Decoding pauses once the chunk reaches `max`: only its last line may cross it.
            let before_last = piece[..piece.len() - 1]
                .iter()
                .rposition(|b| *b == b'\n')
                .map_or(0, |i| i + 1);
            assert!(
                before_last < max,
                "a chunk of {} with max {max}",
                piece.len()
            );
            got.extend_from_slice(&piece);
        }
        assert_eq!(got, want, "max {max}, {split:?}, late end {late_end}");
        assert!(is_usage(session.start(Request::StreamNext { id, max })));
        wire.serve(b"+OK\r\n");
        assert_eq!(
            wire.command(&mut session, b"NOOP", Expect::Status),
            status(b"+OK")
        );
    }
}

/// The last chunk and the terminator arrive together: the stream still ends with `None`.
#[test]
fn stream_ends_with_none_when_the_terminator_comes_with_the_last_chunk() {
    let mut wire = Wire::new(Split::Whole);
    let mut session = greeted(&mut wire);
    wire.serve(&multi(b"+OK", &[b"short body"]));
    let (id, _) = open_stream(&mut wire, &mut session, b"RETR 1");
    assert_eq!(
        chunk(
            wire.run(&mut session, Request::StreamNext { id, max: 1024 })
                .unwrap()
        ),
        Some(b"short body\r\n".to_vec())
    );
    assert!(matches!(
        wire.run(&mut session, Request::StreamNext { id, max: 1024 }),
        Ok(Done::Chunk(None))
    ));
}

#[test]
fn stream_next_with_zero_max_is_refused_or_progresses() {
    let mut wire = Wire::new(Split::Whole);
    let mut session = greeted(&mut wire);
    wire.serve(&multi(b"+OK", &[b"body"]));
    let (id, _) = open_stream(&mut wire, &mut session, b"RETR 1");
    match session.start(Request::StreamNext { id, max: 0 }) {
        Err(ProtoError::Usage(_) | ProtoError::InvalidArgument(_)) => {}
        Err(other) => panic!("{other:?}"),
        Ok(mut job) => match wire.pump(&mut session, &mut job) {
            Pumped::Done(Done::Chunk(Some(piece))) => assert_eq!(piece, b"body\r\n"),
            other => panic!("expected the body or a Usage error, got {other:?}"),
        },
    }
}

#[test]
fn stream_open_err_is_a_reply() {
    let mut wire = Wire::new(Split::Bytewise);
    let mut session = greeted(&mut wire);
    wire.serve(b"-ERR no such message\r\n+OK\r\n");
    assert_eq!(
        wire.reply(
            &mut session,
            Request::StreamOpen {
                command: typed(b"RETR 9", Expect::Lines)
            }
        ),
        server_err(b"-ERR no such message")
    );
    assert_eq!(
        wire.command(&mut session, b"NOOP", Expect::Status),
        status(b"+OK")
    );
}

/// The body's remaining bytes, full of status-like lines, that must never be taken as a reply.
fn hostile_rest() -> Vec<Vec<u8>> {
    vec![
        b"+OK 99 octets".to_vec(),
        b"From: fake@example.org".to_vec(),
        b"Subject: +OK".to_vec(),
        b"".to_vec(),
        b"-ERR fake".to_vec(),
        b".".to_vec(),
    ]
}

#[test]
fn command_mid_stream_supersedes_it() {
    for split in SPLITS {
        for verb in [&b"NOOP"[..], b"STAT"] {
            let mut wire = Wire::new(split);
            let mut session = greeted(&mut wire);
            let mut body = vec![
                b"Subject: real".to_vec(),
                b"".to_vec(),
                b"first line of the body".to_vec(),
            ];
            body.extend(hostile_rest());
            wire.serve(&multi(
                b"+OK 300 octets",
                &body.iter().map(Vec::as_slice).collect::<Vec<_>>(),
            ));
            wire.serve(b"+OK the real reply\r\n");
            let (id, _) = open_stream(&mut wire, &mut session, b"RETR 1");
            let first = chunk(
                wire.run(&mut session, Request::StreamNext { id, max: 10 })
                    .unwrap(),
            )
            .unwrap();
            assert_eq!(first, b"Subject: real\r\n");
            assert_eq!(
                wire.command(&mut session, verb, Expect::Status),
                status(b"+OK the real reply")
            );
            assert_eq!(
                wire.take_written(),
                [&b"RETR 1\r\n"[..], verb, b"\r\n"].concat()
            );
            assert!(
                is_usage(session.start(Request::StreamNext { id, max: 10 })),
                "a superseded stream cannot resume"
            );
            assert!(session.closed().is_none());
            assert!(wire.pending.is_empty());
        }
    }
}

#[test]
fn stream_superseded_by_another_stream_or_messages() {
    for split in SPLITS {
        let mut wire = Wire::new(split);
        let mut session = with_caps(&mut wire, true);
        let rest = hostile_rest();
        let rest: Vec<&[u8]> = rest.iter().map(Vec::as_slice).collect();
        wire.serve(&multi(
            b"+OK first",
            &[&[&b"a"[..]][..], &rest[..]].concat(),
        ));
        wire.serve(&multi(
            b"+OK second",
            &[&[&b"b"[..]][..], &rest[..]].concat(),
        ));
        wire.serve(&multi(b"+OK 1 messages", &[b"1 10"]));
        wire.serve(&multi(b"+OK uids", &[b"1 uid-one"]));
        let (first, _) = open_stream(&mut wire, &mut session, b"RETR 1");
        assert_eq!(
            chunk(
                wire.run(&mut session, Request::StreamNext { id: first, max: 1 })
                    .unwrap()
            ),
            Some(b"a\r\n".to_vec())
        );
        let (second, status) = open_stream(&mut wire, &mut session, b"RETR 2");
        assert_eq!(status, b"+OK second");
        assert!(is_usage(
            session.start(Request::StreamNext { id: first, max: 1 })
        ));
        assert_eq!(
            chunk(
                wire.run(&mut session, Request::StreamNext { id: second, max: 1 })
                    .unwrap()
            ),
            Some(b"b\r\n".to_vec())
        );
        match wire.run(&mut session, Request::Messages) {
            Ok(Done::Messages(rows)) => assert_eq!(rows, vec![(1, 10, Some(b"uid-one".to_vec()))]),
            other => panic!("{other:?}"),
        }
        assert!(is_usage(
            session.start(Request::StreamNext { id: second, max: 1 })
        ));
    }
}

#[test]
fn superseded_stream_says_it_was_abandoned() {
    let mut wire = Wire::new(Split::Whole);
    let mut session = greeted(&mut wire);
    wire.serve(&multi(b"+OK", &[b"a", b"b"]));
    wire.serve(b"+OK\r\n");
    let (id, _) = open_stream(&mut wire, &mut session, b"RETR 1");
    assert_eq!(
        wire.command(&mut session, b"NOOP", Expect::Status),
        status(b"+OK")
    );
    match session.start(Request::StreamNext { id, max: 10 }) {
        Err(ProtoError::Usage(text)) => assert!(text.contains("abandoned"), "{text}"),
        other => panic!("{other:?}"),
    }
}

/// Every byte of the body was handed out, only the terminator was still unread when another
/// command came: the stream has nothing left to lose, and ends as it would have if the
/// terminator had come with the last chunk (`stream_ends_with_none_when_...`).
#[test]
fn stream_read_to_its_last_byte_then_command_still_ends() {
    let mut wire = Wire::new(Split::Whole);
    let mut session = greeted(&mut wire);
    wire.serve(b"+OK\r\nlast line\r\n");
    let (id, _) = open_stream(&mut wire, &mut session, b"RETR 1");
    assert_eq!(
        chunk(
            wire.run(&mut session, Request::StreamNext { id, max: 1024 })
                .unwrap()
        ),
        Some(b"last line\r\n".to_vec())
    );
    wire.serve(b".\r\n+OK\r\n");
    assert_eq!(
        wire.command(&mut session, b"NOOP", Expect::Status),
        status(b"+OK")
    );
    assert!(matches!(
        wire.run(&mut session, Request::StreamNext { id, max: 1024 }),
        Ok(Done::Chunk(None))
    ));
}

#[test]
fn stream_dropped_then_command() {
    for split in SPLITS {
        for chunks_read in [0, 1, 3] {
            let mut wire = Wire::new(split);
            let mut session = greeted(&mut wire);
            let rest = hostile_rest();
            let mut body: Vec<&[u8]> = vec![b"one", b"two", b"three"];
            body.extend(rest.iter().map(Vec::as_slice));
            wire.serve(&multi(b"+OK", &body));
            wire.serve(b"+OK mine\r\n");
            let (id, _) = open_stream(&mut wire, &mut session, b"RETR 1");
            for _ in 0..chunks_read {
                assert!(chunk(
                    wire.run(&mut session, Request::StreamNext { id, max: 1 })
                        .unwrap()
                )
                .is_some());
            }
            session.drop_stream(id);
            assert!(is_usage(session.start(Request::StreamNext { id, max: 1 })));
            assert_eq!(
                wire.command(&mut session, b"NOOP", Expect::Status),
                status(b"+OK mine")
            );
            assert!(wire.pending.is_empty());
        }
    }
}

/// Replies a batch read ahead stay its own while a stream is open; the stream is not
/// superseded by a batch item that was already read.
#[test]
fn batch_items_read_ahead_do_not_supersede_a_stream() {
    for split in SPLITS {
        let mut wire = Wire::answering(split, mailbox(true));
        let mut session = greeted(&mut wire);
        let id = session
            .batch_lines(
                (1..=3).map(|n| format!("RETR {n}").into_bytes()).collect(),
                Expect::Lines,
            )
            .unwrap();
        assert_eq!(
            item(wire.run(&mut session, Request::BatchNext { id }).unwrap()),
            Some((0, retr_reply(1)))
        );
        let (stream, opened) = open_stream(&mut wire, &mut session, b"RETR 9");
        assert_eq!(opened, b"+OK message 9");
        assert_eq!(
            item(wire.run(&mut session, Request::BatchNext { id }).unwrap()),
            Some((1, retr_reply(2)))
        );
        let mut got = Vec::new();
        while let Some(piece) = chunk(
            wire.run(&mut session, Request::StreamNext { id: stream, max: 8 })
                .unwrap(),
        ) {
            got.extend(piece);
            if got.len()
                == crlf(&retr_body("9").iter().map(Vec::as_slice).collect::<Vec<_>>()).len()
            {
                break;
            }
        }
        assert_eq!(
            got,
            crlf(&retr_body("9").iter().map(Vec::as_slice).collect::<Vec<_>>())
        );
        assert_eq!(
            item(wire.run(&mut session, Request::BatchNext { id }).unwrap()),
            Some((2, retr_reply(3)))
        );
        assert_eq!(
            item(wire.run(&mut session, Request::BatchNext { id }).unwrap()),
            None
        );
        assert_eq!(
            wire.command(&mut session, b"NOOP", Expect::Status),
            status(b"+OK did NOOP")
        );
    }
}

// ---------------------------------------------------------------------------------------------
// messages(): LIST + UIDL.

fn messages(wire: &mut Wire, session: &mut Session) -> Result<Vec<MessageRow>, ProtoError> {
    match wire.run(session, Request::Messages) {
        Ok(Done::Messages(rows)) => Ok(rows),
        Ok(Done::Reply(Err(err))) | Err(err) => Err(err),
        other => panic!("{other:?}"),
    }
}

fn job_messages(wire: &mut Wire, session: &mut Session, job: &mut Job) -> Vec<MessageRow> {
    match wire.pump(session, job) {
        Pumped::Done(Done::Messages(rows)) => rows,
        other => panic!("{other:?}"),
    }
}

const LISTING: &[&[u8]] = &[b"1 120", b"2 3400", b"3 5"];
const UIDS: &[&[u8]] = &[
    b"1 whqtswO00WBw418f9t5JxYwZ",
    b"2 QhdPYR:00WBw1Ph7x7",
    b"3 +OK.weird",
];

fn listed() -> Vec<MessageRow> {
    vec![
        (1, 120, Some(b"whqtswO00WBw418f9t5JxYwZ".to_vec())),
        (2, 3400, Some(b"QhdPYR:00WBw1Ph7x7".to_vec())),
        (3, 5, Some(b"+OK.weird".to_vec())),
    ]
}

#[test]
fn messages_without_pipelining_waits_for_list() {
    for split in SPLITS {
        let mut wire = Wire::new(split);
        let mut session = greeted(&mut wire);
        let mut job = session.start(Request::Messages).unwrap();
        assert!(matches!(wire.pump(&mut session, &mut job), Pumped::Starved));
        assert_eq!(wire.take_written(), b"CAPA\r\n");
        wire.serve(&multi(b"+OK", CAPA_PLAIN));
        assert!(matches!(wire.pump(&mut session, &mut job), Pumped::Starved));
        assert_eq!(wire.take_written(), b"LIST\r\n");
        wire.serve(&multi(b"+OK 3 messages", LISTING));
        assert!(matches!(wire.pump(&mut session, &mut job), Pumped::Starved));
        assert_eq!(wire.take_written(), b"UIDL\r\n");
        wire.serve(&multi(b"+OK", UIDS));
        assert_eq!(job_messages(&mut wire, &mut session, &mut job), listed());
        // Known capabilities: no CAPA the second time.
        wire.serve(&multi(b"+OK", LISTING));
        wire.serve(&multi(b"+OK", UIDS));
        assert_eq!(messages(&mut wire, &mut session).unwrap(), listed());
        assert_eq!(wire.take_written(), b"LIST\r\nUIDL\r\n");
    }
}

#[test]
fn messages_with_pipelining_sends_list_and_uidl_together() {
    for split in SPLITS {
        let mut wire = Wire::new(split);
        let mut session = greeted(&mut wire);
        let mut job = session.start(Request::Messages).unwrap();
        assert!(matches!(wire.pump(&mut session, &mut job), Pumped::Starved));
        assert_eq!(wire.take_written(), b"CAPA\r\n");
        wire.serve(&multi(b"+OK", CAPA_PIPELINING));
        assert!(matches!(wire.pump(&mut session, &mut job), Pumped::Starved));
        assert_eq!(wire.take_written(), b"LIST\r\nUIDL\r\n");
        wire.serve(&multi(b"+OK 3 messages", LISTING));
        wire.serve(&multi(b"+OK", UIDS));
        assert_eq!(job_messages(&mut wire, &mut session, &mut job), listed());
    }
}

#[test]
fn messages_list_err_consumes_the_pipelined_uidl() {
    for split in SPLITS {
        let mut wire = Wire::new(split);
        let mut session = with_caps(&mut wire, true);
        wire.serve(b"-ERR [SYS/TEMP] try later\r\n");
        wire.serve(&multi(b"+OK", &[b"1 +OK fake", b"2 -ERR fake"]));
        wire.serve(b"+OK 0 0\r\n");
        assert_eq!(
            messages(&mut wire, &mut session),
            Err(ProtoError::ServerError(
                b"-ERR [SYS/TEMP] try later".to_vec()
            ))
        );
        assert!(session.closed().is_none());
        assert_eq!(
            wire.command(&mut session, b"STAT", Expect::Status),
            status(b"+OK 0 0")
        );
        assert_eq!(wire.take_written(), b"LIST\r\nUIDL\r\nSTAT\r\n");
    }
    // Without pipelining UIDL is never sent after a LIST -ERR.
    let mut wire = Wire::new(Split::Whole);
    let mut session = with_caps(&mut wire, false);
    wire.serve(b"-ERR no\r\n+OK 0 0\r\n");
    assert_eq!(
        messages(&mut wire, &mut session),
        Err(ProtoError::ServerError(b"-ERR no".to_vec()))
    );
    assert_eq!(
        wire.command(&mut session, b"STAT", Expect::Status),
        status(b"+OK 0 0")
    );
    assert_eq!(wire.take_written(), b"LIST\r\nSTAT\r\n");
}

#[test]
fn messages_from_a_server_without_uidl() {
    for pipelining in [false, true] {
        for split in SPLITS {
            let mut wire = Wire::new(split);
            let mut session = with_caps(&mut wire, pipelining);
            wire.serve(&multi(b"+OK", &[b"1 10", b"2 20"]));
            wire.serve(b"-ERR unknown command\r\n");
            assert_eq!(
                messages(&mut wire, &mut session).unwrap(),
                vec![(1, 10, None), (2, 20, None)]
            );
            wire.serve(b"+OK\r\n");
            assert_eq!(
                wire.command(&mut session, b"NOOP", Expect::Status),
                status(b"+OK")
            );
        }
    }
}

#[test]
fn messages_with_text_after_the_size_and_partial_uidl() {
    let mut wire = Wire::new(Split::Random(4));
    let mut session = with_caps(&mut wire, true);
    wire.serve(&multi(
        b"+OK",
        &[b"1 120 (Subject: hello)", b"2  300   extra words", b"3 7"],
    ));
    // A UIDL listing that misses message 2 and has extra spaces.
    wire.serve(&multi(b"+OK", &[b"1  aaa", b"3 ccc"]));
    let rows = messages(&mut wire, &mut session).unwrap();
    assert_eq!(
        rows,
        vec![
            (1, 120, Some(b"aaa".to_vec())),
            (2, 300, None),
            (3, 7, Some(b"ccc".to_vec()))
        ]
    );
    wire.serve(&multi(b"+OK", &[]));
    wire.serve(&multi(b"+OK", &[]));
    assert_eq!(messages(&mut wire, &mut session).unwrap(), vec![]);
}

#[test]
fn messages_malformed_list_line_shows_it() {
    for bad in [&b"1 twelve"[..], b"x 12", b"1", b"-1 12", b"1 +12"] {
        let mut wire = Wire::new(Split::Random(8));
        let mut session = with_caps(&mut wire, false);
        wire.serve(&multi(b"+OK", &[b"1 10", bad, b"3 30"]));
        match messages(&mut wire, &mut session) {
            Err(ProtoError::Malformed(text)) => {
                let shown = String::from_utf8_lossy(bad);
                assert!(
                    text.contains("LIST") && text.contains(&format!("\"{shown}\"")),
                    "{text}"
                );
            }
            other => panic!("{:?}: {other:?}", String::from_utf8_lossy(bad)),
        }
    }
}

/// A malformed LIST line is a content error, not a loss of framing: the reply (and the
/// pipelined UIDL) are read whole, so the session could go on, and must, or the DELEs sent
/// before are lost (no QUIT, no UPDATE state).
#[test]
fn messages_malformed_line_leaves_the_session_usable() {
    for pipelining in [false, true] {
        let mut wire = Wire::new(Split::Whole);
        let mut session = with_caps(&mut wire, pipelining);
        wire.serve(b"+OK deleted\r\n");
        assert_eq!(
            wire.command(&mut session, b"DELE 1", Expect::Status),
            status(b"+OK deleted")
        );
        wire.serve(&multi(b"+OK", &[b"1 ten"]));
        if pipelining {
            wire.serve(&multi(b"+OK", &[b"1 uid"]));
        }
        assert!(matches!(
            messages(&mut wire, &mut session),
            Err(ProtoError::Malformed(_))
        ));
        wire.serve(b"+OK bye\r\n");
        assert_eq!(
            wire.command(&mut session, b"QUIT", Expect::Status),
            status(b"+OK bye")
        );
        assert_eq!(session.state(), State::Update);
    }
}

// ---------------------------------------------------------------------------------------------
// STLS, AUTH, QUIT.

#[test]
fn stls_ok_then_handshake() {
    for split in SPLITS {
        let mut wire = Wire::new(split);
        let mut session = with_caps(&mut wire, true);
        wire.serve(b"+OK begin TLS\r\n");
        let mut job = session.start(Request::StartTls).unwrap();
        assert!(matches!(
            wire.pump(&mut session, &mut job),
            Pumped::Handshake
        ));
        assert_eq!(wire.take_written(), b"STLS\r\n");
        assert!(!session.tls());
        // Until the driver says the handshake is done, the job keeps asking for it.
        assert!(matches!(session.step(&mut job), Ok(Step::Handshake)));
        session.tls_started();
        assert!(session.tls());
        assert!(
            session.capabilities().is_none(),
            "RFC 2595 §4: capabilities are asked again after TLS"
        );
        match wire.pump(&mut session, &mut job) {
            Pumped::Done(Done::Reply(outcome)) => assert_eq!(r(outcome), status(b"+OK begin TLS")),
            other => panic!("{other:?}"),
        }
        assert!(is_usage(session.start(Request::StartTls)));
        wire.serve(b"+OK\r\n");
        assert_eq!(
            wire.command(&mut session, b"NOOP", Expect::Status),
            status(b"+OK")
        );
    }
}

#[test]
fn stls_plaintext_after_ok_is_an_injection() {
    let mut wire = Wire::new(Split::Whole);
    let mut session = greeted(&mut wire);
    wire.serve(b"+OK begin TLS\r\n+OK injected\r\n");
    match wire.run(&mut session, Request::StartTls) {
        Ok(Done::Reply(Err(ProtoError::StlsInjection(n)))) => {
            assert_eq!(n, b"+OK injected\r\n".len())
        }
        other => panic!("{other:?}"),
    }
    assert!(!session.tls());
    assert_eq!(
        session.closed(),
        Some(Closed::Failed(ProtoError::StlsInjection(14).to_string()))
    );
    assert_eq!(
        session.start(cmd(b"NOOP", Expect::Status)).unwrap_err(),
        closed_with(&ProtoError::StlsInjection(14))
    );
}

#[test]
fn stls_err_leaves_plaintext_session() {
    let mut wire = Wire::new(Split::Bytewise);
    let mut session = greeted(&mut wire);
    wire.serve(b"-ERR not now\r\n+OK\r\n");
    assert_eq!(
        wire.reply(&mut session, Request::StartTls),
        server_err(b"-ERR not now")
    );
    assert!(!session.tls());
    assert_eq!(
        wire.command(&mut session, b"NOOP", Expect::Status),
        status(b"+OK")
    );
}

#[test]
fn auth_exchange() {
    for split in SPLITS {
        let mut wire = Wire::new(split);
        let mut session = greeted(&mut wire);
        session.set_trace(true);
        wire.serve(b"+ \r\n");
        assert_eq!(
            wire.reply(&mut session, secret(b"AUTH PLAIN")),
            status(b"+ ")
        );
        // Open: only SASL responses (secret or raw lines) may be sent.
        let batch = session
            .batch_lines(vec![b"NOOP".to_vec()], Expect::Status)
            .unwrap();
        assert!(is_usage(session.start(cmd(b"NOOP", Expect::Status))));
        assert!(is_usage(session.start(Request::Capa)));
        assert!(is_usage(session.start(Request::Messages)));
        assert!(is_usage(session.start(Request::StartTls)));
        assert!(is_usage(session.start(Request::BatchNext { id: batch })));
        assert!(is_usage(session.start(Request::StreamOpen {
            command: typed(b"RETR 1", Expect::Lines)
        })));
        assert_eq!(session.outgoing(), b"", "a refused request sends nothing");
        session.drop_batch(batch);
        // A continuation keeps it open; a raw line (poplib's `_shortcmd`) is a response too.
        wire.serve(b"+ VXNlcm5hbWU6\r\n");
        assert_eq!(
            wire.reply(&mut session, raw(b"AGJvYg==")),
            status(b"+ VXNlcm5hbWU6")
        );
        assert!(is_usage(session.start(cmd(b"NOOP", Expect::Status))));
        assert_eq!(session.state(), State::Authorization);
        // +OK closes it and logs in.
        wire.serve(b"+OK Maildrop ready\r\n");
        assert_eq!(
            wire.reply(&mut session, secret(b"AHNlY3JldA==")),
            status(b"+OK Maildrop ready")
        );
        assert_eq!(session.state(), State::Transaction);
        assert_eq!(
            wire.take_written(),
            b"AUTH PLAIN\r\nAGJvYg==\r\nAHNlY3JldA==\r\n"
        );
        let sent: Vec<Vec<u8>> = session
            .take_trace()
            .into_iter()
            .filter(|(sent, _)| *sent)
            .map(|(_, l)| l)
            .collect();
        assert_eq!(
            sent,
            vec![b"AUTH PLAIN".to_vec(), b"****".to_vec(), b"****".to_vec()]
        );
        wire.serve(b"+OK\r\n");
        assert_eq!(
            wire.command(&mut session, b"NOOP", Expect::Status),
            status(b"+OK")
        );
    }
}

/// SASL by hand through poplib's `_putcmd` / `_getresp`: `Put` then `Claim`.
#[test]
fn auth_exchange_with_put_and_claim() {
    let mut wire = Wire::new(Split::Whole);
    let mut session = greeted(&mut wire);
    wire.serve(b"+ \r\n+OK welcome\r\n");
    let put = |line: &[u8]| put(line);
    let claim = || Request::Claim {
        expect: Expect::Status,
    };
    assert!(matches!(
        wire.run(&mut session, put(b"AUTH PLAIN")),
        Ok(Done::Sent)
    ));
    assert_eq!(wire.reply(&mut session, claim()), status(b"+ "));
    assert!(matches!(
        wire.run(&mut session, put(b"AGJvYgBzZWNyZXQ=")),
        Ok(Done::Sent)
    ));
    assert_eq!(wire.reply(&mut session, claim()), status(b"+OK welcome"));
    assert_eq!(session.state(), State::Transaction);
}

#[test]
fn auth_rejected_or_cancelled_closes_the_exchange() {
    let mut wire = Wire::new(Split::Random(6));
    let mut session = greeted(&mut wire);
    wire.serve(b"+ \r\n-ERR [AUTH] invalid\r\n");
    assert_eq!(
        wire.reply(&mut session, secret(b"AUTH PLAIN")),
        status(b"+ ")
    );
    assert_eq!(
        wire.reply(&mut session, secret(b"AGJvYgB4")),
        server_err(b"-ERR [AUTH] invalid")
    );
    assert_eq!(session.state(), State::Authorization);
    wire.serve(b"+\r\n-ERR cancelled\r\n");
    assert_eq!(
        wire.reply(&mut session, secret(b"AUTH LOGIN")),
        status(b"+")
    );
    assert!(is_usage(session.start(cmd(b"NOOP", Expect::Status))));
    assert_eq!(
        wire.reply(&mut session, secret(b"*")),
        server_err(b"-ERR cancelled")
    );
    assert_eq!(session.state(), State::Authorization);
    // An AUTH refused at once never opens an exchange.
    wire.serve(b"-ERR unsupported\r\n+OK\r\n");
    assert_eq!(
        wire.reply(&mut session, secret(b"AUTH X-UNKNOWN")),
        server_err(b"-ERR unsupported")
    );
    assert_eq!(
        wire.command(&mut session, b"NOOP", Expect::Status),
        status(b"+OK")
    );
    // An initial response answered +OK at once logs in.
    wire.serve(b"+OK welcome\r\n");
    assert_eq!(
        wire.reply(&mut session, secret(b"AUTH PLAIN AGJvYgBzZWNyZXQ=")),
        status(b"+OK welcome")
    );
    assert_eq!(session.state(), State::Transaction);
}

#[test]
fn quit_moves_to_update_and_refuses_more() {
    for split in SPLITS {
        let mut wire = Wire::new(split);
        let mut session = greeted(&mut wire);
        wire.serve(b"-ERR not yet\r\n");
        assert_eq!(
            wire.command(&mut session, b"QUIT", Expect::Status),
            server_err(b"-ERR not yet")
        );
        assert_eq!(session.state(), State::Authorization);
        wire.serve(b"+OK bye\r\n");
        assert_eq!(
            wire.command(&mut session, b"quit", Expect::Status),
            status(b"+OK bye")
        );
        assert_eq!(session.state(), State::Update);
        assert!(is_usage(session.start(cmd(b"NOOP", Expect::Status))));
        assert!(is_usage(session.start(put(b"NOOP"))));
        assert!(is_usage(session.start(Request::Messages)));
        assert!(is_usage(session.start(Request::Capa)));
        assert_eq!(session.outgoing(), b"");
    }
}

// ---------------------------------------------------------------------------------------------
// Broken connections and limits.

#[test]
fn eof_mid_reply_breaks_the_session() {
    let reply = multi(b"+OK", &[b"a", b"b"]);
    for cut in 0..reply.len() {
        let mut wire = Wire::new(Split::Random(cut as u64));
        let mut session = greeted(&mut wire);
        wire.serve(&reply[..cut]);
        let mut job = session.start(cmd(b"RETR 1", Expect::Lines)).unwrap();
        assert!(matches!(wire.pump(&mut session, &mut job), Pumped::Starved));
        let _ = session.read_buf();
        assert_eq!(session.received(0), Err(ProtoError::Closed));
        let gone = closed_with(&ProtoError::Closed);
        assert_eq!(session.step(&mut job).unwrap_err(), gone);
        assert_eq!(
            session.closed(),
            Some(Closed::Failed(ProtoError::Closed.to_string()))
        );
        assert_eq!(
            session.start(cmd(b"NOOP", Expect::Status)).unwrap_err(),
            gone
        );
        let claim = Request::Claim {
            expect: Expect::Status,
        };
        assert_eq!(session.start(claim).unwrap_err(), gone);
    }
}

/// What every request gets once `err` closed the session.
fn closed_with(err: &ProtoError) -> ProtoError {
    ProtoError::NotConnected(Closed::Failed(err.to_string()).to_string())
}

#[test]
fn closed_keeps_the_first_reason_and_only_fatal_errors_close() {
    let session = Session::new(Limits::default());
    // The one policy: a -ERR, a refused argument or request leave the session usable.
    for usable in [
        ProtoError::ServerError(b"-ERR no".to_vec()),
        ProtoError::InvalidArgument("bad".into()),
        ProtoError::Usage("not now".into()),
    ] {
        session.fail(&usable);
        assert_eq!(session.closed(), None, "{usable:?}");
    }
    session.fail(&ProtoError::Closed);
    session.close(Closed::ByCaller);
    session.fail(&ProtoError::Malformed("later".into()));
    assert_eq!(
        session.closed(),
        Some(Closed::Failed(ProtoError::Closed.to_string()))
    );
    // The connection's cell is the same value: a close from there is seen by the session.
    let other = Session::new(Limits::default());
    other.closed_cell().close(Closed::Cancelled);
    let mut other = other;
    assert_eq!(
        other
            .start(Request::Claim {
                expect: Expect::Status
            })
            .unwrap_err(),
        ProtoError::NotConnected(Closed::Cancelled.to_string())
    );
}

#[test]
fn status_line_too_long() {
    let limits = Limits {
        max_status_line: 32,
        ..Limits::default()
    };
    // 32 bytes with CRLF pass; 33 fail, also before the LF has arrived.
    let ok = [&b"+OK "[..], &[b'x'; 26], b"\r\n"].concat();
    assert_eq!(ok.len(), 32);
    let long = [&b"+OK "[..], &[b'x'; 27], b"\r\n"].concat();
    for split in SPLITS {
        let mut wire = Wire::new(split);
        let mut session = greeted_with(&mut wire, limits);
        wire.serve(&ok);
        assert_eq!(
            wire.run(&mut session, cmd(b"NOOP", Expect::Status))
                .map(|d| match d {
                    Done::Reply(o) => r(o),
                    other => panic!("{other:?}"),
                }),
            Ok(status(&ok[..30])),
            "{split:?}"
        );
        wire.serve(&long);
        let err = ProtoError::LineTooLong {
            what: "status",
            limit: 32,
        };
        assert_eq!(
            wire.run(&mut session, cmd(b"NOOP", Expect::Status))
                .unwrap_err(),
            err
        );
        assert_eq!(session.closed(), Some(Closed::Failed(err.to_string())));
        let mut wire = Wire::new(split);
        let mut session = greeted_with(&mut wire, limits);
        wire.serve(&[b'+'; 40]);
        assert_eq!(
            wire.run(&mut session, cmd(b"NOOP", Expect::Status))
                .unwrap_err(),
            err
        );
    }
}

#[test]
fn data_line_too_long() {
    let limits = Limits {
        max_line_length: 16,
        ..Limits::default()
    };
    let mut wire = Wire::new(Split::Random(12));
    let mut session = greeted_with(&mut wire, limits);
    wire.serve(&multi(b"+OK", &[&[b'a'; 14]]));
    assert_eq!(
        wire.command(&mut session, b"RETR 1", Expect::Lines),
        lines_of(b"+OK", &[&[b'a'; 14]])
    );
    wire.serve(&multi(b"+OK", &[&[b'a'; 15]]));
    let err = ProtoError::LineTooLong {
        what: "message",
        limit: 16,
    };
    assert_eq!(
        wire.run(&mut session, cmd(b"RETR 1", Expect::Bytes))
            .unwrap_err(),
        err
    );
    assert_eq!(
        session.start(cmd(b"NOOP", Expect::Status)).unwrap_err(),
        closed_with(&err)
    );
}

/// `max_response_size` bounds octets plus `LINE_COST` per line for `Lines`, octets alone for `Bytes`.
#[test]
fn response_too_large_counts_line_cost() {
    let body: Vec<&[u8]> = vec![b"0123456789"; 10];
    // Each line: 12 octets, plus 64 as a Lines reply.
    let lines_cost = 10 * (12 + LINE_COST);
    for (expect, cost) in [(Expect::Lines, lines_cost), (Expect::Bytes, 120)] {
        for (max, fits) in [(cost, true), (cost - 1, false)] {
            let mut wire = Wire::new(Split::Random(max as u64));
            let mut session = greeted_with(
                &mut wire,
                Limits {
                    max_response_size: max,
                    ..Limits::default()
                },
            );
            wire.serve(&multi(b"+OK", &body));
            let got = wire.run(&mut session, cmd(b"RETR 1", expect));
            if fits {
                assert!(
                    matches!(got, Ok(Done::Reply(Ok(_)))),
                    "{expect:?} at {max}: {got:?}"
                );
            } else {
                assert_eq!(
                    got.unwrap_err(),
                    ProtoError::ResponseTooLarge { limit: max }
                );
                assert!(session.closed().is_some());
            }
        }
    }
}

/// A LIST of many short lines is bounded by what its lines cost, not by its wire size.
#[test]
fn listing_of_many_short_lines_is_bounded() {
    let max_response_size = 100 * 1024;
    let count = max_response_size / (LINE_COST + 5) + 1;
    let listing: Vec<Vec<u8>> = (0..count)
        .map(|i| format!("{} 1", i % 10).into_bytes())
        .collect();
    let wire_size: usize = listing.iter().map(|l| l.len() + 2).sum();
    assert!(
        wire_size < max_response_size / 10,
        "the wire size alone would pass"
    );
    let mut wire = Wire::new(Split::Whole);
    let mut session = greeted_with(
        &mut wire,
        Limits {
            max_response_size,
            ..Limits::default()
        },
    );
    wire.serve(&multi(
        b"+OK",
        &listing.iter().map(Vec::as_slice).collect::<Vec<_>>(),
    ));
    assert_eq!(
        wire.run(&mut session, cmd(b"LIST", Expect::Lines))
            .unwrap_err(),
        ProtoError::ResponseTooLarge {
            limit: max_response_size
        }
    );
    // The same through messages().
    let mut wire = Wire::new(Split::Whole);
    let mut session = greeted_with(
        &mut wire,
        Limits {
            max_response_size,
            ..Limits::default()
        },
    );
    wire.serve(&multi(b"+OK", &[b"PIPELINING"]));
    wire.serve(&multi(
        b"+OK",
        &listing.iter().map(Vec::as_slice).collect::<Vec<_>>(),
    ));
    assert_eq!(
        messages(&mut wire, &mut session),
        Err(ProtoError::ResponseTooLarge {
            limit: max_response_size
        })
    );
}

#[test]
fn capa_has_its_own_small_cap() {
    // With the default (huge) max_response_size, CAPA is still held to MAX_CAPA.
    // Each "TOP" line: 5 octets with its CRLF, plus LINE_COST.
    let per_line = 5 + LINE_COST;
    let fits = MAX_CAPA / per_line;
    for (count, ok) in [(fits, true), (fits + 1, false)] {
        for request in [0, 1, 2] {
            let mut wire = Wire::new(Split::Random(count as u64));
            let mut session = greeted(&mut wire);
            let capa: Vec<&[u8]> = vec![b"TOP"; count];
            wire.serve(&multi(b"+OK", &capa));
            let got = match request {
                0 => wire.run(&mut session, Request::Capa),
                1 => {
                    wire.serve(&multi(b"+OK", &[]));
                    wire.serve(&multi(b"+OK", &[]));
                    wire.run(&mut session, Request::Messages)
                }
                _ => {
                    let id = session.batch_lines(vec![], Expect::Status).unwrap();
                    wire.run(&mut session, Request::BatchNext { id })
                }
            };
            if ok {
                assert!(got.is_ok(), "{count} lines: {got:?}");
                assert!(session.capabilities().unwrap().top);
            } else {
                assert_eq!(
                    got.unwrap_err(),
                    ProtoError::ResponseTooLarge { limit: MAX_CAPA }
                );
            }
        }
    }
}

#[test]
fn a_secret_the_server_echoes_is_masked_in_the_trace() {
    let mut wire = Wire::new(Split::Whole);
    let mut session = greeted(&mut wire);
    session.set_trace(true);
    wire.serve(b"+OK\r\n-ERR wrong password Sup3rS3cret!\r\n");
    wire.command(&mut session, b"USER me", Expect::Status);
    wire.command(&mut session, b"PASS Sup3rS3cret!", Expect::Status);
    let trace = session.take_trace();
    assert!(
        trace
            .iter()
            .all(|(_, line)| memchr::memmem::find(line, b"Sup3rS3cret").is_none()),
        "{trace:?}"
    );
    assert!(
        trace.contains(&(false, b"-ERR wrong password ****".to_vec())),
        "{trace:?}"
    );
}

#[test]
fn typed_commands_are_admitted_by_what_they_are() {
    let mut wire = Wire::new(Split::Whole);
    let mut session = greeted(&mut wire);
    let request = |command| Request::Command {
        command,
        collect: Collect::Lines,
    };
    // A SASL answer outside an exchange, STLS without its handshake, a status-line command as
    // a stream: refused, nothing sent, the session usable.
    let answer = Command::SaslResponse(Secret::new(*b"c2VjcmV0"));
    assert!(is_usage(session.start(request(answer))));
    assert!(is_usage(session.start(request(Command::SaslCancel))));
    assert!(is_usage(session.start(request(Command::Stls))));
    assert!(is_usage(session.start(Request::StreamOpen {
        command: Command::Noop
    })));
    assert!(matches!(
        session.batch(vec![Command::Pass(Secret::new(*b"pw12"))], Collect::Lines),
        Err(ProtoError::Usage(_))
    ));
    assert!(session.outgoing().is_empty());
    assert_eq!(session.closed(), None);
    // A login step's -ERR is an ordinary reply the job says is a login step's.
    wire.serve(b"-ERR no\r\n");
    let job = session
        .start(request(Command::User(b"bob".to_vec())))
        .unwrap();
    assert!(job.is_login_step());
    let mut job = job;
    assert!(matches!(
        wire.pump(&mut session, &mut job),
        Pumped::Done(Done::Reply(Err(ProtoError::ServerError(_))))
    ));
    assert!(!session
        .start(request(Command::raw(b"USER bob".to_vec(), None)))
        .unwrap()
        .is_login_step());
}
