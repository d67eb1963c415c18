//! LIST and UIDL listings (RFC 1939 §5, §7), parsed for `messages()`.

use std::collections::{HashMap, VecDeque};

use super::*;

fn malformed(what: &str, line: &[u8]) -> ProtoError {
    let shown: String = String::from_utf8_lossy(&line[..line.len().min(100)])
        .escape_debug()
        .collect();
    ProtoError::Malformed(format!("malformed {what} line: \"{shown}\""))
}

/// LIST's `n size [text]` lines (RFC 1939 §5 allows text after the size).
pub(super) fn parse_listing(reply: &Reply) -> Result<Vec<(u64, u64)>, ProtoError> {
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

/// LIST rows paired with UIDL lines as they come (RFC 1939 §7), so a driver can convert the
/// rows already complete while the rest of UIDL is on its way. The first unique-id given for
/// a number counts. Servers list both in ascending order, so a line usually completes the
/// next row at once; a line for a later row waits in `pending`.
#[derive(Debug)]
pub(super) struct Pairing {
    rows: VecDeque<(u64, u64)>,
    pending: HashMap<u64, Vec<u8>>,
    ready: Vec<MessageRow>,
    /// A malformed UIDL line seen early: the listing fails with it at the end.
    pub(super) failed: Option<ProtoError>,
}

impl Pairing {
    pub(super) fn new(rows: Vec<(u64, u64)>) -> Self {
        Pairing {
            rows: rows.into(),
            pending: HashMap::new(),
            ready: Vec::new(),
            failed: None,
        }
    }

    /// One UIDL line: `n unique-id`, the unique-id kept as exact bytes.
    pub(super) fn line(&mut self, line: &[u8]) -> Result<(), ProtoError> {
        let mut words = line.split(|b| *b == b' ').filter(|w| !w.is_empty());
        let number = words.next().and_then(parse_u64);
        let uid = words.next().map(<[u8]>::to_vec);
        let (n, uid) = number.zip(uid).ok_or_else(|| malformed("UIDL", line))?;
        match self.rows.front() {
            Some(&(next, size)) if next == n => {
                self.rows.pop_front();
                self.ready.push((n, size, Some(uid)));
                while let Some(&(next, size)) = self.rows.front() {
                    let Some(uid) = self.pending.remove(&next) else {
                        break;
                    };
                    self.rows.pop_front();
                    self.ready.push((next, size, Some(uid)));
                }
            }
            _ => {
                self.pending.entry(n).or_insert(uid);
            }
        }
        Ok(())
    }

    /// The rows complete so far, in LIST order.
    pub(super) fn take_ready(&mut self) -> Vec<MessageRow> {
        std::mem::take(&mut self.ready)
    }

    /// UIDL has ended (or the server has none): every row not handed out yet, in LIST order,
    /// with its unique-id if one came.
    pub(super) fn finish(mut self) -> Vec<MessageRow> {
        let mut rows = std::mem::take(&mut self.ready);
        rows.extend(
            self.rows
                .into_iter()
                .map(|(n, size)| (n, size, self.pending.remove(&n))),
        );
        rows
    }
}

pub(super) fn parse_u64(word: &[u8]) -> Option<u64> {
    std::str::from_utf8(word)
        .ok()
        .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|s| s.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paired(rows: &[(u64, u64)], lines: &[&[u8]], early_at: usize) -> Vec<MessageRow> {
        let mut pairing = Pairing::new(rows.to_vec());
        let mut out = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            pairing.line(line).unwrap();
            if i == early_at {
                out.extend(pairing.take_ready());
            }
        }
        out.extend(pairing.finish());
        out
    }

    #[test]
    fn pairs_by_number_in_any_order_the_first_uid_counting() {
        let uid = |s: &str| Some(s.as_bytes().to_vec());
        let rows = [(1, 10), (2, 20), (4, 40)];
        let want = vec![(1, 10, uid("a")), (2, 20, None), (4, 40, uid("d"))];
        let sorted: &[&[u8]] = &[b"1 a", b"3 c", b"4 d", b"4 e"];
        let shuffled: &[&[u8]] = &[b"4 d", b"1 a", b"3 c", b"4 e", b"1 z"];
        for early_at in 0..5 {
            assert_eq!(paired(&rows, sorted, early_at), want);
            assert_eq!(paired(&rows, shuffled, early_at), want);
        }
        let unsorted_rows = [(4, 40), (1, 10), (2, 20)];
        assert_eq!(
            paired(&unsorted_rows, sorted, 9),
            vec![(4, 40, uid("d")), (1, 10, uid("a")), (2, 20, None)]
        );
        assert_eq!(paired(&rows, &[], 0)[0], (1, 10, None));
    }

    #[test]
    fn rows_are_ready_as_soon_as_their_line_came() {
        let mut pairing = Pairing::new(vec![(1, 10), (2, 20), (3, 30)]);
        pairing.line(b"2 b").unwrap();
        assert!(pairing.take_ready().is_empty());
        pairing.line(b"1 a").unwrap();
        assert_eq!(pairing.take_ready().len(), 2);
        assert!(pairing.line(b"x y").is_err());
        assert_eq!(pairing.finish(), vec![(3, 30, None)]);
    }
}
