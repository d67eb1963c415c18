//! Property tests of the sans-IO core (DESIGN.md §6). Whether the bytes arrive whole, byte by
//! byte or cut anywhere, the framer gives exactly what CPython's poplib gives; dot-stuffing
//! round-trips; limits fail exactly where a limit is crossed; command encoding cannot carry an
//! injected line; the parsers of untrusted greeting and CAPA text never panic.

use _core::proto::capa::parse_capa;
use _core::proto::command::{Command, Secret};
use _core::proto::greeting::{apop_timestamp, MAX_TIMESTAMP_LEN};
use _core::proto::response::{
    check_status, BodyDecoder, BodySink, BytesSink, Limits, LineReader, LinesSink, LINE_COST,
};
use _core::proto::session::{Collect, Session};
use _core::proto::ProtoError;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;

/// What the client expects next: a one-line reply (USER, DELE...) or a multi-line one (RETR...).
#[derive(Debug, Clone, Copy)]
enum Kind {
    Single,
    Multi,
}

/// One reply as the caller sees it; `T` is the body as the sink delivers it.
#[derive(Debug, PartialEq)]
enum Event<T> {
    Status(Vec<u8>),
    Body(Vec<u8>, T, usize),
    /// `-ERR` (the session goes on) or a broken limit (the session ends).
    Error(ProtoError),
}

type Lines = Vec<Vec<u8>>;

// ---------------------------------------------------------------------------------------------
// The reference: CPython's poplib, transcribed as plainly as possible. The limits are poplib's
// `_MAXLINE` check split in two, plus a cap that poplib lacks on what a body costs in memory:
// its octets plus `line_cost` per line (the sink's `BodySink::line_cost`: `LINE_COST` for
// `LinesSink`, 0 for `BytesSink`).

/// `_getline` on what has arrived so far: `Ok(None)` when no LF has come yet (poplib would block).
fn getline(
    rest: &mut &[u8],
    limit: usize,
    what: &'static str,
) -> Result<Option<(Vec<u8>, usize)>, ProtoError> {
    let end = rest
        .iter()
        .position(|&b| b == b'\n')
        .map_or(rest.len(), |i| i + 1);
    // readline(_MAXLINE + 1), then "line too long" if it returned more than _MAXLINE.
    if end.min(limit + 1) > limit {
        return Err(ProtoError::LineTooLong { what, limit });
    }
    let line = &rest[..end];
    if !line.ends_with(b"\n") {
        return Ok(None);
    }
    *rest = &rest[end..];
    let content = if line.ends_with(b"\r\n") {
        &line[..end - 2]
    } else if line.starts_with(b"\r") {
        &line[1..end - 1]
    } else {
        &line[..end - 1]
    };
    Ok(Some((content.to_vec(), end)))
}

/// `_getresp` / `_getlongresp` for each expected reply, until the stream runs out.
fn model(stream: &[u8], script: &[Kind], limits: &Limits, line_cost: usize) -> Vec<Event<Lines>> {
    let mut events = Vec::new();
    if let Err(e) = model_replies(stream, script, limits, line_cost, &mut events) {
        events.push(Event::Error(e));
    }
    events
}

fn model_replies(
    mut rest: &[u8],
    script: &[Kind],
    limits: &Limits,
    line_cost: usize,
    events: &mut Vec<Event<Lines>>,
) -> Result<(), ProtoError> {
    for kind in script {
        let Some((resp, _)) = getline(&mut rest, limits.max_status_line, "status")? else {
            return Ok(());
        };
        if !resp.starts_with(b"+") {
            events.push(Event::Error(ProtoError::ServerError(resp)));
            continue;
        }
        if let Kind::Single = kind {
            events.push(Event::Status(resp));
            continue;
        }
        let (mut list, mut octets, mut cost) = (Vec::new(), 0, 0);
        loop {
            let Some((mut line, mut o)) = getline(&mut rest, limits.max_line_length, "message")?
            else {
                return Ok(());
            };
            if line == b"." {
                break;
            }
            if line.starts_with(b"..") {
                o -= 1;
                line.remove(0);
            }
            octets += o;
            cost += o + line_cost;
            if cost > limits.max_response_size {
                return Err(ProtoError::ResponseTooLarge {
                    limit: limits.max_response_size,
                });
            }
            list.push(line);
        }
        events.push(Event::Body(resp, list, octets));
    }
    Ok(())
}

