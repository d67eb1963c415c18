//! LIST and UIDL listings (RFC 1939 §5, §7), parsed for `messages()`.

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

/// UIDL's `n unique-id` lines (RFC 1939 §7), unique-ids kept as exact bytes.
pub(super) fn parse_uidl(reply: &Reply) -> Result<Vec<(u64, Vec<u8>)>, ProtoError> {
    let Reply::Lines { lines, .. } = reply else {
        return Ok(Vec::new());
    };
    lines
        .lines()
        .map(|line| {
            let mut words = line.split(|b| *b == b' ').filter(|w| !w.is_empty());
            let number = words.next().and_then(parse_u64);
            let uid = words.next().map(<[u8]>::to_vec);
            number.zip(uid).ok_or_else(|| malformed("UIDL", line))
        })
        .collect()
}

/// Each listed message with its unique-id (the last one given for its number, `None` if
/// UIDL has none). Servers list both in ascending order: a merge, no hashing.
pub(super) fn merge(rows: Vec<(u64, u64)>, mut uids: Vec<(u64, Vec<u8>)>) -> Vec<MessageRow> {
    if !rows.is_sorted_by_key(|(n, _)| *n) {
        let mut by_number: HashMap<u64, Vec<u8>> = uids.into_iter().collect();
        return rows
            .into_iter()
            .map(|(n, size)| (n, size, by_number.remove(&n)))
            .collect();
    }
    if !uids.is_sorted_by_key(|(n, _)| *n) {
        uids.sort_by_key(|(n, _)| *n); // stable: the last of equal numbers stays last
    }
    let mut uids = uids.into_iter().peekable();
    rows.into_iter()
        .map(|(n, size)| {
            while uids.next_if(|(m, _)| *m < n).is_some() {}
            let mut uid = None;
            while let Some((_, u)) = uids.next_if(|(m, _)| *m == n) {
                uid = Some(u);
            }
            (n, size, uid)
        })
        .collect()
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

    #[test]
    fn merge_pairs_by_number_in_any_order() {
        let uid = |s: &str| s.as_bytes().to_vec();
        let rows = vec![(1, 10), (2, 20), (4, 40)];
        let sorted = vec![(1, uid("a")), (3, uid("c")), (4, uid("d")), (4, uid("e"))];
        let shuffled = vec![(4, uid("d")), (1, uid("a")), (3, uid("c")), (4, uid("e"))];
        let want = vec![
            (1, 10, Some(uid("a"))),
            (2, 20, None),
            (4, 40, Some(uid("e"))),
        ];
        assert_eq!(merge(rows.clone(), sorted.clone()), want);
        assert_eq!(merge(rows.clone(), shuffled), want);
        let unsorted_rows = vec![(4, 40), (1, 10), (2, 20)];
        let got = merge(unsorted_rows, sorted);
        assert_eq!(
            got,
            vec![
                (4, 40, Some(uid("e"))),
                (1, 10, Some(uid("a"))),
                (2, 20, None)
            ]
        );
        assert_eq!(merge(rows, Vec::new())[0], (1, 10, None));
    }
}
