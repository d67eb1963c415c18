//! Commands: what a caller asks the server (RFC 1939, 2449, 2595, 5034, 6856) as typed values,
//! and the only place where bytes destined for the wire are built.
//!
//! A [`Command`] knows its wire form, the shape of the reply it gets, whether it is a login
//! step (a bare `-ERR` then means the credentials were refused) and which of its parts is a
//! [`Secret`], so the session's admission and trace read these facts instead of flags.
//! [`Command::Raw`] carries a line written by hand (poplib's `_shortcmd`, `_longcmd`,
//! `_putline`); only for it are the facts read from the line.

use std::fmt;

use zeroize::Zeroize;

use super::ProtoError;

/// What is shown in place of a secret.
pub const MASK: &[u8] = b"****";

/// A password, an APOP digest, a SASL response: its value never appears in `Debug` output,
/// a trace or an error, and its memory is zeroed when it is dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(value: impl Into<Vec<u8>>) -> Self {
        Secret(value.into())
    }

    /// The value itself, for the wire and for masking what the server echoes.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(****)")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

/// The shape of a reply (RFC 1939 §3): a status line, or a status line followed, after
/// `+OK`, by a multi-line body ending in `.`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Status,
    MultiLine,
}

/// One POP3 command. Arguments are bytes as the caller formatted them (poplib formats
/// message numbers with `%s`); CR, LF and NUL are refused when the command is encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// USER name (RFC 1939 §7).
    User(Vec<u8>),
    /// PASS password (RFC 1939 §7).
    Pass(Secret),
    /// APOP name digest (RFC 1939 §7).
    Apop {
        user: Vec<u8>,
        digest: Secret,
    },
    /// RPOP name (RFC 1081).
    Rpop(Vec<u8>),
    Stat,
    /// LIST, or LIST n (a status line).
    List(Option<Vec<u8>>),
    Retr(Vec<u8>),
    Dele(Vec<u8>),
    Noop,
    Rset,
    Quit,
    /// TOP n lines (RFC 1939 §7).
    Top {
        which: Vec<u8>,
        lines: Vec<u8>,
    },
    /// UIDL, or UIDL n (a status line).
    Uidl(Option<Vec<u8>>),
    /// CAPA (RFC 2449).
    Capa,
    /// STLS (RFC 2595): only as the session's own STARTTLS request, which does the handshake.
    Stls,
    /// AUTH mechanism [initial-response] (RFC 5034); `=` is an empty initial response.
    Auth {
        mechanism: Vec<u8>,
        initial: Option<Secret>,
    },
    /// The client's answer to a server challenge in an AUTH exchange (RFC 5034 §4).
    SaslResponse(Secret),
    /// `*`: cancels an AUTH exchange (RFC 5034 §4).
    SaslCancel,
    /// UTF8 (RFC 6856 §2).
    Utf8,
    /// LANG, or LANG tag (RFC 6856 §3).
    Lang(Option<Vec<u8>>),
    /// A line written by hand, read as `shape` says.
    Raw {
        line: Vec<u8>,
        shape: Shape,
    },
}

impl Command {
    /// A line written by hand; without `shape`, the reply's shape is inferred from its verb,
    /// as poplib's `_putline` callers read it.
    pub fn raw(line: Vec<u8>, shape: Option<Shape>) -> Self {
        let shape = shape.unwrap_or_else(|| inferred(&line));
        Command::Raw { line, shape }
    }

