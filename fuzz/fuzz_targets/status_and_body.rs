//! Status lines and multi-line bodies, fed in pieces whose sizes the first input byte chooses.
//! Invariants: events or an error, never a panic; the buffer never holds more than one line
//! limit; the same events come out whether the stream arrives in those pieces or whole.
#![no_main]

use _core::proto::response::{check_status, resp_code, BodyDecoder, BodySink, BytesSink, LineReader, Limits};
use _core::proto::ProtoError;
use libfuzzer_sys::fuzz_target;

// Small limits, so that the fuzzer reaches them.
const LIMITS: Limits = Limits { max_status_line: 512, max_line_length: 1024, max_response_size: 16 * 1024 };
const LONGEST_LINE: usize = 1024;

#[derive(Debug, PartialEq)]
enum Event {
    Status(Vec<u8>),
    Body(Vec<u8>, Vec<u8>, usize),
    Error(ProtoError),
}

/// A session: a `+OK` line of even length opens a body, so the input decides which replies are
/// multi-line and both decoders alternate.
#[derive(Default)]
struct Session {
    reader: LineReader,
    body: Option<(Vec<u8>, BodyDecoder, Vec<u8>)>,
    events: Vec<Event>,
}

impl Session {
    /// Takes every event the buffered bytes allow; `sink_chunk` bounds each read of the body.
    fn step(&mut self, sink_chunk: Option<usize>) -> Result<(), ProtoError> {
        loop {
            if let Some((_, decoder, text)) = &mut self.body {
                let mut sink = sink_chunk.map_or_else(BytesSink::default, BytesSink::chunked);
                let done = decoder.advance(&mut self.reader, &LIMITS, &mut sink)?;
                text.extend_from_slice(&sink.data);
                if let Some(octets) = done {
                    assert!(octets <= LIMITS.max_response_size);
                    let (status, _, text) = self.body.take().expect("in a body");
                    self.events.push(Event::Body(status, text, octets));
                } else if !sink.full() {
                    return Ok(());
                }
            } else {
                let Some(raw) = self.reader.next_raw_line(LIMITS.max_status_line, "status")? else { return Ok(()) };
                let line = self.reader.content(raw).to_vec();
                if let Err(e) = check_status(&line) {
                    // Only for "no panic": RESP-CODES are parsed out of every -ERR line.
                    let _ = resp_code(&line);
                    self.events.push(Event::Error(e));
                } else if line.len() % 2 == 0 {
                    self.body = Some((line, BodyDecoder::new(), Vec::new()));
                } else {
                    self.events.push(Event::Status(line));
                }
            }
        }
    }
}

fn events<'a>(pieces: impl Iterator<Item = &'a [u8]>, sink_chunk: Option<usize>) -> Vec<Event> {
    let mut session = Session::default();
    for piece in pieces {
        session.reader.feed(piece);
        if let Err(e) = session.step(sink_chunk) {
            session.events.push(Event::Error(e));
            break;
        }
        // Whatever is left is part of one line, and a line over its limit is an error.
        assert!(session.reader.buffered().len() <= LONGEST_LINE, "buffer grew past the line limit");
    }
    session.events
}

/// Cuts `stream` into pieces of 1 to 2^(seed % 12) bytes, sizes drawn by a xorshift seeded by
/// `seed`: the same input always splits the same way, and libFuzzer can mutate the seed.
fn pieces(stream: &[u8], seed: u8) -> impl Iterator<Item = &[u8]> {
    let max = 1usize << (seed % 12);
    let mut state = u32::from(seed) + 1;
    let mut rest = stream;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let (piece, tail) = rest.split_at((1 + state as usize % max).min(rest.len()));
        rest = tail;
        Some(piece)
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, stream)) = data.split_first() else { return };
    let split = events(pieces(stream, seed), Some(1 + usize::from(seed) * 16));
    assert_eq!(split, events(std::iter::once(stream), None), "splitting the stream changed the events");
});
