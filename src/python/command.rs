//! `Command` and `Secret` as Python sees them: frozen values built by static constructors and
//! handed to `Connection.run` (and `put`, `open_stream`, `batch`). The session reads from the
//! command itself its wire form, its reply's shape, whether it is a login step and what is
//! secret (`proto::command`).

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use zeroize::Zeroize;

use crate::error::Error;
use crate::proto::command::{Command, Secret, Shape};

/// A password, digest or SASL response: never shown (`repr` is `Secret(****)`), never
/// pickled, zeroed in Rust's memory when dropped.
#[pyclass(module = "fastpoplib._core", name = "Secret", frozen)]
pub struct PySecret(Secret);

#[pymethods]
impl PySecret {
    #[new]
    fn new(value: Vec<u8>) -> Self {
        PySecret(Secret::new(value))
    }

    fn __repr__(&self) -> &'static str {
        "Secret(****)"
    }

    fn __str__(&self) -> &'static str {
        "Secret(****)"
    }

    fn __reduce__(&self) -> PyResult<()> {
        Err(PyTypeError::new_err(
            "a Secret cannot be pickled: its value never leaves the process",
        ))
    }
}

/// One POP3 command (RFC 1939, 2449, 5034, 6856) as the session sends it. Arguments are
/// bytes; CR, LF and NUL in any of them are refused when the command is run
/// (InvalidArgumentError, nothing sent). `repr()` shows the line with secrets masked.
#[pyclass(module = "fastpoplib._core", name = "Command", frozen)]
pub struct PyCommand {
    pub(crate) command: Command,
}

fn made(command: Command) -> PyCommand {
    PyCommand { command }
}

#[pymethods]
impl PyCommand {
    /// `USER name` (RFC 1939 §7).
    #[staticmethod]
    fn user(name: Vec<u8>) -> Self {
        made(Command::User(name))
    }

    /// `PASS password` (RFC 1939 §7).
    #[staticmethod]
    #[pyo3(name = "pass_")]
    fn pass(password: PyRef<'_, PySecret>) -> Self {
        made(Command::Pass(password.0.clone()))
    }

    /// `APOP name digest` (RFC 1939 §7): the MD5 digest of the greeting's `timestamp` and
    /// `password`, made here.
    #[staticmethod]
    fn apop(user: Vec<u8>, password: PyRef<'_, PySecret>, timestamp: &[u8]) -> Self {
        let digest = crate::auth::apop::digest(timestamp, password.0.expose());
        made(Command::Apop {
            user,
            digest: Secret::new(digest),
        })
    }

    /// `RPOP name` (RFC 1081).
    #[staticmethod]
    fn rpop(name: Vec<u8>) -> Self {
        made(Command::Rpop(name))
    }

    #[staticmethod]
    fn stat() -> Self {
        made(Command::Stat)
    }

    /// `LIST` (multi-line), or `LIST which` (a status line).
    #[staticmethod]
    #[pyo3(signature = (which=None))]
    fn list(which: Option<Vec<u8>>) -> Self {
        made(Command::List(which))
    }

    #[staticmethod]
    fn retr(which: Vec<u8>) -> Self {
        made(Command::Retr(which))
    }

    #[staticmethod]
    fn dele(which: Vec<u8>) -> Self {
        made(Command::Dele(which))
    }

    #[staticmethod]
    fn noop() -> Self {
        made(Command::Noop)
    }

    #[staticmethod]
    fn rset() -> Self {
        made(Command::Rset)
    }

    #[staticmethod]
    fn quit() -> Self {
        made(Command::Quit)
    }

    /// `TOP which lines` (RFC 1939 §7).
    #[staticmethod]
    fn top(which: Vec<u8>, lines: Vec<u8>) -> Self {
        made(Command::Top { which, lines })
    }

    /// `UIDL` (multi-line), or `UIDL which` (a status line).
    #[staticmethod]
    #[pyo3(signature = (which=None))]
    fn uidl(which: Option<Vec<u8>>) -> Self {
        made(Command::Uidl(which))
    }

    /// `AUTH mechanism [initial-response]` (RFC 5034 §4); the initial response is base64,
    /// `=` when empty.
    #[staticmethod]
    #[pyo3(signature = (mechanism, initial=None))]
    fn auth(mechanism: Vec<u8>, initial: Option<PyRef<'_, PySecret>>) -> Self {
        made(Command::Auth {
            mechanism,
            initial: initial.map(|s| s.0.clone()),
        })
    }

    /// The answer (base64) to a server challenge in an AUTH exchange (RFC 5034 §4).
    #[staticmethod]
    fn sasl_response(response: PyRef<'_, PySecret>) -> Self {
        made(Command::SaslResponse(response.0.clone()))
    }

    /// `*`: cancels an AUTH exchange (RFC 5034 §4).
    #[staticmethod]
    fn sasl_cancel() -> Self {
        made(Command::SaslCancel)
    }

    /// `UTF8` (RFC 6856 §2).
    #[staticmethod]
    fn utf8() -> Self {
        made(Command::Utf8)
    }

    /// `LANG` (multi-line), or `LANG tag` (RFC 6856 §3).
    #[staticmethod]
    #[pyo3(signature = (tag=None))]
    fn lang(tag: Option<Vec<u8>>) -> Self {
        made(Command::Lang(tag))
    }

    /// A line written by hand (poplib's `_shortcmd`, `_longcmd`, `_putline`): its reply is a
    /// multi-line one or a status line as `multiline` says; `None` infers it from the verb.
    #[staticmethod]
    #[pyo3(signature = (line, multiline=None))]
    fn raw(line: Vec<u8>, multiline: Option<bool>) -> Self {
        let shape = multiline.map(|m| if m { Shape::MultiLine } else { Shape::Status });
        made(Command::raw(line, shape))
    }

    /// A bare `-ERR` to this command means the credentials were refused.
    #[getter]
    fn login_step(&self) -> bool {
        self.command.is_login_step()
    }

    /// The reply is a multi-line one (RFC 1939 §3).
    #[getter]
    fn multiline(&self) -> bool {
        self.command.shape() == Shape::MultiLine
    }

    /// The bytes this command puts on the wire, CRLF included, secrets in clear (as the
    /// server gets them). Raises InvalidArgumentError for CR, LF or NUL in an argument.
    fn encode<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let mut out = Vec::new();
        self.command.encode(&mut out).map_err(Error::from)?;
        let bytes = PyBytes::new(py, &out);
        out.zeroize();
        Ok(bytes)
    }

    fn __repr__(&self) -> String {
        format!(
            "Command({})",
            String::from_utf8_lossy(&self.command.traced(false))
        )
    }

    fn __str__(&self) -> String {
        self.__repr__()
    }
}