    /// The verb, as sent.
    fn verb(&self) -> &'static [u8] {
        match self {
            Command::User(_) => b"USER",
            Command::Pass(_) => b"PASS",
            Command::Apop { .. } => b"APOP",
            Command::Rpop(_) => b"RPOP",
            Command::Stat => b"STAT",
            Command::List(_) => b"LIST",
            Command::Retr(_) => b"RETR",
            Command::Dele(_) => b"DELE",
            Command::Noop => b"NOOP",
            Command::Rset => b"RSET",
            Command::Quit => b"QUIT",
            Command::Top { .. } => b"TOP",
            Command::Uidl(_) => b"UIDL",
            Command::Capa => b"CAPA",
            Command::Stls => b"STLS",
            Command::Auth { .. } => b"AUTH",
            Command::SaslResponse(_) | Command::SaslCancel | Command::Raw { .. } => b"",
            Command::Utf8 => b"UTF8",
            Command::Lang(_) => b"LANG",
        }
    }

    /// The arguments after the verb, each with what it is (for error messages) and whether
    /// it is secret.
    fn args(&self) -> Vec<(&[u8], &'static str, bool)> {
        match self {
            Command::User(name) | Command::Rpop(name) => {
                vec![(name.as_slice(), "user name", false)]
            }
            Command::Pass(secret) => vec![(secret.expose(), "password", true)],
            Command::Apop { user, digest } => {
                vec![
                    (user.as_slice(), "user name", false),
                    (digest.expose(), "digest", true),
                ]
            }
            Command::List(Some(n)) | Command::Uidl(Some(n)) => {
                vec![(n.as_slice(), "message number", false)]
            }
            Command::Retr(n) | Command::Dele(n) => vec![(n.as_slice(), "message number", false)],
            Command::Top { which, lines } => vec![
                (which.as_slice(), "message number", false),
                (lines.as_slice(), "line count", false),
            ],
            Command::Auth { mechanism, initial } => {
                let mut args = vec![(mechanism.as_slice(), "SASL mechanism", false)];
                if let Some(initial) = initial {
                    args.push((initial.expose(), "initial response", true));
                }
                args
            }
            Command::SaslResponse(secret) => vec![(secret.expose(), "SASL response", true)],
            Command::SaslCancel => vec![(&b"*"[..], "SASL response", false)],
            Command::Lang(Some(tag)) => vec![(tag.as_slice(), "language tag", false)],
            Command::Raw { line, .. } => vec![(line.as_slice(), "command", false)],
            _ => Vec::new(),
        }
    }

    /// Appends the command line + CRLF to `out`, refusing CR, LF and NUL in any argument so
    /// that none can smuggle a second command onto the wire (command injection). `out` is
    /// untouched on error, and the error never shows a secret.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), ProtoError> {
        let args = self.args();
        for (arg, what, secret) in &args {
            check(arg, what, *secret)?;
            if TOKENS.contains(what) {
                check_token(arg, what)?;
            }
        }
        let verb = self.verb();
        out.extend_from_slice(verb);
        for (i, (arg, _, _)) in args.iter().enumerate() {
            if i > 0 || !verb.is_empty() {
                out.push(b' ');
            }
            out.extend_from_slice(arg);
        }
        out.extend_from_slice(b"\r\n");
        Ok(())
    }

    /// The line as the trace shows it: secret arguments masked. `in_auth_exchange`: a line
    /// written by hand is then a SASL response, secret in full.
    pub fn traced(&self, in_auth_exchange: bool) -> Vec<u8> {
        if let Command::Raw { line, .. } = self {
            return redact(line, in_auth_exchange);
        }
        let mut out = self.verb().to_vec();
        for (i, (arg, _, secret)) in self.args().into_iter().enumerate() {
            if i > 0 || !out.is_empty() {
                out.push(b' ');
            }
            out.extend_from_slice(if secret { MASK } else { arg });
        }
        out
    }

    /// What this command carries that must never be shown, not even echoed back by the
    /// server: a password, an APOP digest, an AUTH initial response, a SASL response. For a
    /// line written by hand, read from the line as [`redact`] reads it.
    pub fn secret(&self, in_auth_exchange: bool) -> Option<&[u8]> {
        match self {
            Command::Pass(s) | Command::SaslResponse(s) => Some(s.expose()),
            Command::Apop { digest, .. } => Some(digest.expose()),
            Command::Auth { initial, .. } => initial.as_ref().map(Secret::expose),
            Command::Raw { line, .. } if in_auth_exchange => Some(line),
            Command::Raw { line, .. } => {
                let skip = match verb(line).as_str() {
                    "PASS" => 1,
                    "APOP" | "AUTH" => 2,
                    _ => return None,
                };
                line.splitn(skip + 1, u8::is_ascii_whitespace).nth(skip)
            }
            _ => None,
        }
    }

    /// The reply's shape as its caller reads it.
    pub fn shape(&self) -> Shape {
        match self {
            Command::List(None)
            | Command::Retr(_)
            | Command::Top { .. }
            | Command::Uidl(None)
            | Command::Capa
            | Command::Lang(None) => Shape::MultiLine,
            Command::Raw { shape, .. } => *shape,
            _ => Shape::Status,
        }
    }

    /// How the server frames the reply, whatever its caller reads of it: `_shortcmd("RETR
    /// 1")` reads a status line, and the body that follows is still this reply's.
    pub fn framing(&self) -> Shape {
        match self {
            Command::Raw { line, shape } if *shape == Shape::Status => inferred(line),
            other => other.shape(),
        }
    }

    /// A step of logging in (RFC 1939 §7, RFC 5034): a bare `-ERR` to it means the
    /// credentials were refused. Lines written by hand are not, as in poplib.
    pub fn is_login_step(&self) -> bool {
        matches!(
            self,
            Command::User(_)
                | Command::Pass(_)
                | Command::Apop { .. }
                | Command::Rpop(_)
                | Command::Auth { .. }
                | Command::SaslResponse(_)
                | Command::SaslCancel
        )
    }

    /// An answer inside an AUTH exchange (RFC 5034 §4), valid only while one is open.
    pub fn is_sasl_answer(&self) -> bool {
        matches!(self, Command::SaslResponse(_) | Command::SaslCancel)
    }
}

