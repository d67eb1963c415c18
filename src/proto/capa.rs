//! CAPA response parsing (RFC 2449): the one parser of what a server advertises.

/// One capability: its name and arguments, e.g. `("SASL", ["PLAIN", "LOGIN"])`.
pub type Capability = (String, Vec<String>);

/// A CAPA reply as the session keeps it: every line, in order, and what the session itself
/// decides on (pipelining, the SASL mechanisms to offer `login()`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// Every capability line as `(name, [args])`, in the server's order.
    pub list: Vec<Capability>,
    pub pipelining: bool,
    pub uidl: bool,
    pub top: bool,
    pub stls: bool,
    /// SASL mechanisms, upper case.
    pub sasl: Vec<String>,
}

/// Parses the lines of a CAPA body, line by line: one odd line (non-ASCII text in an
/// IMPLEMENTATION line, say) is kept as decoded text (invalid UTF-8 replaced) and hides
/// nothing else. Blank lines are skipped. Never fails: what a server advertises is a hint.
pub fn parse_capa<'a>(lines: impl IntoIterator<Item = &'a [u8]>) -> Capabilities {
    let mut caps = Capabilities::default();
    for line in lines {
        let text = String::from_utf8_lossy(line);
        let mut words = text.split_ascii_whitespace().map(str::to_owned);
        let Some(name) = words.next() else { continue };
        let args: Vec<String> = words.collect();
        match name.to_ascii_uppercase().as_str() {
            "PIPELINING" => caps.pipelining = true,
            "UIDL" => caps.uidl = true,
            "TOP" => caps.top = true,
            "STLS" => caps.stls = true,
            "SASL" => caps.sasl = args.iter().map(|m| m.to_ascii_uppercase()).collect(),
            _ => {}
        }
        caps.list.push((name, args));
    }
    caps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dovecot_capa() {
        let body: Vec<&[u8]> = vec![b"TOP", b"UIDL", b"SASL PLAIN LOGIN CRAM-MD5", b"", b"STLS"];
        let caps = parse_capa(body);
        assert_eq!(
            caps.list[2],
            (
                "SASL".to_string(),
                vec!["PLAIN".to_string(), "LOGIN".into(), "CRAM-MD5".into()]
            )
        );
        assert_eq!(caps.list.len(), 4);
        assert!(caps.stls && caps.top && caps.uidl && !caps.pipelining);
        assert_eq!(caps.sasl, ["PLAIN", "LOGIN", "CRAM-MD5"]);
    }

    #[test]
    fn a_non_ascii_line_hides_nothing_else() {
        let body: Vec<&[u8]> = vec![
            b"IMPLEMENTATION Serveur \xe9l\xc3\xa9gant",
            b"SASL SCRAM-SHA-256 PLAIN",
            b"PIPELINING",
        ];
        let caps = parse_capa(body);
        assert_eq!(caps.sasl, ["SCRAM-SHA-256", "PLAIN"]);
        assert!(caps.pipelining);
        assert_eq!(caps.list[0].0, "IMPLEMENTATION");
        assert_eq!(caps.list[0].1, ["Serveur", "\u{fffd}l\u{e9}gant"]);
    }
}
