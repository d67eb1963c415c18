//! Drives a session with commands and server bytes chosen by the input: what the fuzz target
//! (`fuzz/fuzz_targets/session.rs`) and the property tests below run. Built for tests and with
//! the `testing` feature only.

use super::response::Limits;
use super::session::{Expect, Request, Session, Step};

/// Small limits, so that random input reaches them.
pub const LIMITS: Limits = Limits {
    max_status_line: 64,
    max_line_length: 128,
    max_response_size: 4096,
};

/// At most this many requests per input: every run is short.
const MAX_REQUESTS: usize = 64;

/// Plays `data` against a fresh session: each request is chosen by one byte; each read the
/// session asks for takes one byte for its length (0: the server closes) and that many bytes
/// as what the server sent. Batches and streams are opened, read and dropped in any order.
/// Invariants checked: no panic; a step that fails leaves the session broken, and every later
/// request fails at once.
pub fn drive(data: &[u8]) {
    let mut input = data.iter().copied();
    let mut session = Session::new(LIMITS);
    let (mut batches, mut streams) = (Vec::new(), Vec::new());
    for _ in 0..MAX_REQUESTS {
        let Some(choice) = input.next() else { return };
        let request = match choice % 16 {
            0 => command(b"NOOP", Expect::Status),
            1 => command(b"RETR 1", Expect::Lines),
            2 => command(b"RETR 2", Expect::Bytes),
            3 => command(b"PASS secret", Expect::Status),
            4 => command(b"AUTH PLAIN", Expect::Status),
            5 => Request::Put {
                line: b"RETR 1".to_vec(),
            },
            6 => Request::Claim {
                expect: if choice & 16 == 0 {
                    Expect::Status
                } else {
                    Expect::Lines
                },
            },
            7 => Request::RawLine {
                max: (choice & 16 != 0).then_some(usize::from(choice >> 5)),
            },
            8 => Request::Capa,
            9 => Request::Messages,
            10 => Request::StreamOpen {
                line: b"RETR 3".to_vec(),
            },
            11 => match streams.last() {
                Some(&id) => Request::StreamNext {
                    id,
                    max: 1 + usize::from(choice >> 4),
                },
                None => continue,
            },
            12 => {
                let lines = vec![b"DELE 1".to_vec(), b"RETR 1".to_vec()];
                let expect = if choice & 16 == 0 {
                    Expect::Status
                } else {
                    Expect::Lines
                };
                if let Ok(id) = session.batch(lines, expect) {
                    batches.push(id);
                }
                continue;
            }
            13 => match batches.last() {
                Some(&id) => Request::BatchNext { id },
                None => continue,
            },
            14 => {
                if let Some(id) = batches.pop() {
                    session.drop_batch(id);
                }
                if let Some(id) = streams.pop() {
                    session.drop_stream(id);
                }
                continue;
            }
            _ => Request::StartTls,
        };
        let Ok(mut job) = session.start(request) else {
            continue;
        };
        loop {
            match session.step(&mut job) {
                Ok(Step::Write) => session.wrote(),
                Ok(Step::Handshake) => session.tls_started(),
                Ok(Step::Done(super::session::Done::Stream(id, _))) => {
                    streams.push(id);
                    break;
                }
                Ok(Step::Done(_)) => break,
                Ok(Step::Read) => {
                    let Some(len) = input.next() else { return };
                    let chunk: Vec<u8> = input.by_ref().take(usize::from(len)).collect();
                    let buf = session.read_buf();
                    let n = chunk.len().min(buf.len());
                    buf[..n].copy_from_slice(&chunk[..n]);
                    if session.received(n).is_err() {
                        assert!(session.broken().is_some());
                        break;
                    }
                }
                Err(err) => {
                    assert_eq!(session.broken(), Some(&err));
                    assert!(session.start(command(b"NOOP", Expect::Status)).is_err());
                    return;
                }
            }
        }
    }
}

fn command(line: &[u8], expect: Expect) -> Request {
    Request::Command {
        line: line.to_vec(),
        expect,
        secret: false,
        raw: false,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn random_commands_and_server_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..600)) {
            super::drive(&data);
        }

        /// Server bytes that look like POP3: replies, bodies, dots and junk, so deep states are reached.
        #[test]
        fn pop3_shaped_server_bytes_never_panic(
            pieces in proptest::collection::vec(
                prop_oneof![
                    Just(b"+OK\r\n".to_vec()),
                    Just(b"-ERR no\r\n".to_vec()),
                    Just(b"line\r\n".to_vec()),
                    Just(b".\r\n".to_vec()),
                    Just(b"..x\r\n".to_vec()),
                    Just(b"1 100\r\n".to_vec()),
                    Just(b"+ \r\n".to_vec()),
                    proptest::collection::vec(any::<u8>(), 0..8),
                ],
                0..60,
            ),
            choices in proptest::collection::vec(any::<u8>(), 1..40),
        ) {
            // Interleave: a request byte, then a read of the next piece.
            let mut data = Vec::new();
            let mut pieces = pieces.into_iter();
            for choice in choices {
                data.push(choice);
                for _ in 0..3 {
                    let piece = pieces.next().unwrap_or_default();
                    data.push(piece.len() as u8);
                    data.extend(piece);
                }
            }
            super::drive(&data);
        }
    }
}
