//! Status lines and multi-line bodies, the stream cut at points chosen by the input itself.
//! Invariant: events or an error, never a panic, and the buffer never grows past the limits.
#![no_main]

use _core::proto::response::{check_status, resp_code, BodyDecoder, BodySink, BytesSink, LineReader, Limits};
use libfuzzer_sys::fuzz_target;

const LIMITS: Limits = Limits { max_status_line: 512, max_data_line: 1024, max_response: 64 * 1024 };

fuzz_target!(|data: &[u8]| {
    let Some((&cut, stream)) = data.split_first() else { return };
    let step = usize::from(cut).max(1);
    let mut reader = LineReader::new();
    let mut decoder: Option<BodyDecoder> = None;
    for piece in stream.chunks(step) {
        reader.feed(piece);
        loop {
            // Bounded: unread data never exceeds one line limit plus one piece.
            assert!(reader.buffered().len() <= LIMITS.max_data_line + step + 2);
            if let Some(body) = decoder.as_mut() {
                let mut sink = BytesSink::chunked(4096);
                match body.advance(&mut reader, &LIMITS, &mut sink) {
                    Ok(Some(octets)) => {
                        assert!(octets <= LIMITS.max_response);
                        decoder = None;
                    }
                    Ok(None) if sink.full() => continue,
                    Ok(None) => break,
                    Err(_) => return,
                }
            } else {
                match reader.next_raw_line(LIMITS.max_status_line, "status") {
                    Ok(Some(raw)) => {
                        let line = reader.content(raw);
                        let _ = resp_code(line);
                        if check_status(line).is_ok() && line.len() % 2 == 0 {
                            decoder = Some(BodyDecoder::new());
                        }
                    }
                    Ok(None) => break,
                    Err(_) => return,
                }
            }
        }
    }
});
