//! `Connection`: the blocking driver as a Python class. Each method converts its arguments,
//! releases the GIL for the I/O, and converts the result; the poplib API is built on top of
//! these primitives in `python/fastpoplib/_client.py`.

use std::sync::Mutex;
use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

use super::errors::login_error;
use super::tls_settings::TlsSettings;
use crate::error::{Error, Result};
use crate::proto::response::{BytesSink, Limits, LinesSink};
use crate::transport::blocking::{BlockingConn, Check};
use crate::transport::ConnectOptions;

#[pyclass(module = "fastpoplib._core")]
pub struct Connection {
    inner: Mutex<BlockingConn>,
}

pub fn duration(seconds: Option<f64>) -> PyResult<Option<Duration>> {
    match seconds {
        None => Ok(None),
        Some(s) if s.is_finite() && s > 0.0 => Ok(Some(Duration::from_secs_f64(s))),
        Some(s) => Err(PyValueError::new_err(format!("timeout must be a positive number of seconds or None, not {s}"))),
    }
}

pub fn limits(max_line: usize, max_data_line: usize, max_response: usize) -> PyResult<Limits> {
    if max_line < 3 || max_data_line < 3 || max_response == 0 {
        return Err(PyValueError::new_err("line and response limits must be at least 3 bytes"));
    }
    Ok(Limits { max_status_line: max_line, max_data_line, max_response })
}

/// Builds `lines` as a Python list of bytes in one pass under the GIL.
pub fn py_lines<'py>(py: Python<'py>, sink: &LinesSink) -> PyResult<Bound<'py, PyList>> {
    PyList::new(py, sink.lines().map(|l| PyBytes::new(py, l)))
}

impl Connection {
    /// Runs `op` on the connection with the GIL released. Between read slices the GIL is taken
    /// back briefly to run Python signal handlers, so Ctrl-C interrupts a stalled read.
    fn run<T: Send>(&self, py: Python<'_>, op: impl FnOnce(&mut BlockingConn, Check) -> Result<T> + Send) -> PyResult<T> {
        self.run_as(py, false, op)
    }

    /// `run` for login commands: a bare `-ERR` becomes `AuthenticationError`.
    fn run_as<T: Send>(&self, py: Python<'_>, login: bool, op: impl FnOnce(&mut BlockingConn, Check) -> Result<T> + Send) -> PyResult<T> {
        let mut guard = match self.inner.try_lock() {
            Ok(g) => g,
            Err(std::sync::TryLockError::WouldBlock) => return Err(Error::Busy.into()),
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
        };
        let conn: &mut BlockingConn = &mut guard;
        let mut pending: Option<PyErr> = None;
        let result = py.detach(|| {
            let mut check = || -> Result<()> {
                Python::attach(|py| py.check_signals()).map_err(|e| {
                    pending = Some(e);
                    Error::Interrupted
                })
            };
            let result = op(conn, &mut check);
            if matches!(result, Err(Error::Interrupted)) {
                conn.shutdown("the connection was closed because an operation was interrupted".into());
            }
            result
        });
        match (result, pending) {
            (Ok(v), _) => Ok(v),
            (Err(Error::Interrupted), Some(e)) => Err(e),
            (Err(e), _) if login => Err(login_error(e)),
            (Err(e), _) => Err(e.into()),
        }
    }
}

