//! CAPA response parsing (RFC 2449).

use super::ProtoError;

/// One capability: its name and arguments, e.g. `("SASL", ["PLAIN", "LOGIN"])`.
pub type Capability = (String, Vec<String>);

/// Parses the lines of a CAPA body. Names and arguments are ASCII words; blank lines are
/// skipped; anything else is a malformed response.
pub fn parse_capa<'a>(
    lines: impl IntoIterator<Item = &'a [u8]>,
) -> Result<Vec<Capability>, ProtoError> {
    let mut caps = Vec::new();
    for line in lines {
        let text = std::str::from_utf8(line)
            .ok()
            .filter(|t| t.is_ascii())
            .ok_or_else(|| ProtoError::Malformed("CAPA line is not ASCII".into()))?;
        let mut words = text.split_ascii_whitespace().map(str::to_owned);
        if let Some(name) = words.next() {
            caps.push((name, words.collect()));
        }
    }
    Ok(caps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dovecot_capa() {
        let body: Vec<&[u8]> = vec![b"TOP", b"UIDL", b"SASL PLAIN LOGIN CRAM-MD5", b"", b"STLS"];
        let caps = parse_capa(body).unwrap();
        assert_eq!(
            caps[2],
            (
                "SASL".to_string(),
                vec!["PLAIN".to_string(), "LOGIN".into(), "CRAM-MD5".into()]
            )
        );
        assert_eq!(caps.len(), 4);
        assert!(caps.iter().any(|(n, _)| n.eq_ignore_ascii_case("stls")));
        assert!(!caps.iter().any(|(n, _)| n.eq_ignore_ascii_case("UTF8")));
    }

    #[test]
    fn rejects_non_ascii() {
        let body: Vec<&[u8]> = vec![b"TOP \xff"];
        assert!(parse_capa(body).is_err());
    }
}