/// Refuses CR, LF and NUL in `arg`; a secret's error says only which byte it holds.
fn check(arg: &[u8], what: &str, secret: bool) -> Result<(), ProtoError> {
    let Some(pos) = memchr::memchr3(b'\r', b'\n', 0, arg) else {
        return Ok(());
    };
    let byte = match arg[pos] {
        b'\r' => "CR",
        b'\n' => "LF",
        _ => "NUL",
    };
    let at = if secret {
        String::new()
    } else {
        format!(" at offset {pos}")
    };
    Err(ProtoError::InvalidArgument(format!(
        "the {what} contains a {byte} byte{at}; POP3 arguments may not contain CR, LF or NUL"
    )))
}

/// Arguments that are one word: an empty or blank one would be read by the server as no
/// argument at all, whose reply has another shape (`UIDL ` gets the whole listing), and every
/// later reply would be taken for the wrong command.
const TOKENS: [&str; 4] = [
    "message number",
    "line count",
    "SASL mechanism",
    "language tag",
];

fn check_token(arg: &[u8], what: &str) -> Result<(), ProtoError> {
    if arg.is_empty() {
        return Err(ProtoError::InvalidArgument(format!(
            "the {what} is empty; give one, e.g. 1"
        )));
    }
    match arg.iter().position(u8::is_ascii_whitespace) {
        None => Ok(()),
        Some(pos) => Err(ProtoError::InvalidArgument(format!(
            "the {what} contains white space at offset {pos}; it must be one word, e.g. 1"
        ))),
    }
}

/// The reply shape a line written by hand gets when its caller does not say (poplib's
/// `_putline`): multi-line for the commands whose reply is (RFC 1939, 2449, 6856).
fn inferred(line: &[u8]) -> Shape {
    // Servers split words on any white space and ignore it at the end ("UIDL " is UIDL).
    let has_arg = line
        .split(u8::is_ascii_whitespace)
        .filter(|word| !word.is_empty())
        .nth(1)
        .is_some();
    match verb(line).as_str() {
        "RETR" | "TOP" | "CAPA" => Shape::MultiLine,
        "LIST" | "UIDL" | "LANG" | "AUTH" if !has_arg => Shape::MultiLine,
        _ => Shape::Status,
    }
}

/// The verb of a command line, upper-cased (`b"retr 1"` -> `"RETR"`).
pub fn verb(line: &[u8]) -> String {
    let end = line
        .iter()
        .position(u8::is_ascii_whitespace)
        .unwrap_or(line.len());
    String::from_utf8_lossy(&line[..end]).to_ascii_uppercase()
}

