//! LIST and UIDL listings (RFC 1939 §5, §7), parsed for `messages()`.

use std::collections::{HashMap, HashSet};

use super::*;

fn malformed(what: &str, line: &[u8]) -> ProtoError {
    let shown: String = String::from_utf8_lossy(&line[..line.len().min(100)])
        .escape_debug()
        .collect();
    ProtoError::Malformed(format!("malformed {what} line: \"{shown}\""))
}

fn twice(what: &str, number: u64) -> ProtoError {
    ProtoError::Malformed(format!(
        "the server's {what} reply gives message {number} twice (RFC 1939: one line per message)"
    ))
}

/// LIST's `n size [text]` lines (RFC 1939 §5 allows text after the size); a number listed
/// twice is an error.
pub(super) fn parse_listing(reply: &Reply) -> Result<Vec<(u64, u64)>, ProtoError> {
    let Reply::Lines { lines, .. } = reply else {
        return Ok(Vec::new());
    };
    let rows = lines
        .lines()
        .map(|line| {
            let mut words = line.split(|b| *b == b' ').filter(|w| !w.is_empty());
            let number = words.next().and_then(parse_u64);
            let size = words.next().and_then(parse_u64);
            number.zip(size).ok_or_else(|| malformed("LIST", line))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if !ascending(&rows) {
        let mut seen = HashSet::with_capacity(rows.len());
        if let Some(&(number, _)) = rows.iter().find(|(n, _)| !seen.insert(*n)) {
            return Err(twice("LIST", number));
        }
    }
    Ok(rows)
}

/// Numbers in strictly ascending order (as servers list them): none can be there twice.
fn ascending(rows: &[(u64, u64)]) -> bool {
    rows.windows(2).all(|w| w[0].0 < w[1].0)
}

/// LIST rows paired with UIDL lines as they come (RFC 1939 §7), so a driver can convert the
/// rows already complete while the rest of UIDL is on its way. Servers list both in ascending
/// order, so a line usually completes the next row at once; a line for a later row waits in
/// `pending`. A number given twice in UIDL is an error (which unique-id would be right?).
#[derive(Debug)]
pub(super) struct Pairing {
    rows: Vec<(u64, u64)>,
    /// `rows[..paired]` have their unique-id.
    paired: usize,
    /// The paired numbers, kept only when LIST was not in ascending order (otherwise a
    /// binary search of `rows[..paired]` finds them).
    paired_set: Option<HashSet<u64>>,
    pending: HashMap<u64, Vec<u8>>,
    ready: Vec<MessageRow>,
    /// A malformed UIDL line seen early: the listing fails with it at the end.
    pub(super) failed: Option<ProtoError>,
}

impl Pairing {
    pub(super) fn new(rows: Vec<(u64, u64)>) -> Self {
        let paired_set = (!ascending(&rows)).then(HashSet::new);
        Pairing {
            rows,
            paired: 0,
            paired_set,
            pending: HashMap::new(),
            ready: Vec::new(),
            failed: None,
        }
    }

    fn was_paired(&self, number: u64) -> bool {
        match &self.paired_set {
            Some(set) => set.contains(&number),
            // UIDL in ascending order too: past the last paired number at once.
            None => {
                let paired = &self.rows[..self.paired];
                paired.last().is_some_and(|last| number <= last.0)
                    && paired.binary_search_by_key(&number, |row| row.0).is_ok()
            }
        }
    }

    fn pair(&mut self, uid: Vec<u8>) {
        let (number, size) = self.rows[self.paired];
        self.paired += 1;
        if let Some(set) = &mut self.paired_set {
            set.insert(number);
        }
        self.ready.push((number, size, Some(uid)));
    }

    /// One UIDL line: `n unique-id`, the unique-id kept as exact bytes.
    pub(super) fn line(&mut self, line: &[u8]) -> Result<(), ProtoError> {
        let mut words = line.split(|b| *b == b' ').filter(|w| !w.is_empty());
        let number = words.next().and_then(parse_u64);
        let uid = words.next().map(<[u8]>::to_vec);
        let (n, uid) = number.zip(uid).ok_or_else(|| malformed("UIDL", line))?;
        if self.pending.contains_key(&n) || self.was_paired(n) {
            return Err(twice("UIDL", n));
        }
        if self.rows.get(self.paired).is_some_and(|row| row.0 == n) {
            self.pair(uid);
            while let Some(uid) = self
                .rows
                .get(self.paired)
                .and_then(|row| self.pending.remove(&row.0))
            {
                self.pair(uid);
            }
        } else {
            self.pending.insert(n, uid);
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
        let pending = &mut self.pending;
        rows.extend(
            self.rows[self.paired..]
                .iter()
                .map(|&(n, size)| (n, size, pending.remove(&n))),
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
    fn pairs_by_number_in_any_order() {
        let uid = |s: &str| Some(s.as_bytes().to_vec());
        let rows = [(1, 10), (2, 20), (4, 40)];
        let want = vec![(1, 10, uid("a")), (2, 20, None), (4, 40, uid("d"))];
        let sorted: &[&[u8]] = &[b"1 a", b"3 c", b"4 d"];
        let shuffled: &[&[u8]] = &[b"4 d", b"1 a", b"3 c"];
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
    fn a_number_given_twice_is_an_error_naming_it() {
        let twice_in = |rows: &[(u64, u64)], lines: &[&[u8]]| {
            let mut pairing = Pairing::new(rows.to_vec());
            let err = lines.iter().find_map(|line| pairing.line(line).err());
            err.map(|e| e.to_string())
        };
        let sorted = [(1, 10), (2, 20), (4, 40)];
        let unsorted = [(4, 40), (1, 10), (2, 20)];
        for rows in [&sorted[..], &unsorted[..]] {
            // Paired already, waiting for its row, and not listed at all.
            for lines in [
                &[&b"1 a"[..], b"2 b", b"1 z"][..],
                &[b"4 d", b"4 e"],
                &[b"3 c", b"3 x"],
            ] {
                let err = twice_in(rows, lines).expect("a duplicate is refused");
                let n = std::str::from_utf8(&lines[0][..1]).unwrap();
                assert!(err.contains(&format!("message {n} twice")), "{err}");
            }
            assert_eq!(twice_in(rows, &[b"1 a", b"2 b", b"4 d"]), None);
        }
        let list = |lines: &[&[u8]]| {
            use crate::proto::response::{BodySink, LinesSink};
            let mut sink = LinesSink::default();
            lines.iter().for_each(|line| sink.line(line).unwrap());
            parse_listing(&Reply::Lines {
                status: b"+OK".to_vec(),
                lines: sink,
                octets: 0,
            })
        };
        assert!(list(&[b"1 10", b"2 20"]).is_ok());
        for lines in [
            &[&b"1 10"[..], b"2 20", b"2 20"][..],
            &[b"2 20", b"1 10", b"2 30"],
        ] {
            let err = list(lines).unwrap_err().to_string();
            assert!(err.contains("LIST reply gives message 2 twice"), "{err}");
        }
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
