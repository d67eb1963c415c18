//! `Connection`: one POP3 session with its driver, as a Python class. Every operation is one
//! call: convert the arguments, run the session's job (blocking with the GIL released, or on
//! tokio with the result delivered to asyncio through `reactor`), convert the result.
//!
//! Each operation takes `(reactor, op_id)` first: `reactor=None` runs it blocking and returns
//! the result; a reactor starts it on tokio and returns a `Pending` whose result reaches the
//! event loop. The same session code serves both, and nothing is written twice.
//!
//! This module holds the class and its methods; [`run`] runs an operation on the driver,
//! [`job`] is the `Job` Python pumps when it moves the bytes, [`conversion`] turns results
//! into Python values, and [`status`] holds what accessors read while an operation runs.

mod conversion;
mod job;
mod run;
mod status;

use std::net::Shutdown;
use std::sync::atomic::Ordering;
use std::sync::{Arc, TryLockError};
use std::time::Duration;

use pyo3::exceptions::{PyOverflowError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use pyo3::IntoPyObjectExt;

use self::run::{check_signals, raised, Io};
use self::status::{Handle, Shared};
use super::command::PyCommand;
use super::reactor::{runtime, Pending, Reactor};
use super::tls_settings::TlsSettings;
use crate::error::{Error, Result};
use crate::proto::response::Limits;
use crate::proto::session::{Closed, Collect, Expect, Facts, Request, Session, State};
use crate::proto::ProtoError;
use crate::transport::blocking::BlockingIo;
use crate::transport::tokio::TokioIo;
use crate::transport::ConnectOptions;

pub use self::job::PyJob;

/// The largest timeout accepted, in seconds (about 292 years: i64 nanoseconds).
const MAX_TIMEOUT: f64 = 9.2e9;

/// Seconds as Python gives them: positive and finite, or `None` to wait forever.
pub fn duration(seconds: Option<f64>) -> PyResult<Option<Duration>> {
    match seconds {
        None => Ok(None),
        Some(s) if s.is_nan() || s <= 0.0 => Err(PyValueError::new_err(format!(
            "timeout must be a positive number of seconds or None, not {s}"
        ))),
        // Python's sockets refuse what does not fit a time_t in nanoseconds; so do we.
        Some(s) if s > MAX_TIMEOUT => Err(PyOverflowError::new_err(format!(
            "timeout {s} is too large (at most {MAX_TIMEOUT:e} s); use None to wait forever"
        ))),
        Some(s) => Ok(Some(Duration::from_secs_f64(s))),
    }
}

pub fn limits(
    max_status_line: usize,
    max_line_length: usize,
    max_response_size: usize,
) -> PyResult<Limits> {
    if max_status_line < 3 || max_line_length < 3 || max_response_size < 3 {
        return Err(PyValueError::new_err(
            "line and response limits must be at least 3 bytes",
        ));
    }
    Ok(Limits {
        max_status_line,
        max_line_length,
        max_response_size,
    })
}

fn new_session(limits: Limits, tls: bool) -> Session {
    if tls {
        Session::new_tls(limits)
    } else {
        Session::new(limits)
    }
}

#[pyclass(module = "fastpoplib._core", frozen)]
pub struct Connection {
    shared: Arc<Shared>,
}

impl Connection {
    fn facts(&self) -> Arc<Facts> {
        self.shared.status().facts.clone()
    }
}

#[pymethods]
impl Connection {
    /// Connects (and with `tls` performs the TLS handshake at once: implicit TLS). Blocking
    /// without a reactor; with one, a `Pending` that resolves to the connection.
    #[staticmethod]
    #[pyo3(signature = (reactor, op, host, port, *, timeout=None, source_address=None, tls=None, max_status_line, max_line_length, max_response_size))]
    #[allow(clippy::too_many_arguments)]
    fn connect(
        py: Python<'_>,
        reactor: Option<&Bound<'_, Reactor>>,
        op: u64,
        host: String,
        port: u16,
        timeout: Option<f64>,
        source_address: Option<(String, u16)>,
        tls: Option<PyRef<'_, TlsSettings>>,
        max_status_line: usize,
        max_line_length: usize,
        max_response_size: usize,
    ) -> PyResult<Py<PyAny>> {
        let limits = limits(max_status_line, max_line_length, max_response_size)?;
        let opts = ConnectOptions {
            host,
            port,
            timeout: duration(timeout)?,
            source_address,
            limits,
        };
        let config = tls.map(|t| t.config.clone());
        let implicit_tls = config.is_some();
        match reactor {
            None => {
                let io = py
                    .detach(|| -> Result<BlockingIo> {
                        let mut io = BlockingIo::connect(&opts, &mut check_signals)?;
                        if let Some(config) = config {
                            io.handshake(config, &mut check_signals)?;
                        }
                        Ok(io)
                    })
                    .map_err(|err| raised(py, err))?;
                let session = new_session(limits, implicit_tls);
                let shared = Shared::new(session, Io::Blocking(io), opts.timeout);
                Connection { shared }.into_py_any(py)
            }
            Some(reactor) => {
                let done_queue = reactor.get().shared.clone();
                let handle = runtime().spawn(async move {
                    let result: Result<TokioIo> = async {
                        let mut io = TokioIo::connect(&opts).await?;
                        if let Some(config) = config {
                            io.handshake(config).await?;
                        }
                        Ok(io)
                    }
                    .await;
                    done_queue.complete(
                        op,
                        Box::new(move |py| {
                            let io = result?;
                            Connection {
                                shared: Shared::new(
                                    new_session(limits, implicit_tls),
                                    Io::Tokio(io),
                                    opts.timeout,
                                ),
                            }
                            .into_py_any(py)
                        }),
                    );
                });
                Pending {
                    handle: handle.abort_handle(),
                    on_abort: None,
                }
                .into_py_any(py)
            }
        }
    }

    /// A session whose bytes Python moves (its own socket, or an `ssl.SSLSocket` made with the
    /// caller's context): every operation returns a `Job` to pump. `tls`: the socket is
    /// already a TLS one (implicit TLS).
    #[staticmethod]
    #[pyo3(signature = (*, max_status_line, max_line_length, max_response_size, tls=false))]
    fn external(
        max_status_line: usize,
        max_line_length: usize,
        max_response_size: usize,
        tls: bool,
    ) -> PyResult<Self> {
        let limits = limits(max_status_line, max_line_length, max_response_size)?;
        Ok(Connection {
            shared: Shared::new(new_session(limits, tls), Io::External, None),
        })
    }

    /// Hands the plain socket over to Python (before a TLS handshake Python does with the
    /// caller's `ssl.SSLContext`): returns its file descriptor, which the caller now owns;
    /// later operations return a `Job`.
    fn detach(&self) -> PyResult<i64> {
        use std::os::fd::IntoRawFd;
        let mut core = self.shared.core.try_lock().map_err(|_| Error::Busy)?;
        let io = std::mem::replace(&mut core.io, Io::External);
        let fd = match io {
            Io::Blocking(b) => b.into_plain_tcp().map(IntoRawFd::into_raw_fd),
            Io::Tokio(t) => t.into_plain_tcp().map(IntoRawFd::into_raw_fd),
            other => {
                core.io = other;
                return Err(Error::from(ProtoError::Usage(
                    "this connection's socket cannot be handed over".into(),
                ))
                .into());
            }
        };
        self.shared.status().shutdown = None;
        match fd {
            Ok(fd) => Ok(i64::from(fd)),
            Err(err) => {
                core.session.close(Closed::Failed(err.to_string()));
                Err(err.into())
            }
        }
    }

    /// Sends `command` and reads its reply: `bytes` for a status line, `(resp, [lines],
    /// octets)` for a multi-line reply, or `(resp, data, octets)` with `as_bytes` (the body
    /// as one `bytes` with CRLF line ends). A `-ERR` raises ServerError (a RESP-CODES
    /// subclass; AuthenticationError for a bare `-ERR` to a login step).
    #[pyo3(signature = (reactor, op, command, *, as_bytes=false))]
    fn run(
        &self,
        py: Python<'_>,
        reactor: Option<&Bound<'_, Reactor>>,
        op: u64,
        command: PyRef<'_, PyCommand>,
        as_bytes: bool,
    ) -> PyResult<Py<PyAny>> {
        let collect = if as_bytes {
            Collect::Bytes
        } else {
            Collect::Lines
        };
        let request = Request::Command {
            command: command.command.clone(),
            collect,
        };
        self.execute(py, reactor, op, request, None)
    }

    /// poplib's `_putline`: sends only; the reply is read later with `claim`.
    fn put(
        &self,
        py: Python<'_>,
        reactor: Option<&Bound<'_, Reactor>>,
        op: u64,
        command: PyRef<'_, PyCommand>,
    ) -> PyResult<Py<PyAny>> {
        let command = command.command.clone();
        self.execute(py, reactor, op, Request::Put { command }, None)
    }

    /// poplib's `_getresp` / `_getlongresp` (`multiline`): the reply to the oldest command
    /// sent with `put` (or the greeting).
    #[pyo3(signature = (reactor, op, *, multiline=false))]
    fn claim(
        &self,
        py: Python<'_>,
        reactor: Option<&Bound<'_, Reactor>>,
        op: u64,
        multiline: bool,
    ) -> PyResult<Py<PyAny>> {
        let expect = if multiline {
            Expect::Lines
        } else {
            Expect::Status
        };
        self.execute(py, reactor, op, Request::Claim { expect }, None)
    }

    /// poplib's `_getline`: the next line as it arrived, line end included; with `max`, at
    /// most `max` bytes of it (io's `readline(max)`), the next call going on from there.
    #[pyo3(signature = (reactor, op, max=None))]
    fn raw_line(
        &self,
        py: Python<'_>,
        reactor: Option<&Bound<'_, Reactor>>,
        op: u64,
        max: Option<usize>,
    ) -> PyResult<Py<PyAny>> {
        self.execute(py, reactor, op, Request::RawLine { max }, None)
    }

    /// CAPA: `(resp, [lines], octets)`; the session keeps what decides pipelining.
    fn capa(
        &self,
        py: Python<'_>,
        reactor: Option<&Bound<'_, Reactor>>,
        op: u64,
    ) -> PyResult<Py<PyAny>> {
        self.execute(py, reactor, op, Request::Capa, None)
    }

    /// LIST and UIDL merged: `[MessageInfo]`.
    fn messages(
        &self,
        py: Python<'_>,
        reactor: Option<&Bound<'_, Reactor>>,
        op: u64,
    ) -> PyResult<Py<PyAny>> {
        self.execute(py, reactor, op, Request::Messages, None)
    }

    /// Sends `command` (one with a multi-line reply), reads its status: `(resp, stream id)`;
    /// the body is read with `chunk`.
    fn open_stream(
        &self,
        py: Python<'_>,
        reactor: Option<&Bound<'_, Reactor>>,
        op: u64,
        command: PyRef<'_, PyCommand>,
    ) -> PyResult<Py<PyAny>> {
        let command = command.command.clone();
        self.execute(py, reactor, op, Request::StreamOpen { command }, None)
    }

    /// The next chunk (about `size` bytes, CRLF line ends) of stream `id`; `None` at its end.
    fn chunk(
        &self,
        py: Python<'_>,
        reactor: Option<&Bound<'_, Reactor>>,
        op: u64,
        id: u64,
        size: i64,
    ) -> PyResult<Py<PyAny>> {
        let max = self
            .shared
            .core
            .try_lock()
            .map(|c| c.session.limits().max_response_size)
            .unwrap_or(usize::MAX);
        if size <= 0 || usize::try_from(size).map_or(true, |s| s > max) {
            return Err(PyValueError::new_err(format!(
                "chunk_size must be between 1 and max_response_size ({max}) bytes, not {size}"
            )));
        }
        self.execute(
            py,
            reactor,
            op,
            Request::StreamNext {
                id,
                max: size as usize,
            },
            None,
        )
    }

    /// The stream's iterator is gone: the rest of its body will be read and dropped.
    fn drop_stream(&self, id: u64) {
        self.shared.handle_dropped(Handle::Stream(id));
    }

    /// Registers a batch of commands (nothing is sent yet; bodies kept as lines): its id for
    /// `batch_next`.
    fn batch(&self, commands: Vec<PyRef<'_, PyCommand>>) -> PyResult<u64> {
        let commands = commands.iter().map(|c| c.command.clone()).collect();
        let mut core = self.shared.core.try_lock().map_err(|_| Error::Busy)?;
        Ok(core
            .session
            .batch(commands, Collect::Lines)
            .map_err(Error::from)?)
    }

    /// The next reply of batch `id`: `(index, reply or ServerError)`, `None` when done.
    fn batch_next(
        &self,
        py: Python<'_>,
        reactor: Option<&Bound<'_, Reactor>>,
        op: u64,
        id: u64,
    ) -> PyResult<Py<PyAny>> {
        self.execute(py, reactor, op, Request::BatchNext { id }, None)
    }

    /// The batch's iterator is gone: replies still in flight will be read and dropped.
    fn drop_batch(&self, id: u64) {
        self.shared.handle_dropped(Handle::Batch(id));
    }

    /// STLS, then the TLS handshake; returns the server's `+OK` line. `tls=None` on a
    /// connection whose bytes Python moves: Python does the handshake.
    fn starttls(
        &self,
        py: Python<'_>,
        reactor: Option<&Bound<'_, Reactor>>,
        op: u64,
        tls: Option<PyRef<'_, TlsSettings>>,
    ) -> PyResult<Py<PyAny>> {
        let config = tls.map(|t| t.config.clone());
        self.execute(py, reactor, op, Request::StartTls, config)
    }

    /// Closes the connection; safe to call more than once and from another thread or task:
    /// an operation in progress is interrupted (it raises) within one wait slice.
    fn close(
        &self,
        py: Python<'_>,
        reactor: Option<&Bound<'_, Reactor>>,
        op: u64,
    ) -> PyResult<Py<PyAny>> {
        self.shared.closed.close(Closed::ByCaller);
        {
            let mut status = self.shared.status();
            status.info.fd = -1;
            if let Some(tcp) = status.shutdown.take() {
                let _ = tcp.shutdown(Shutdown::Both);
            }
            if let Some(task) = status.task.take() {
                task.abort();
            }
        }
        match reactor {
            None => {
                if let Ok(mut core) = self.shared.core.try_lock() {
                    if let Io::Blocking(io) = &mut core.io {
                        io.close();
                    }
                    core.io = Io::Closed;
                }
                Ok(py.None())
            }
            Some(reactor) => {
                let done_queue = reactor.get().shared.clone();
                let core = self.shared.core.clone();
                let handle = runtime().spawn(async move {
                    let mut core = core.lock().await;
                    if let Io::Tokio(io) = &mut core.io {
                        io.close().await;
                    }
                    core.io = Io::Closed;
                    drop(core);
                    done_queue.complete(op, Box::new(|py| Ok(py.None())));
                });
                Pending {
                    handle: handle.abort_handle(),
                    on_abort: None,
                }
                .into_py_any(py)
            }
        }
    }

    /// Closes at once without waiting (no TLS close_notify if an operation is in progress).
    fn abort(&self, py: Python<'_>) -> PyResult<()> {
        self.close(py, None, 0).map(drop)
    }

    /// In a forked child, before Python swaps the inherited descriptor for one on
    /// `os.devnull` (`python/fastpoplib/_fork.py`): the session is closed for good, and the
    /// second handle kept to interrupt reads is closed, never shut down (a shutdown would end
    /// the parent's connection). Returns the socket's descriptor (`-1`: none), or `None` if
    /// another thread of the parent held the status at the fork (it never lets go in the
    /// child: waiting would hang every fork).
    fn disown(&self) -> Option<i64> {
        if !self.shared.closed.try_close(Closed::Inherited) {
            return None;
        }
        let mut status = match self.shared.status.try_lock() {
            Ok(status) => status,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return None,
        };
        status.shutdown = None;
        status.task = None;
        Some(std::mem::replace(&mut status.info.fd, -1))
    }

    #[getter]
    fn get_timeout(&self) -> Option<f64> {
        self.shared.status().timeout.map(|d| d.as_secs_f64())
    }

    #[setter]
    fn set_timeout(&self, timeout: Option<f64>) -> PyResult<()> {
        let t = duration(timeout)?;
        let mut core = self.shared.core.try_lock().map_err(|_| Error::Busy)?;
        match &mut core.io {
            Io::Blocking(io) => io.set_timeout(t),
            Io::Tokio(io) => io.set_timeout(t),
            Io::External | Io::Closed => {}
        }
        self.shared.status().timeout = t;
        Ok(())
    }

    /// Applies new limits (e.g. poplib's module-level `_MAXLINE` assigned after connecting).
    #[pyo3(signature = (*, max_status_line=None, max_line_length=None, max_response_size=None))]
    fn set_limits(
        &self,
        max_status_line: Option<usize>,
        max_line_length: Option<usize>,
        max_response_size: Option<usize>,
    ) -> PyResult<()> {
        let mut core = self.shared.core.try_lock().map_err(|_| Error::Busy)?;
        let old = core.session.limits();
        let new = limits(
            max_status_line.unwrap_or(old.max_status_line),
            max_line_length.unwrap_or(old.max_line_length),
            max_response_size.unwrap_or(old.max_response_size),
        )?;
        core.session.set_limits(new);
        Ok(())
    }

    /// Records command and status lines (secrets masked) for `take_trace`.
    fn set_trace(&self, on: bool) {
        self.shared.tracing.store(on, Ordering::Relaxed);
    }

    /// `[(sent, line)]` traced since the last call.
    fn take_trace(&self) -> Vec<(bool, Py<PyBytes>)> {
        let trace = std::mem::take(&mut self.shared.status().trace);
        Python::attach(|py| {
            trace
                .into_iter()
                .map(|(sent, line)| (sent, PyBytes::new(py, &line).unbind()))
                .collect()
        })
    }

    fn fileno(&self) -> i64 {
        self.shared.status().info.fd
    }

    fn peername(&self) -> Option<(String, u16)> {
        self.shared
            .status()
            .info
            .peer
            .map(|a| (a.ip().to_string(), a.port()))
    }

    fn sockname(&self) -> Option<(String, u16)> {
        self.shared
            .status()
            .info
            .local
            .map(|a| (a.ip().to_string(), a.port()))
    }

    /// `(protocol, cipher suite)` when TLS is active, else `None`.
    fn tls_info(&self) -> Option<(String, String)> {
        if self.shared.closed.is_closed() {
            return None;
        }
        self.shared.status().info.tls.clone()
    }

    /// Why the connection is closed (the session's one reason, as every later call raises
    /// it), or `None` while it is open.
    #[getter]
    fn closed(&self) -> Option<String> {
        self.shared.closed.get().map(|why| why.to_string())
    }

    /// RFC 1939 state: `"AUTHORIZATION"`, `"TRANSACTION"` or `"UPDATE"`, as the last
    /// operation left it.
    #[getter]
    fn state(&self) -> &'static str {
        match self.facts().state {
            State::Authorization => "AUTHORIZATION",
            State::Transaction => "TRANSACTION",
            State::Update => "UPDATE",
        }
    }

    /// An operation is in progress (the session is locked by it).
    #[getter]
    fn busy(&self) -> bool {
        self.shared.core.try_lock().is_err()
    }

    /// The greeting's status line (RFC 1939 §4), `None` until it was read.
    #[getter]
    fn welcome<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyBytes>> {
        let facts = self.facts();
        facts.greeting.as_deref().map(|g| PyBytes::new(py, g))
    }

    /// The greeting's APOP timestamp (RFC 1939 §7), `None` without one; a malformed one raises.
    #[getter]
    fn apop_timestamp<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let facts = self.facts();
        let Some(greeting) = facts.greeting.as_deref() else {
            return Ok(None);
        };
        Ok(crate::proto::greeting::apop_timestamp(greeting)
            .map_err(Error::from)?
            .map(|stamp| PyBytes::new(py, stamp)))
    }

    /// CAPA as last read, `[(name, [args])]`; `None` when not read since login or TLS.
    #[getter]
    fn capabilities(&self) -> Option<Vec<(String, Vec<String>)>> {
        self.facts().capabilities.as_ref().map(|c| c.list.clone())
    }

    /// TLS is up (implicit TLS, or STLS done).
    #[getter]
    fn tls(&self) -> bool {
        self.facts().tls
    }
}
