//! Property tests of the sans-IO core: whatever way the bytes are split, the results equal a
//! plain model of CPython poplib's reader; dot-stuffing round-trips; limits are exact.

use _core::proto::command::encode_line;
use _core::proto::response::{check_status, strip_line_end, BodyDecoder, BytesSink, LineReader, Limits, LinesSink};
use _core::proto::ProtoError;
use proptest::prelude::*;

/// poplib's `_getlongresp` on a complete stream, written as plainly as possible.
fn model(stream: &[u8]) -> Option<(Vec<u8>, Vec<Vec<u8>>, usize)> {
    let mut lines = stream.split_inclusive(|b| *b == b'\n');
    let strip = |raw: &[u8]| -> Vec<u8> {
        if raw.ends_with(b"\r\n") {
            raw[..raw.len() - 2].to_vec()
        } else if raw.first() == Some(&b'\r') {
            raw[1..raw.len() - 1].to_vec()
        } else {
            raw[..raw.len() - 1].to_vec()
        }
    };
    let status = strip(lines.next()?);
    let (mut body, mut octets) = (Vec::new(), 0);
    for raw in lines {
        if !raw.ends_with(b"\n") {
            return None;
        }
        let line = strip(raw);
        if line == b"." {
            return Some((status, body, octets));
        }
        if line.starts_with(b"..") {
            body.push(line[1..].to_vec());
            octets += raw.len() - 1;
        } else {
            body.push(line);
            octets += raw.len();
        }
    }
    None
}

/// Status line, body lines, octets, and the body rebuilt with CRLF.
type Decoded = (Vec<u8>, Vec<Vec<u8>>, usize, Vec<u8>);

/// Our decoder fed `pieces` one after another.
fn decode(pieces: &[&[u8]], limits: &Limits) -> Result<Option<Decoded>, ProtoError> {
    let mut reader = LineReader::new();
    let (mut status, mut decoder) = (None, BodyDecoder::new());
    let (mut lines, mut bytes) = (LinesSink::default(), BytesSink::default());
    let mut collected = Vec::new();
    for piece in pieces {
        reader.feed(piece);
        if status.is_none() {
            match reader.next_raw_line(limits.max_status_line, "status")? {
                Some(raw) => status = Some(reader.content(raw).to_vec()),
                None => continue,
            }
        }
        // Two sinks: decode into one, then mirror the new lines into the other.
        if let Some(octets) = decoder.advance(&mut reader, limits, &mut lines)? {
            for line in lines.lines() {
                collected.push(line.to_vec());
                bytes.data.extend_from_slice(line);
                bytes.data.extend_from_slice(b"\r\n");
            }
            return Ok(Some((status.unwrap(), collected, octets, bytes.data)));
        }
    }
    Ok(None)
}

fn line_strategy() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>().prop_filter("no LF", |b| *b != b'\n'), 0..40),
        Just(b".".to_vec()),
        Just(b"..".to_vec()),
        Just(b".x".to_vec()),
        Just(b"\r".to_vec()),
        Just(b"\r.".to_vec()),
    ]
}

fn ending() -> impl Strategy<Value = &'static [u8]> {
    prop_oneof![Just(&b"\r\n"[..]), Just(&b"\n"[..])]
}

fn stream_strategy() -> impl Strategy<Value = Vec<u8>> {
    (proptest::collection::vec((line_strategy(), ending()), 0..30), ending()).prop_map(|(lines, end)| {
        let mut s = b"+OK here\r\n".to_vec();
        for (line, e) in lines {
            s.extend_from_slice(&line);
            s.extend_from_slice(e);
        }
        s.extend_from_slice(b".");
        s.extend_from_slice(end);
        s
    })
}