/// The model's bodies as a `BytesSink` delivers them: every line followed by CRLF.
fn as_text(events: Vec<Event<Lines>>) -> Vec<Event<Vec<u8>>> {
    events
        .into_iter()
        .map(|e| match e {
            Event::Status(s) => Event::Status(s),
            Event::Body(s, lines, octets) => Event::Body(
                s,
                lines
                    .iter()
                    .flat_map(|l| [l.as_slice(), b"\r\n"].concat())
                    .collect(),
                octets,
            ),
            Event::Error(e) => Event::Error(e),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Our core, driven the way the transports drive it: feed whatever arrived, then take every
// event the buffered bytes allow; a body's decoder keeps its progress across pieces.

/// A sink the driver empties whenever decoding pauses or a body ends.
trait Drain: BodySink {
    type Body: Default;
    fn drain(&mut self, into: &mut Self::Body);
}

impl Drain for LinesSink {
    type Body = Lines;
    fn drain(&mut self, into: &mut Lines) {
        into.extend(self.lines().map(<[u8]>::to_vec));
        *self = LinesSink::default();
    }
}

impl Drain for BytesSink {
    type Body = Vec<u8>;
    fn drain(&mut self, into: &mut Vec<u8>) {
        if let Some(chunk) = self.chunk {
            // Decoding must pause as soon as the sink holds a chunk: only the last line may
            // take it past `chunk` (lines hold no LF, so the previous LF ends the one before).
            let last_line = self.data[..self.data.len().saturating_sub(1)]
                .iter()
                .rposition(|&b| b == b'\n');
            assert!(
                last_line.map_or(0, |i| i + 1) < chunk,
                "decoding went on past a full sink"
            );
        }
        into.append(&mut self.data);
    }
}

struct Client<'s, S: Drain> {
    reader: LineReader,
    limits: Limits,
    script: &'s [Kind],
    body: Option<(Vec<u8>, BodyDecoder, S::Body)>,
    sink: S,
    events: Vec<Event<S::Body>>,
}

impl<S: Drain> Client<'_, S> {
    /// Takes every event the buffered bytes allow; an error ends the session.
    fn step(&mut self) -> Result<(), ProtoError> {
        loop {
            if let Some((_, decoder, body)) = &mut self.body {
                match decoder.advance(&mut self.reader, &self.limits, &mut self.sink)? {
                    Some(octets) => {
                        self.sink.drain(body);
                        let (status, _, body) = self.body.take().expect("in a body");
                        self.events.push(Event::Body(status, body, octets));
                    }
                    None if self.sink.full() => self.sink.drain(body),
                    None => return Ok(()),
                }
            } else {
                let Some((&kind, later)) = self.script.split_first() else {
                    return Ok(());
                };
                let Some(raw) = self
                    .reader
                    .next_raw_line(self.limits.max_status_line, "status")?
                else {
                    return Ok(());
                };
                let status = self.reader.content(raw).to_vec();
                self.script = later;
                match (check_status(&status), kind) {
                    (Err(e), _) => self.events.push(Event::Error(e)),
                    (Ok(()), Kind::Single) => self.events.push(Event::Status(status)),
                    (Ok(()), Kind::Multi) => {
                        self.body = Some((status, BodyDecoder::new(), S::Body::default()))
                    }
                }
            }
        }
    }
}

fn run<S: Drain>(
    pieces: &[&[u8]],
    script: &[Kind],
    limits: &Limits,
    sink: S,
) -> Vec<Event<S::Body>> {
    let mut client = Client {
        reader: LineReader::new(),
        limits: *limits,
        script,
        body: None,
        sink,
        events: Vec::new(),
    };
    for piece in pieces {
        client.reader.feed(piece);
        if let Err(e) = client.step() {
            client.events.push(Event::Error(e));
            break;
        }
    }
    client.events
}

fn lines(pieces: &[&[u8]], script: &[Kind], limits: &Limits) -> Vec<Event<Lines>> {
    run(pieces, script, limits, LinesSink::default())
}

/// With `chunk`, the sink pauses decoding every `chunk` bytes, as streaming retrieval does.
fn text(
    pieces: &[&[u8]],
    script: &[Kind],
    limits: &Limits,
    chunk: Option<usize>,
) -> Vec<Event<Vec<u8>>> {
    run(
        pieces,
        script,
        limits,
        chunk.map_or_else(BytesSink::default, BytesSink::chunked),
    )
}

/// `stream` cut at the given points (taken modulo its length).
fn split<'a>(stream: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
    points.sort_unstable();
    points.push(stream.len());
    let mut last = 0;
    points
        .into_iter()
        .map(|p| {
            let piece = &stream[last..p];
            last = p;
            piece
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Generators.

/// Content bytes, weighted toward those framing cares about (dots, CR, 8-bit, NUL); never LF.
fn content() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        4 => b' '..=b'~',
        2 => Just(b'.'),
        2 => Just(b'\r'),
        1 => any::<u8>().prop_filter("LF ends a line", |b| *b != b'\n'),
    ];
    prop_oneof![
        6 => vec(byte.clone(), 0..24),
        1 => vec(byte, 0..24).prop_map(|c| [&b".."[..], &c].concat()),
        1 => Just(Vec::new()),
    ]
}

/// What goes around a line's content: the three shapes poplib strips, `...CRLF` (listed twice:
/// the usual one), `...LF` and `CR...LF`.
fn line_end() -> impl Strategy<Value = (&'static [u8], &'static [u8])> {
    select(vec![
        (&b""[..], &b"\r\n"[..]),
        (b"", b"\r\n"),
        (b"", b"\n"),
        (b"\r", b"\n"),
    ])
}

/// A reply to RETR as a server might send it, more or less well-formed: a status line, body
/// lines, usually a terminator, maybe stray bytes after it.
fn reply() -> impl Strategy<Value = Vec<u8>> {
    let status = prop_oneof![
        Just(b"+OK 42 octets".to_vec()),
        Just(b"-ERR [IN-USE] locked".to_vec()),
        content().prop_map(|c| [&b"+"[..], &c].concat()),
        content(),
    ];
    let terminator = select(vec![&b".\r\n"[..], b".\r\n", b".\n", b"\r.\n", b""]);
    (
        status,
        line_end(),
        vec((content(), line_end()), 0..20),
        terminator,
        vec(any::<u8>(), 0..6),
    )
        .prop_map(|(status, (head, tail), body, terminator, stray)| {
            let mut s = [head, &status, tail].concat();
            for (c, (head, tail)) in body {
                s.extend([head, &c, tail].concat());
            }
            s.extend_from_slice(terminator);
            s.extend(stray);
            s
        })
}

/// One or two replies back to back, with the script of a client that sent one RETR per reply.
fn replies() -> impl Strategy<Value = (Vec<u8>, Vec<Kind>)> {
    vec(reply(), 1..3).prop_map(|r| (r.concat(), vec![Kind::Multi; r.len()]))
}

/// Message lines as a user wrote them: anything but CR and LF, often starting with a dot.
fn message(max_lines: usize, max_len: usize) -> impl Strategy<Value = Lines> {
    vec(
        prop_oneof![
            4 => vec(prop_oneof![any::<u8>(), Just(b'.')].prop_filter("no CR/LF", |b| !matches!(b, b'\r' | b'\n')), 0..max_len),
            1 => Just(b".".to_vec()),
            1 => Just(b"..".to_vec()),
        ],
        0..max_lines,
    )
}

fn chunk() -> impl Strategy<Value = Option<usize>> {
    prop_oneof![Just(None), (1usize..48).prop_map(Some)]
}

fn cuts() -> impl Strategy<Value = Vec<usize>> {
    vec(any::<usize>(), 0..8)
}

/// Dot-stuffs and CRLF-frames `message` as a server sends it, then checks that both sinks give
/// it back unchanged.
fn round_trip(message: Lines, cuts: &[usize], chunk: Option<usize>) -> Result<(), TestCaseError> {
    let mut wire = b"+OK\r\n".to_vec();
    for line in &message {
        if line.starts_with(b".") {
            wire.push(b'.');
        }
        wire.extend_from_slice(line);
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b".\r\n");
    // poplib counts the message as sent, unstuffed, with CRLF line ends.
    let octets = message.iter().map(|l| l.len() + 2).sum();
    let joined: Vec<u8> = message
        .iter()
        .flat_map(|l| [l.as_slice(), b"\r\n"].concat())
        .collect();
    let pieces = split(&wire, cuts);
    let limits = Limits::default();
    prop_assert_eq!(
        lines(&pieces, &[Kind::Multi], &limits),
        vec![Event::Body(b"+OK".to_vec(), message, octets)]
    );
    prop_assert_eq!(
        text(&pieces, &[Kind::Multi], &limits, chunk),
        vec![Event::Body(b"+OK".to_vec(), joined, octets)]
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// A realistic session; the expected events are what CPython 3.11's poplib returned for it.

const SESSION: &[u8] =
    b"+OK Dovecot (Debian) ready. <2e35.1.6b02ab74.d4LTXgzr8tCxZ1Ra+I6Mpg==@vm>\r\n\
+OK message follows\r\n\
Return-Path: <bob@example.org>\r\n\
Subject: =?utf-8?q?dots?=\r\n\
\r\n\
..leading dot\r\n\
...\r\n\
..\r\n\
.not stuffed\r\n\
bare LF\n\
\rCR first\n\
8-bit \xe9\xff\r\n\
\r\n\
.\r\n\
-ERR [IN-USE] mailbox locked\r\n\
+OK capability list follows\r\n\
TOP\r\nUIDL\r\nSASL PLAIN LOGIN\r\n.\r\n\
+OK bye\r\n";

/// Greeting, RETR, RETR refused, CAPA, QUIT.
const SESSION_SCRIPT: &[Kind] = &[
    Kind::Single,
    Kind::Multi,
    Kind::Multi,
    Kind::Multi,
    Kind::Single,
];

fn session_events() -> Vec<Event<Lines>> {
    let v = |lines: &[&[u8]]| lines.iter().map(|l| l.to_vec()).collect::<Lines>();
    vec![
        Event::Status(
            b"+OK Dovecot (Debian) ready. <2e35.1.6b02ab74.d4LTXgzr8tCxZ1Ra+I6Mpg==@vm>".to_vec(),
        ),
        Event::Body(
            b"+OK message follows".to_vec(),
            v(&[
                b"Return-Path: <bob@example.org>",
                b"Subject: =?utf-8?q?dots?=",
                b"",
                b".leading dot",
                b"..",
                b".",
                b".not stuffed",
                b"bare LF",
                b"CR first",
                b"8-bit \xe9\xff",
                b"",
            ]),
            126,
        ),
        Event::Error(ProtoError::ServerError(
            b"-ERR [IN-USE] mailbox locked".to_vec(),
        )),
        Event::Body(
            b"+OK capability list follows".to_vec(),
            v(&[b"TOP", b"UIDL", b"SASL PLAIN LOGIN"]),
            29,
        ),
        Event::Status(b"+OK bye".to_vec()),
    ]
}

#[test]
fn session_split_anywhere_gives_poplib_results() {
    let limits = Limits::default();
    let want = session_events();
    assert_eq!(
        model(SESSION, SESSION_SCRIPT, &limits, LINE_COST),
        want,
        "the model disagrees with poplib"
    );
    let bytewise: Vec<&[u8]> = SESSION.chunks(1).collect();
    assert_eq!(lines(&bytewise, SESSION_SCRIPT, &limits), want);
    let want_text = as_text(session_events());
    for at in 0..=SESSION.len() {
        let pieces = [&SESSION[..at], &SESSION[at..]];
        assert_eq!(
            lines(&pieces, SESSION_SCRIPT, &limits),
            want,
            "split at {at}"
        );
        assert_eq!(
            text(&pieces, SESSION_SCRIPT, &limits, Some(16)),
            want_text,
            "split at {at}"
        );
    }
}

#[test]
fn apop_timestamp_length_cap_is_exact() {
    for n in MAX_TIMESTAMP_LEN - 10..MAX_TIMESTAMP_LEN + 10 {
        // `<` + n atext + `@b>` is n + 4 bytes.
        let greeting = [&b"+OK ready <"[..], &vec![b'a'; n], b"@b>"].concat();
        assert_eq!(
            apop_timestamp(&greeting).is_ok(),
            n + 4 <= MAX_TIMESTAMP_LEN,
            "n = {n}"
        );
    }
}

// ---------------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_split_gives_poplib_results((stream, script) in replies(), cuts in cuts(), chunk in chunk()) {
        let limits = Limits::default();
        let want = model(&stream, &script, &limits, LINE_COST);
        let pieces = split(&stream, &cuts);
        let bytewise: Vec<&[u8]> = stream.chunks(1).collect();
        prop_assert_eq!(&lines(&[stream.as_slice()], &script, &limits), &want);
        prop_assert_eq!(&lines(&pieces, &script, &limits), &want);
        prop_assert_eq!(&lines(&bytewise, &script, &limits), &want);
        prop_assert_eq!(text(&pieces, &script, &limits, chunk), as_text(want));
    }

    #[test]
    fn limits_fail_exactly_where_crossed(
        (stream, script) in replies(),
        max_status_line in 0usize..40,
        max_line_length in 0usize..40,
        max_response_size in 0usize..2000,
        cuts in cuts(),
        arrived in proptest::option::of(any::<usize>()),
        chunk in chunk(),
    ) {
        let limits = Limits { max_status_line, max_line_length, max_response_size };
        // Often only part of the stream has arrived: a partial line must fail as soon as it is
        // over the limit, and not before.
        let stream = &stream[..arrived.map_or(stream.len(), |n| n % (stream.len() + 1))];
        // The model's events end in LineTooLong / ResponseTooLarge exactly where it crosses one.
        // `max_response_size` bounds octets plus the sink's per-line cost: `LINE_COST` per line when
        // kept as lines, nothing more when kept as bytes (whole or streamed in chunks).
        let want = model(stream, &script, &limits, LINE_COST);
        prop_assert_eq!(&lines(&[stream], &script, &limits), &want);
        prop_assert_eq!(&lines(&split(stream, &cuts), &script, &limits), &want);
        let want_text = as_text(model(stream, &script, &limits, 0));
        prop_assert_eq!(&text(&split(stream, &cuts), &script, &limits, chunk), &want_text);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn dot_stuffing_round_trips(message in message(30, 30), cuts in cuts(), chunk in chunk()) {
        round_trip(message, &cuts, chunk)?;
    }

    #[test]
    fn encoding_refuses_exactly_cr_lf_nul(
        args in vec(vec(prop_oneof![30 => any::<u8>(), 1 => select(vec![b'\r', b'\n', 0])], 0..20), 1..4),
    ) {
        let forbidden = |b: &u8| matches!(b, b'\r' | b'\n' | 0);
        // A message number is also one word: empty or blank, the server reads no argument.
        let refused = |arg: &[u8], word: bool| {
            arg.iter().any(forbidden) || (word && (arg.is_empty() || arg.iter().any(u8::is_ascii_whitespace)))
        };
        for arg in &args {
            let commands = [
                (Command::raw(arg.clone(), None), &b""[..], false),
                (Command::Retr(arg.clone()), b"RETR ", true),
                (Command::Pass(Secret::new(arg.clone())), b"PASS ", false),
            ];
            for (command, verb, word) in commands {
                let mut out = b"NOOP\r\n".to_vec();
                match command.encode(&mut out) {
                    Ok(()) => {
                        prop_assert!(!refused(arg, word));
                        prop_assert!(out.ends_with(b"\r\n"));
                        let line = &out[6..out.len() - 2];
                        prop_assert_eq!(line, &[verb, arg.as_slice()].concat()[..]);
                        prop_assert!(!line.iter().any(forbidden));
                    }
                    Err(ProtoError::InvalidArgument(_)) => {
                        prop_assert!(refused(arg, word));
                        prop_assert_eq!(&out, b"NOOP\r\n");
                    }
                    Err(e) => prop_assert!(false, "unexpected {:?}", e),
                }
            }
        }
        // A pipelined batch is all or nothing: checked whole before anything is queued.
        let mut session = Session::new(Limits::default());
        let batch = args.iter().map(|a| Command::Retr(a.clone())).collect();
        match session.batch(batch, Collect::Lines) {
            Ok(_) => prop_assert!(!args.iter().any(|a| refused(a, true))),
            Err(_) => prop_assert!(args.iter().any(|a| refused(a, true))),
        }
        prop_assert!(session.outgoing().is_empty());
    }

    #[test]
    fn apop_timestamp_is_a_bounded_slice_of_the_greeting(
        head in select(vec![&b"+OK "[..], b"+OK", b"-ERR ", b""]),
        tail in vec(prop_oneof![3 => select(b"<>@.[]\\\" +-=/a1".to_vec()), 1 => any::<u8>()], 0..80),
    ) {
        let greeting = [head, &tail].concat();
        match apop_timestamp(&greeting) {
            Ok(Some(stamp)) => {
                prop_assert!(stamp.starts_with(b"<") && stamp.ends_with(b">"));
                prop_assert!(stamp.len() <= MAX_TIMESTAMP_LEN);
                let within = greeting.as_ptr_range();
                prop_assert!(within.start <= stamp.as_ptr() && stamp.as_ptr_range().end <= within.end);
            }
            Ok(None) | Err(ProtoError::Malformed(_)) => {}
            Err(e) => prop_assert!(false, "unexpected {:?}", e),
        }
    }

    #[test]
    fn capa_keeps_every_line_whatever_its_bytes(
        body in vec(
            vec(
                prop_oneof![
                    6 => (b' '..=b'~').prop_map(|b| vec![b]),
                    2 => select(b"\t\r\x0b\x0c".to_vec()).prop_map(|b| vec![b]),
                    1 => Just("é".as_bytes().to_vec()),
                    1 => any::<u8>().prop_map(|b| vec![b]),
                ],
                0..30,
            ).prop_map(|pieces| pieces.concat()),
            0..10,
        ),
    ) {
        let caps = parse_capa(body.iter().map(Vec::as_slice));
        let non_blank = body
            .iter()
            .filter(|l| String::from_utf8_lossy(l).split_ascii_whitespace().next().is_some())
            .count();
        prop_assert_eq!(caps.list.len(), non_blank);
        for (name, args) in &caps.list {
            for word in std::iter::once(name).chain(args) {
                prop_assert!(!word.is_empty() && !word.contains(|c: char| c.is_ascii_whitespace()));
            }
        }
    }
}

proptest! {
    // Messages of hundreds of KB cut into large pieces: the reader's buffer grows to its
    // largest read size and compacts under load.
    #![proptest_config(ProptestConfig::with_cases(12))]

    #[test]
    fn big_messages_round_trip(
        (message, times) in (message(40, 400), 20usize..150),
        cuts in cuts(),
        chunk in prop_oneof![Just(None), Just(Some(64 * 1024))],
    ) {
        // Repeating a generated message is much cheaper than generating a big one.
        round_trip(std::iter::repeat_n(message, times).flatten().collect(), &cuts, chunk)?;
    }
}
