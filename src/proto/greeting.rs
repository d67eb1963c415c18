//! The server greeting and its APOP timestamp (RFC 1939 §7).

use super::ProtoError;

/// Upper bound on the timestamp we are willing to hash; RFC 5322 lines are at most 998 bytes.
pub const MAX_TIMESTAMP_LEN: usize = 512;

/// Extracts the APOP timestamp (`<...>`, angle brackets included) from a greeting.
///
/// `Ok(None)` when the greeting carries no timestamp. RFC 1939 §7 asks for a msg-id, but
/// servers send `<1896.697170952dbc>` or `<timestamp>` too, so the `@` is not required. What
/// defends against chosen-challenge attacks on APOP (CVE-2007-1558: a fake server choosing
/// timestamps to recover the password's MD5 prefix byte by byte) is the byte restriction:
/// printable ASCII only, no `<` or `>` inside, at most 512 bytes. The scan is linear (no
/// regex: CVE-2018-1060 was a catastrophic regex on this very field in CPython's poplib).
pub fn apop_timestamp(greeting: &[u8]) -> Result<Option<&[u8]>, ProtoError> {
    if !greeting.starts_with(b"+OK") {
        return Ok(None);
    }
    let Some(open) = memchr::memchr(b'<', greeting) else {
        return Ok(None);
    };
    let Some(len) = memchr::memchr(b'>', &greeting[open..]) else {
        return Err(malformed("the greeting has '<' without a closing '>'"));
    };
    let stamp = &greeting[open..=open + len];
    if stamp.len() > MAX_TIMESTAMP_LEN {
        return Err(malformed("the timestamp is longer than 512 bytes"));
    }
    let inner = &stamp[1..stamp.len() - 1];
    if inner.is_empty()
        || !inner
            .iter()
            .all(|b| (0x21..=0x7e).contains(b) && *b != b'<')
    {
        return Err(malformed(
            "the timestamp must be printable ASCII without spaces or angle brackets",
        ));
    }
    Ok(Some(stamp))
}

fn malformed(why: &str) -> ProtoError {
    ProtoError::Malformed(format!("APOP timestamp refused: {why}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_rfc1939_timestamp() {
        let g = b"+OK POP3 server ready <1896.697170952@dbc.mtview.ca.us>";
        assert_eq!(
            apop_timestamp(g).unwrap(),
            Some(&b"<1896.697170952@dbc.mtview.ca.us>"[..])
        );
    }

    #[test]
    fn accepts_dovecot_style() {
        let g = b"+OK Dovecot (Debian) ready. <2e35.1.6b02ab74.d4LTXgzr8tCxZ1Ra+I6Mpg==@vm>";
        assert_eq!(
            apop_timestamp(g).unwrap(),
            Some(&b"<2e35.1.6b02ab74.d4LTXgzr8tCxZ1Ra+I6Mpg==@vm>"[..])
        );
        assert!(apop_timestamp(b"+OK x <a@[127.0.0.1]>").unwrap().is_some());
    }

    #[test]
    fn accepts_timestamps_without_at() {
        for stamp in [&b"<timestamp>"[..], b"<1896.697170952dbc>"] {
            let g = [&b"+OK ready "[..], stamp].concat();
            assert_eq!(apop_timestamp(&g).unwrap(), Some(stamp));
        }
    }

    #[test]
    fn no_timestamp() {
        assert_eq!(apop_timestamp(b"+OK ready").unwrap(), None);
        assert_eq!(apop_timestamp(b"-ERR <a@b>").unwrap(), None);
    }

    #[test]
    fn refuses_malformed() {
        for g in [
            &b"+OK <nobrackets"[..],
            b"+OK <>",
            b"+OK <a<b>",
            b"+OK <a b@c>",
            b"+OK <a@b\x00>",
            b"+OK <a\xe9@b>",
        ] {
            assert!(
                matches!(apop_timestamp(g), Err(ProtoError::Malformed(_))),
                "{:?}",
                String::from_utf8_lossy(g)
            );
        }
        let mut long = b"+OK <".to_vec();
        long.extend(std::iter::repeat_n(b'a', 600));
        long.extend_from_slice(b"@b>");
        assert!(apop_timestamp(&long).is_err());
    }

    #[test]
    fn cve_2018_1060_input_is_linear() {
        // The input that made CPython's regex backtrack for minutes.
        let mut g = b"+OK".to_vec();
        g.extend(std::iter::repeat_n(b'<', 100_000));
        let t = std::time::Instant::now();
        assert!(apop_timestamp(&g).is_err());
        assert!(t.elapsed().as_millis() < 500);
    }
}