/// A copy of a line written by hand fit for logs: arguments of commands that carry secrets
/// are masked. `in_auth_exchange` marks SASL continuation lines, which are secret in full.
pub fn redact(line: &[u8], in_auth_exchange: bool) -> Vec<u8> {
    if in_auth_exchange {
        return if line.is_empty() || line == b"*" {
            line.to_vec()
        } else {
            MASK.to_vec()
        };
    }
    let keep_words = match verb(line).as_str() {
        "PASS" => 1,
        "APOP" => 2,
        "AUTH" => 2,
        _ => return line.to_vec(),
    };
    let mut out = Vec::with_capacity(line.len());
    for (i, word) in line.split(u8::is_ascii_whitespace).enumerate() {
        if i > 0 {
            out.push(b' ');
        }
        if i < keep_words {
            out.extend_from_slice(word);
        } else {
            out.extend_from_slice(MASK);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(command: &Command) -> Vec<u8> {
        let mut out = Vec::new();
        command.encode(&mut out).unwrap();
        out
    }

    fn secret(value: &[u8]) -> Secret {
        Secret::new(value)
    }

    #[test]
    fn renders_each_command() {
        let n = || b"1".to_vec();
        let cases: Vec<(Command, &[u8])> = vec![
            (Command::User(b"bob".to_vec()), b"USER bob\r\n"),
            (Command::Pass(secret(b"hunter2")), b"PASS hunter2\r\n"),
            (
                Command::Apop {
                    user: b"mrose".to_vec(),
                    digest: secret(b"c4c9334bac560ecc979e58001b3e22fb"),
                },
                b"APOP mrose c4c9334bac560ecc979e58001b3e22fb\r\n",
            ),
            (Command::Rpop(b"bob".to_vec()), b"RPOP bob\r\n"),
            (Command::Stat, b"STAT\r\n"),
            (Command::List(None), b"LIST\r\n"),
            (Command::List(Some(n())), b"LIST 1\r\n"),
            (Command::Retr(n()), b"RETR 1\r\n"),
            (Command::Dele(n()), b"DELE 1\r\n"),
            (Command::Noop, b"NOOP\r\n"),
            (Command::Rset, b"RSET\r\n"),
            (Command::Quit, b"QUIT\r\n"),
            (
                Command::Top {
                    which: n(),
                    lines: b"10".to_vec(),
                },
                b"TOP 1 10\r\n",
            ),
            (Command::Uidl(None), b"UIDL\r\n"),
            (Command::Uidl(Some(n())), b"UIDL 1\r\n"),
            (Command::Capa, b"CAPA\r\n"),
            (Command::Stls, b"STLS\r\n"),
            (
                Command::Auth {
                    mechanism: b"PLAIN".to_vec(),
                    initial: Some(secret(b"AGJvYgBzZWNyZXQ=")),
                },
                b"AUTH PLAIN AGJvYgBzZWNyZXQ=\r\n",
            ),
            (
                Command::Auth {
                    mechanism: b"XOAUTH2".to_vec(),
                    initial: None,
                },
                b"AUTH XOAUTH2\r\n",
            ),
            (Command::SaslResponse(secret(b"dXNlcg==")), b"dXNlcg==\r\n"),
            (Command::SaslCancel, b"*\r\n"),
            (Command::Utf8, b"UTF8\r\n"),
            (Command::Lang(None), b"LANG\r\n"),
            (Command::Lang(Some(b"de".to_vec())), b"LANG de\r\n"),
            (Command::raw(b"XTND XMIT".to_vec(), None), b"XTND XMIT\r\n"),
        ];
        for (command, expected) in cases {
            assert_eq!(wire(&command), expected, "{command:?}");
        }
    }

    #[test]
    fn cr_lf_or_nul_in_any_argument_is_refused_and_nothing_is_written() {
        let bad: Vec<Command> = vec![
            Command::User(b"a\r\nDELE 1".to_vec()),
            Command::Retr(b"1\nDELE 1".to_vec()),
            Command::Top {
                which: b"1".to_vec(),
                lines: b"0\r".to_vec(),
            },
            Command::Lang(Some(b"de\0".to_vec())),
            Command::raw(b"NOOP\r\nDELE 1".to_vec(), None),
            Command::Pass(secret(b"hun\r\nter2")),
            Command::SaslResponse(secret(b"abc\n")),
        ];
        for command in bad {
            let mut out = b"NOOP\r\n".to_vec();
            let err = command.encode(&mut out).unwrap_err();
            assert_eq!(out, b"NOOP\r\n", "{command:?}");
            let ProtoError::InvalidArgument(text) = err else {
                panic!("{command:?}: not an argument error: {err:?}");
            };
            assert!(text.contains("may not contain CR, LF or NUL"), "{text}");
            assert!(!text.contains("hun") && !text.contains("abc"), "{text}");
        }
        let err = Command::Pass(secret(b"hunter2\r\n")).encode(&mut Vec::new());
        assert_eq!(
            err.unwrap_err().to_string(),
            "the password contains a CR byte; POP3 arguments may not contain CR, LF or NUL"
        );
        let err = Command::Retr(b"1\n".to_vec()).encode(&mut Vec::new());
        assert_eq!(
            err.unwrap_err().to_string(),
            "the message number contains a LF byte at offset 1; POP3 arguments may not contain CR, LF or NUL"
        );
    }

    #[test]
    fn secrets_never_show_in_debug_or_trace() {
        let commands = [
            Command::Pass(secret(b"hunter2")),
            Command::Apop {
                user: b"bob".to_vec(),
                digest: secret(b"c4c9334bac560ecc979e58001b3e22fb"),
            },
            Command::Auth {
                mechanism: b"PLAIN".to_vec(),
                initial: Some(secret(b"AGJvYgBodW50ZXIy")),
            },
            Command::SaslResponse(secret(b"aHVudGVyMg==")),
        ];
        let shown = [
            &b"PASS ****"[..],
            b"APOP bob ****",
            b"AUTH PLAIN ****",
            b"****",
        ];
        for (command, shown) in commands.iter().zip(shown) {
            let debug = format!("{command:?}");
            let value = command.secret(false).unwrap();
            assert!(
                !debug.contains(std::str::from_utf8(value).unwrap()),
                "{debug}"
            );
            assert!(debug.contains("Secret(****)"), "{debug}");
            assert_eq!(command.traced(false), shown);
        }
        assert_eq!(Command::SaslCancel.traced(true), b"*");
        assert_eq!(Command::User(b"bob".to_vec()).traced(false), b"USER bob");
    }

    #[test]
    fn lines_written_by_hand_are_read_from_the_line() {
        let pass = Command::raw(b"pass two words".to_vec(), Some(Shape::Status));
        assert_eq!(pass.traced(false), b"pass **** ****");
        assert_eq!(pass.secret(false), Some(&b"two words"[..]));
        assert!(
            !pass.is_login_step(),
            "poplib's _shortcmd raises plain error_proto"
        );
        assert_eq!(
            Command::raw(b"dXNlcg==".to_vec(), None).traced(true),
            b"****"
        );
        assert_eq!(Command::raw(b"*".to_vec(), None).traced(true), b"*");
        // `_shortcmd("RETR 1")` reads a status line; the body still belongs to that reply.
        let retr = Command::raw(b"retr 1".to_vec(), Some(Shape::Status));
        assert_eq!(
            (retr.shape(), retr.framing()),
            (Shape::Status, Shape::MultiLine)
        );
        assert_eq!(
            Command::raw(b"LIST".to_vec(), None).shape(),
            Shape::MultiLine
        );
        assert_eq!(
            Command::raw(b"LIST 1".to_vec(), None).shape(),
            Shape::Status
        );
    }

    #[test]
    fn shapes_and_login_steps() {
        assert_eq!(Command::List(None).shape(), Shape::MultiLine);
        assert_eq!(Command::List(Some(b"1".to_vec())).shape(), Shape::Status);
        assert_eq!(Command::Capa.shape(), Shape::MultiLine);
        assert_eq!(Command::Noop.shape(), Shape::Status);
        assert!(Command::User(b"bob".to_vec()).is_login_step());
        assert!(Command::SaslCancel.is_login_step());
        assert!(!Command::Noop.is_login_step());
    }

    #[test]
    fn redacts_hand_written_secrets() {
        assert_eq!(redact(b"PASS hunter2", false), b"PASS ****");
        assert_eq!(
            redact(b"APOP bob c4c9334bac560ecc979e58001b3e22fb", false),
            b"APOP bob ****"
        );
        assert_eq!(
            redact(b"AUTH PLAIN AGJvYgBzZWNyZXQ=", false),
            b"AUTH PLAIN ****"
        );
        assert_eq!(redact(b"AUTH XOAUTH2", false), b"AUTH XOAUTH2");
        assert_eq!(redact(b"USER bob", false), b"USER bob");
    }

    #[test]
    fn verb_is_uppercased() {
        assert_eq!(verb(b"retr 1"), "RETR");
        assert_eq!(verb(b"NOOP"), "NOOP");
        assert_eq!(verb(b"pass\thunter2"), "PASS");
    }

    #[test]
    fn blank_words_do_not_change_the_reply_shape() {
        // "UIDL " is UIDL without argument to the server: a multi-line reply.
        for line in [&b"UIDL "[..], b"uidl\t", b"LIST  ", b"RETR 1"] {
            assert_eq!(inferred(line), Shape::MultiLine, "{line:?}");
        }
        assert_eq!(inferred(b"UIDL 1 "), Shape::Status);
        for n in [&b""[..], b" ", b"\t", b"1 2"] {
            let err = Command::Uidl(Some(n.to_vec()))
                .encode(&mut Vec::new())
                .unwrap_err();
            assert!(err.to_string().contains("message number"), "{err}");
        }
        let err = Command::Top {
            which: b"1".to_vec(),
            lines: b"".to_vec(),
        }
        .encode(&mut Vec::new())
        .unwrap_err();
        assert_eq!(err.to_string(), "the line count is empty; give one, e.g. 1");
    }

    #[test]
    fn a_password_after_a_tab_is_masked() {
        let line = b"PASS\thunter2".to_vec();
        assert_eq!(redact(&line, false), b"PASS ****".to_vec());
        let raw = Command::raw(line, None);
        assert_eq!(raw.secret(false), Some(&b"hunter2"[..]));
    }
}
