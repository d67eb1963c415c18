//! Drives a session with commands and server bytes chosen by the input: what the fuzz target
//! (`fuzz/fuzz_targets/session.rs`) and the property tests below run. Built for tests and with
//! the `testing` feature only.

use super::command::{Command, Secret, Shape};
use super::response::Limits;
use super::session::{Closed, Collect, Expect, Request, Session, Step};

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
/// Invariants checked: no panic; a step that fails with a fatal error leaves the session
/// closed with that error as the reason, and every later request fails at once with it.
pub fn drive(data: &[u8]) {
    let mut input = data.iter().copied();
    let mut session = Session::new(LIMITS);
    let (mut batches, mut streams) = (Vec::new(), Vec::new());
    for _ in 0..MAX_REQUESTS {
        let Some(choice) = input.next() else { return };
        let request = match choice % 16 {
            0 => command(Command::Noop, Collect::Lines),
            1 => command(Command::Retr(b"1".to_vec()), Collect::Lines),
            2 => command(Command::Retr(b"2".to_vec()), Collect::Bytes),
            3 if choice & 16 == 0 => {
                command(Command::Pass(Secret::new(*b"secret")), Collect::Lines)
            }
            3 => command(
                Command::SaslResponse(Secret::new(*b"c2VjcmV0")),
                Collect::Lines,
            ),
            4 if choice & 16 == 0 => command(
                Command::Auth {
                    mechanism: b"PLAIN".to_vec(),
                    initial: None,
                },
                Collect::Lines,
            ),
            4 => command(
                Command::raw(b"AUTH PLAIN".to_vec(), Some(Shape::Status)),
                Collect::Lines,
            ),
            5 => Request::Put {
                command: Command::raw(b"RETR 1".to_vec(), None),
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
                command: Command::Retr(b"3".to_vec()),
            },
            11 => match streams.last() {
                Some(&id) => Request::StreamNext {
                    id,
                    max: 1 + usize::from(choice >> 4),
                },
                None => continue,
            },
            12 => {
                let commands = vec![Command::Dele(b"1".to_vec()), Command::Retr(b"1".to_vec())];
                let collect = if choice & 16 == 0 {
                    Collect::Lines
                } else {
                    Collect::Bytes
                };
                if let Ok(id) = session.batch(commands, collect) {
                    batches.push(id);
                }
                continue;
            }
            13 => match batches.last() {
                Some(&id) => Request::BatchNext { id },
                None => continue,
            },
            // Rarely, the connection closes it from outside (close(), a cancel): the first
            // reason stays, and every later request fails with it.
            14 if choice >= 0xf0 => {
                let before = session.closed();
                session.closed_cell().close(Closed::ByCaller);
                let why = before.unwrap_or(Closed::ByCaller);
                assert_eq!(session.closed(), Some(why.clone()));
                let again = session.start(command(Command::Noop, Collect::Lines));
                assert_eq!(
                    again.err(),
                    Some(super::ProtoError::NotConnected(why.to_string()))
                );
                continue;
            }
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
                        assert!(session.closed().is_some());
                        break;
                    }
                }
                Err(err) => {
                    // The one policy: a fatal error closes the session with it as the reason,
                    // and every later request fails with that.
                    if err.is_fatal() {
                        assert_eq!(session.closed(), Some(Closed::Failed(err.to_string())));
                        let again = session.start(command(Command::Noop, Collect::Lines));
                        let closed = session.closed().expect("closed").to_string();
                        assert_eq!(again.err(), Some(super::ProtoError::NotConnected(closed)));
                        return;
                    }
                    break;
                }
            }
        }
    }
}

fn command(command: Command, collect: Collect) -> Request {
    Request::Command { command, collect }
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