#[pymethods]
impl Connection {
    /// Connects (and, with `tls`, performs the TLS handshake at once: implicit TLS).
    #[new]
    #[pyo3(signature = (host, port, *, timeout=None, source_address=None, tls=None, max_line=2048, max_data_line=1<<20, max_response=256<<20))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        host: String,
        port: u16,
        timeout: Option<f64>,
        source_address: Option<(String, u16)>,
        tls: Option<PyRef<'_, TlsSettings>>,
        max_line: usize,
        max_data_line: usize,
        max_response: usize,
    ) -> PyResult<Self> {
        let opts = ConnectOptions { host, port, timeout: duration(timeout)?, source_address, limits: limits(max_line, max_data_line, max_response)? };
        let config = tls.map(|t| t.config.clone());
        let conn = py.detach(|| BlockingConn::connect(&opts))?;
        let this = Connection { inner: Mutex::new(conn) };
        if let Some(config) = config {
            this.run(py, |c, check| c.handshake(config, check))?;
        }
        Ok(this)
    }

    /// Sends one line (CRLF appended; CR, LF and NUL refused).
    fn putline(&self, py: Python<'_>, line: &[u8]) -> PyResult<()> {
        self.run(py, |c, _| c.send_line(line))
    }

    /// Sends several lines in one write (pipelining); nothing is sent if any line is bad.
    fn putlines(&self, py: Python<'_>, lines: Vec<Vec<u8>>) -> PyResult<()> {
        self.run(py, |c, _| c.send_lines(&lines))
    }

    /// poplib's `_getline`: `(line without terminator, octets)`.
    fn getline(&self, py: Python<'_>) -> PyResult<(Py<PyBytes>, usize)> {
        let (line, octets) = self.run(py, |c, check| c.read_line(check))?;
        Ok((PyBytes::new(py, &line).unbind(), octets))
    }

    /// poplib's `_getresp`; with `login`, a bare `-ERR` raises `AuthenticationError`.
    #[pyo3(signature = (login=false))]
    fn getresp(&self, py: Python<'_>, login: bool) -> PyResult<Py<PyBytes>> {
        let resp = self.run_as(py, login, |c, check| c.read_status(check))?;
        Ok(PyBytes::new(py, &resp).unbind())
    }

    /// poplib's `_getlongresp`: `(status, [lines], octets)`.
    fn getlongresp<'py>(&self, py: Python<'py>) -> PyResult<(Py<PyBytes>, Bound<'py, PyList>, usize)> {
        self.longcmd_inner(py, None)
    }

    /// Sends a command and reads its status line.
    #[pyo3(signature = (line, login=false))]
    fn shortcmd(&self, py: Python<'_>, line: &[u8], login: bool) -> PyResult<Py<PyBytes>> {
        let resp = self
            .run_as(py, login, |c, check| {
                c.send_line(line)?;
                c.read_status(check)
            })?;
        Ok(PyBytes::new(py, &resp).unbind())
    }

    /// Sends a command whose `+OK` is followed by a multi-line body.
    fn longcmd<'py>(&self, py: Python<'py>, line: &[u8]) -> PyResult<(Py<PyBytes>, Bound<'py, PyList>, usize)> {
        self.longcmd_inner(py, Some(line))
    }

    /// Like `longcmd`, but the body comes back as one `bytes` with CRLF line ends.
    fn longcmd_bytes(&self, py: Python<'_>, line: &[u8]) -> PyResult<(Py<PyBytes>, Py<PyBytes>, usize)> {
        let (resp, sink, octets) = self.run(py, |c, check| {
            c.send_line(line)?;
            let mut sink = BytesSink::default();
            let (resp, octets) = c.read_long_reply(&mut sink, check)?;
            Ok((resp, sink, octets))
        })?;
        Ok((PyBytes::new(py, &resp).unbind(), PyBytes::new(py, &sink.data).unbind(), octets))
    }

    /// Sends a command whose body is then streamed with `read_chunk`.
    fn begin_body(&self, py: Python<'_>, line: &[u8]) -> PyResult<Py<PyBytes>> {
        let resp = self.run(py, |c, check| c.begin_body(line, check))?;
        Ok(PyBytes::new(py, &resp).unbind())
    }

    /// The next chunk of the streamed body, `None` at its end.
    fn read_chunk(&self, py: Python<'_>, max: usize) -> PyResult<Option<Py<PyBytes>>> {
        let chunk = self.run(py, |c, check| c.read_chunk(max, check))?;
        Ok(chunk.map(|data| PyBytes::new(py, &data).unbind()))
    }

    /// STLS, then the TLS handshake; returns the server's `+OK` line.
    fn starttls(&self, py: Python<'_>, tls: PyRef<'_, TlsSettings>) -> PyResult<Py<PyBytes>> {
        let config = tls.config.clone();
        let resp = self.run(py, |c, check| c.starttls(config, check))?;
        Ok(PyBytes::new(py, &resp).unbind())
    }

    /// Closes the socket; safe to call more than once.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        self.run(py, |c, _| {
            c.shutdown("the connection is closed".into());
            Ok(())
        })
    }

    #[getter]
    fn get_timeout(&self) -> Option<f64> {
        self.inner.lock().ok().and_then(|c| c.timeout()).map(|d| d.as_secs_f64())
    }

    #[setter]
    fn set_timeout(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<()> {
        let t = duration(timeout)?;
        self.run(py, |c, _| c.set_timeout(t))
    }

    /// Applies a new status-line limit (poplib's module-level `_MAXLINE`).
    fn set_max_line(&self, py: Python<'_>, max_line: usize) -> PyResult<()> {
        let mut l = self.run(py, |c, _| Ok(c.limits))?;
        l.max_status_line = max_line;
        let l = limits(l.max_status_line, l.max_data_line, l.max_response)?;
        self.run(py, |c, _| {
            c.limits = l;
            Ok(())
        })
    }

    fn fileno(&self) -> i64 {
        use std::os::fd::AsRawFd;
        self.inner.lock().ok().and_then(|c| c.tcp().map(|t| i64::from(t.as_raw_fd()))).unwrap_or(-1)
    }

    fn peername(&self) -> Option<(String, u16)> {
        let c = self.inner.lock().ok()?;
        c.peer_addr().map(|a| (a.ip().to_string(), a.port()))
    }

    fn sockname(&self) -> Option<(String, u16)> {
        let c = self.inner.lock().ok()?;
        c.tcp().and_then(|t| t.local_addr().ok()).map(|a| (a.ip().to_string(), a.port()))
    }

    /// `(protocol, cipher suite)` when TLS is active, else `None`.
    fn tls_info(&self) -> Option<(String, String)> {
        self.inner.lock().ok()?.tls_info()
    }
}

impl Connection {
    fn longcmd_inner<'py>(&self, py: Python<'py>, line: Option<&[u8]>) -> PyResult<(Py<PyBytes>, Bound<'py, PyList>, usize)> {
        let (resp, sink, octets) = self.run(py, |c, check| {
            if let Some(line) = line {
                c.send_line(line)?;
            }
            let mut sink = LinesSink::default();
            let (resp, octets) = c.read_long_reply(&mut sink, check)?;
            Ok((resp, sink, octets))
        })?;
        Ok((PyBytes::new(py, &resp).unbind(), py_lines(py, &sink)?, octets))
    }
}