fn split(stream: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
    points.sort_unstable();
    let mut pieces = Vec::new();
    let mut last = 0;
    for p in points.into_iter().chain([stream.len()]) {
        pieces.push(stream[last..p].to_vec());
        last = p;
    }
    pieces
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn any_split_equals_the_poplib_model(stream in stream_strategy(), cuts in proptest::collection::vec(any::<usize>(), 0..12)) {
        let limits = Limits::default();
        let want = model(&stream);
        let whole = decode(&[&stream], &limits).unwrap();
        let pieces = split(&stream, &cuts);
        let refs: Vec<&[u8]> = pieces.iter().map(Vec::as_slice).collect();
        let split_result = decode(&refs, &limits).unwrap();
        let bytewise: Vec<&[u8]> = stream.chunks(1).collect();
        let by_byte = decode(&bytewise, &limits).unwrap();
        prop_assert_eq!(&whole, &split_result);
        prop_assert_eq!(&whole, &by_byte);
        match (want, whole) {
            (Some((status, lines, octets)), Some((s, l, o, _))) => {
                prop_assert_eq!(status, s);
                prop_assert_eq!(lines, l);
                prop_assert_eq!(octets, o);
            }
            (w, g) => prop_assert!(false, "model {:?} vs ours {:?}", w.is_some(), g.is_some()),
        }
    }

    #[test]
    fn dot_stuffing_round_trips(lines in proptest::collection::vec(proptest::collection::vec(any::<u8>().prop_filter("no CR/LF", |b| *b != b'\n' && *b != b'\r'), 0..30), 0..30)) {
        let mut wire = b"+OK\r\n".to_vec();
        for line in &lines {
            if line.first() == Some(&b'.') {
                wire.push(b'.');
            }
            wire.extend_from_slice(line);
            wire.extend_from_slice(b"\r\n");
        }
        wire.extend_from_slice(b".\r\n");
        let (_, got, octets, bytes) = decode(&[&wire], &Limits::default()).unwrap().unwrap();
        prop_assert_eq!(&got, &lines);
        prop_assert_eq!(octets, lines.iter().map(|l| l.len() + 2).sum::<usize>());
        let joined: Vec<u8> = lines.iter().flat_map(|l| l.iter().copied().chain(*b"\r\n")).collect();
        prop_assert_eq!(bytes, joined);
    }

    #[test]
    fn limits_are_exact(stream in stream_strategy(), max_line in 3usize..64, max_response in 1usize..400) {
        let limits = Limits { max_status_line: 2048, max_data_line: max_line, max_response };
        let result = decode(&[&stream], &limits);
        // The raw lines the decoder reads: up to and including the first "." line.
        let mut body_lines: Vec<&[u8]> = Vec::new();
        for raw in stream.split_inclusive(|b| *b == b'\n').skip(1) {
            body_lines.push(raw);
            if strip_line_end(raw) == b"." {
                break;
            }
        }
        match result {
            Ok(Some((_, _, octets, _))) => {
                prop_assert!(body_lines.iter().all(|l| l.len() <= max_line));
                prop_assert!(octets <= max_response);
            }
            Err(ProtoError::LineTooLong { .. }) => prop_assert!(body_lines.iter().any(|l| l.len() > max_line)),
            Err(ProtoError::ResponseTooLarge { .. }) => {
                let (_, _, total) = model(&stream).expect("generated streams are complete");
                prop_assert!(total > max_response);
            }
            other => prop_assert!(false, "unexpected {:?}", other),
        }
    }

    #[test]
    fn encoding_never_lets_a_line_break_through(line in proptest::collection::vec(any::<u8>(), 0..60)) {
        let mut out = Vec::new();
        let bad = line.iter().any(|b| matches!(b, b'\r' | b'\n' | 0));
        match encode_line(&line, &mut out) {
            Ok(()) => {
                prop_assert!(!bad);
                prop_assert_eq!(&out[..out.len() - 2], &line[..]);
                prop_assert!(!out[..out.len() - 2].iter().any(|b| matches!(b, b'\r' | b'\n' | 0)));
            }
            Err(_) => {
                prop_assert!(bad);
                prop_assert!(out.is_empty());
            }
        }
    }

    #[test]
    fn parsers_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = _core::proto::greeting::apop_timestamp(&data);
        let _ = _core::proto::capa::parse_capa(data.split(|b| *b == b'\n'));
        let _ = check_status(&data);
        if let Ok(Some(stamp)) = _core::proto::greeting::apop_timestamp(&data) {
            prop_assert!(stamp.starts_with(b"<") && stamp.ends_with(b">") && stamp.len() <= 512);
        }
    }
}
