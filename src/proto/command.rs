//! Command encoding. The only place where bytes destined for the wire are built.

use super::ProtoError;

/// Appends `line` + CRLF to `out`, refusing CR, LF and NUL so that no argument can smuggle a
/// second command onto the wire (command injection). `out` is untouched on error.
pub fn encode_line(line: &[u8], out: &mut Vec<u8>) -> Result<(), ProtoError> {
    if let Some(pos) = memchr::memchr3(b'\r', b'\n', 0, line) {
        let what = match line[pos] {
            b'\r' => "CR",
            b'\n' => "LF",
            _ => "NUL",
        };
        return Err(ProtoError::InvalidArgument(format!(
            "command contains a {what} byte at offset {pos}; POP3 arguments may not contain CR, LF or NUL"
        )));
    }
    out.reserve(line.len() + 2);
    out.extend_from_slice(line);
    out.extend_from_slice(b"\r\n");
    Ok(())
}

/// Encodes a batch of command lines for pipelining (RFC 2449). Every line is checked before
/// any byte is produced, so a bad argument anywhere sends nothing at all.
pub fn encode_lines<L: AsRef<[u8]>>(lines: &[L]) -> Result<Vec<u8>, ProtoError> {
    let mut out = Vec::with_capacity(lines.iter().map(|l| l.as_ref().len() + 2).sum());
    for line in lines {
        encode_line(line.as_ref(), &mut out)?;
    }
    Ok(out)
}

/// The verb of a command line, upper-cased (`b"retr 1"` -> `"RETR"`), for logging and
/// deciding what must be redacted.
pub fn verb(line: &[u8]) -> String {
    let end = line.iter().position(|b| *b == b' ').unwrap_or(line.len());
    String::from_utf8_lossy(&line[..end]).to_ascii_uppercase()
}

/// A copy of `line` fit for logs: arguments of commands that carry secrets are masked.
/// `in_auth_exchange` marks SASL continuation lines, which are secret in full.
pub fn redact(line: &[u8], in_auth_exchange: bool) -> Vec<u8> {
    if in_auth_exchange {
        return if line.is_empty() || line == b"*" {
            line.to_vec()
        } else {
            b"****".to_vec()
        };
    }
    let v = verb(line);
    let keep_words = match v.as_str() {
        "PASS" => 1,
        "APOP" => 2,
        "AUTH" => 2,
        _ => return line.to_vec(),
    };
    let mut out = Vec::with_capacity(line.len());
    for (i, word) in line.split(|b| *b == b' ').enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        if i < keep_words {
            out.extend_from_slice(word);
        } else {
            out.extend_from_slice(b"****");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_with_crlf() {
        let mut out = Vec::new();
        encode_line(b"RETR 1", &mut out).unwrap();
        assert_eq!(out, b"RETR 1\r\n");
    }

    #[test]
    fn rejects_injection_and_leaves_buffer_untouched() {
        for bad in [
            &b"USER a\r\nDELE 1"[..],
            b"USER a\nDELE 1",
            b"USER a\rb",
            b"USER a\0",
        ] {
            let mut out = b"NOOP\r\n".to_vec();
            assert!(matches!(
                encode_line(bad, &mut out),
                Err(ProtoError::InvalidArgument(_))
            ));
            assert_eq!(out, b"NOOP\r\n");
        }
    }

    #[test]
    fn batch_is_all_or_nothing() {
        assert_eq!(
            encode_lines(&[&b"RETR 1"[..], b"RETR 2"]).unwrap(),
            b"RETR 1\r\nRETR 2\r\n"
        );
        assert!(encode_lines(&[&b"RETR 1"[..], b"RETR 2\nDELE 1"]).is_err());
    }

    #[test]
    fn redacts_secrets() {
        assert_eq!(redact(b"PASS hunter2", false), b"PASS ****");
        assert_eq!(redact(b"pass two words", false), b"pass **** ****");
        assert_eq!(
            redact(b"APOP bob c4c9334bac560ecc979e58001b3e22fb", false),
            b"APOP bob ****"
        );
        assert_eq!(
            redact(b"AUTH PLAIN AGJvYgBzZWNyZXQ=", false),
            b"AUTH PLAIN ****"
        );
        assert_eq!(redact(b"AUTH XOAUTH2", false), b"AUTH XOAUTH2");
        assert_eq!(redact(b"dXNlcg==", true), b"****");
        assert_eq!(redact(b"*", true), b"*");
        assert_eq!(redact(b"USER bob", false), b"USER bob");
    }

    #[test]
    fn verb_is_uppercased() {
        assert_eq!(verb(b"retr 1"), "RETR");
        assert_eq!(verb(b"NOOP"), "NOOP");
    }
}
