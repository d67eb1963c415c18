//! `Connection`: one POP3 session with its driver, as a Python class. Every operation is one
//! call: convert the arguments, run the session's job (blocking with the GIL released, or on
//! tokio with the result delivered to asyncio through `reactor`), convert the result.
//!
//! Each operation takes `(reactor, op_id)` first: `reactor=None` runs it blocking and returns
//! the result; a reactor starts it on tokio and returns a `Pending` whose result reaches the
//! event loop. The same session code serves both, and nothing is written twice.

use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::Duration;

use pyo3::exceptions::{PyOverflowError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};
use pyo3::IntoPyObjectExt;
use rustls::ClientConfig;
use tokio::sync::OwnedMutexGuard;

use super::errors::server_error;
use super::reactor::{runtime, Pending, Reactor};
use super::tls_settings::TlsSettings;
use crate::error::{Error, Result};
use crate::proto::response::{Limits, LinesSink, Segment};
use crate::proto::session::{Done, Expect, Facts, Job, MessageRow, Reply, Request, Session, State};
use crate::proto::ProtoError;
use crate::transport::blocking::BlockingIo;
use crate::transport::tokio::TokioIo;
use crate::transport::{ConnectOptions, Info};

enum Io {
    Blocking(BlockingIo),
    Tokio(TokioIo),
    /// Python moves the bytes (a socket of its own, an `ssl.SSLSocket` made with the user's
    /// context, an asyncio stream): each operation returns a [`PyJob`] it pumps.
    External,
    Closed,
}

/// The session and its driver: locked for the whole of an operation.
struct Core {
    session: Session,
    io: Io,
}

/// What may be read while an operation runs: never held across I/O.
struct Status {
    info: Info,
    /// What the server said (greeting, capabilities, TLS, RFC 1939 state): the session's own
    /// value, shared as it was when the last operation ended, never a copy kept apart.
    facts: Arc<Facts>,
    timeout: Option<Duration>,
    /// Why the connection is closed, once it is.
    closed: Option<String>,
    /// Lines traced by the session, waiting for Python to print or log them.
    trace: Vec<(bool, Vec<u8>)>,
    /// A second handle on a blocking socket, so `close()` can interrupt a stalled read.
    shutdown: Option<TcpStream>,
    /// The tokio task of the operation in progress, so `close()` can abort it.
    task: Option<tokio::task::AbortHandle>,
    /// Batches and streams whose Python objects went away while the session was busy.
    dropped: Vec<Handle>,
}

#[derive(Clone, Copy)]
enum Handle {
    Batch(u64),
    Stream(u64),
}

pub(crate) struct Shared {
    core: Arc<tokio::sync::Mutex<Core>>,
    status: Mutex<Status>,
    tracing: AtomicBool,
}

impl Shared {
    fn status(&self) -> MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn new(session: Session, io: Io, timeout: Option<Duration>) -> Arc<Self> {
        let info = match &io {
            Io::Blocking(b) => b.info(),
            Io::Tokio(t) => t.info(),
            Io::External | Io::Closed => Info::default(),
        };
        let shutdown = match &io {
            Io::Blocking(b) => b.shutdown_handle(),
            _ => None,
        };
        let facts = session.facts().clone();
        Arc::new(Shared {
            core: Arc::new(tokio::sync::Mutex::new(Core { session, io })),
            status: Mutex::new(Status {
                info,
                facts,
                timeout,
                closed: None,
                trace: Vec::new(),
                shutdown,
                task: None,
                dropped: Vec::new(),
            }),
            tracing: AtomicBool::new(false),
        })
    }

    /// Before an operation: apply what changed while the session was not locked.
    fn prepare(&self, core: &mut Core) -> Result<()> {
        let (dropped, closed) = {
            let mut status = self.status();
            (std::mem::take(&mut status.dropped), status.closed.clone())
        };
        for handle in dropped {
            match handle {
                Handle::Batch(id) => core.session.drop_batch(id),
                Handle::Stream(id) => core.session.drop_stream(id),
            }
        }
        if let Some(reason) = closed {
            return Err(Error::NotConnected(reason));
        }
        core.session.set_trace(self.tracing.load(Ordering::Relaxed));
        Ok(())
    }

    /// After an operation: publish the new state; a fatal error closes the connection, so a
    /// stream that may be mid-reply is never read again.
    fn settle<T>(&self, core: &mut Core, result: &Result<T>) {
        let trace = core.session.take_trace();
        let info = match &core.io {
            Io::Blocking(b) => Some(b.info()),
            Io::Tokio(t) => Some(t.info()),
            Io::External | Io::Closed => None,
        };
        let mut status = self.status();
        status.trace.extend(trace);
        status.facts = core.session.facts().clone();
        status.task = None;
        if let Some(info) = info {
            status.info = info;
        }
        if let Err(err) = result {
            if err.is_fatal() && status.closed.is_none() {
                status.closed = Some(match err {
                    Error::Interrupted => "the connection was closed because an operation was interrupted; open a new connection".into(),
                    other => format!("the connection was closed after an earlier error ({other}); open a new connection"),
                });
            }
        }
        if status.closed.is_some() {
            status.info.fd = -1;
            status.shutdown = None;
            drop(status);
            if let Io::Blocking(b) = &mut core.io {
                b.close();
            }
            core.io = Io::Closed;
        }
    }

    fn handle_dropped(self: &Arc<Self>, handle: Handle) {
        match self.core.try_lock() {
            Ok(mut core) => match handle {
                Handle::Batch(id) => core.session.drop_batch(id),
                Handle::Stream(id) => core.session.drop_stream(id),
            },
            Err(_) => self.status().dropped.push(handle),
        }
    }
}

/// Keeps the session locked for an async operation until Python has its result (so a second
/// call made before that is refused, deterministically); closes the connection if the
/// operation's task is dropped half-way (the asyncio task was cancelled).
struct Active {
    core: Option<OwnedMutexGuard<Core>>,
    shared: Arc<Shared>,
    /// Where the operation's outcome goes: an operation dropped half-way (cancelled by its
    /// caller, or aborted by `close()` from another task) still gets one, so no caller waits
    /// forever.
    done_queue: Arc<super::reactor::Shared>,
    op: u64,
}

impl Drop for Active {
    fn drop(&mut self) {
        if let Some(mut core) = self.core.take() {
            let reason = {
                let mut status = self.shared.status();
                status.info.fd = -1;
                status.task = None;
                status
                    .closed
                    .get_or_insert_with(|| "the connection was closed because an operation was cancelled; open a new connection".into())
                    .clone()
            };
            core.io = Io::Closed;
            drop(core);
            self.done_queue.complete(
                self.op,
                Box::new(move |_| Err(Error::NotConnected(reason).into())),
            );
        }
    }
}

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

fn expect(kind: u8) -> PyResult<Expect> {
    match kind {
        0 => Ok(Expect::Status),
        1 => Ok(Expect::Lines),
        2 => Ok(Expect::Bytes),
        _ => Err(PyValueError::new_err(
            "reply kind must be 0 (status), 1 (lines) or 2 (bytes)",
        )),
    }
}

fn new_session(limits: Limits, tls: bool) -> Session {
    if tls {
        Session::new_tls(limits)
    } else {
        Session::new(limits)
    }
}

/// Converts a finished job to Python (on the thread that holds the GIL).
type Convert = fn(Python<'_>, Done, bool) -> PyResult<Py<PyAny>>;

#[pyclass(module = "fastpoplib._core", frozen)]
pub struct Connection {
    shared: Arc<Shared>,
}

impl Connection {
    fn facts(&self) -> Arc<Facts> {
        self.shared.status().facts.clone()
    }

    /// Runs `request` blocking (no reactor) or on tokio (a reactor: returns a `Pending`).
    #[allow(clippy::too_many_arguments)]
    fn execute(
        &self,
        py: Python<'_>,
        reactor: Option<&Bound<'_, Reactor>>,
        op: u64,
        request: Request,
        tls: Option<Arc<ClientConfig>>,
        login: bool,
        convert: Convert,
    ) -> PyResult<Py<PyAny>> {
        let shared = self.shared.clone();
        // Closed (after an error, a cancellation, or by `close()`) is said before busy: a
        // cancelled operation may still be unwinding on tokio for a moment.
        if let Some(reason) = shared.status().closed.clone() {
            return Err(Error::NotConnected(reason).into());
        }
        if matches!(
            shared.core.try_lock().map(|c| matches!(c.io, Io::External)),
            Ok(true)
        ) {
            let mut core = shared
                .core
                .clone()
                .try_lock_owned()
                .map_err(|_| Error::Busy)?;
            shared.prepare(&mut core)?;
            let job = core.session.start(request).map_err(Error::from)?;
            let state = JobState {
                core,
                job,
                convert,
                login,
                shared: shared.clone(),
                early: None,
            };
            return PyJob {
                state: Mutex::new(Some(state)),
                shared,
            }
            .into_py_any(py);
        }
        match reactor {
            None => {
                let mut core = shared.core.try_lock().map_err(|_| Error::Busy)?;
                shared.prepare(&mut core)?;
                let job = core.session.start(request).map_err(Error::from)?;
                let result = blocking(py, &mut core, job, tls.as_ref());
                shared.settle(&mut core, &result);
                drop(core);
                match result {
                    Ok((
                        Done::Reply(Ok(Reply::Lines {
                            status,
                            lines,
                            octets,
                        })),
                        Some(early),
                    )) => {
                        let early = early.into_bound(py);
                        extend(&early, lines.into_segments())?;
                        (PyBytes::new(py, &status), early, octets).into_py_any(py)
                    }
                    Ok((Done::Messages(rows), Some(early))) => {
                        let early = early.into_bound(py);
                        extend_infos(&early, rows)?;
                        early.into_py_any(py)
                    }
                    Ok((done, _)) => convert(py, done, login),
                    Err(Error::Interrupted) => {
                        Err(PyErr::take(py).unwrap_or_else(|| Error::Interrupted.into()))
                    }
                    Err(err) => Err(err.into()),
                }
            }
            Some(reactor) => {
                let mut core = shared
                    .core
                    .clone()
                    .try_lock_owned()
                    .map_err(|_| Error::Busy)?;
                shared.prepare(&mut core)?;
                let job = core.session.start(request).map_err(Error::from)?;
                let done_queue = reactor.get().shared.clone();
                let task_shared = shared.clone();
                let mut active = Active {
                    core: Some(core),
                    shared: shared.clone(),
                    done_queue: done_queue.clone(),
                    op,
                };
                let handle = runtime().spawn(async move {
                    let core = active.core.as_mut().expect("held until delivered");
                    let Core { session, io } = &mut **core;
                    let result = match io {
                        Io::Tokio(io) => io.run(session, job, tls.as_ref()).await,
                        _ => Err(Error::NotConnected(
                            "the connection is closed; open a new one".into(),
                        )),
                    };
                    task_shared.settle(core, &result);
                    let core = active.core.take();
                    done_queue.complete(
                        op,
                        Box::new(move |py| {
                            let out = match result {
                                Ok(done) => convert(py, done, login),
                                Err(err) => Err(err.into()),
                            };
                            drop(core);
                            out
                        }),
                    );
                });
                shared.status().task = Some(handle.abort_handle());
                let cancelled = shared.clone();
                Ok(Pending {
                    handle: handle.abort_handle(),
                    // The caller gave up mid-reply: the connection is closed from now on, not
                    // once tokio has unwound the operation.
                    on_abort: Some(Box::new(move || {
                        cancelled.status().closed.get_or_insert_with(|| {
                            "the connection was closed because an operation was cancelled; open a new connection".into()
                        });
                    })),
                }
                .into_py_any(py)?)
            }
        }
    }
}

/// The blocking run: GIL released; between 50 ms slices the GIL is taken back briefly to run
/// Python signal handlers, so Ctrl-C interrupts any wait.
///
/// The lines of a large body become Python objects as they arrive (each full segment under a
/// brief GIL hold): the Rust copy is freed as it goes, so the peak is about the size of the
/// result, as with poplib. They come back as the list to continue.
fn blocking(
    py: Python<'_>,
    core: &mut Core,
    job: Job,
    tls: Option<&Arc<ClientConfig>>,
) -> Result<(Done, Option<Py<PyList>>)> {
    let Core { session, io } = core;
    let Io::Blocking(io) = io else {
        return Err(Error::NotConnected(
            "the connection is closed; open a new one".into(),
        ));
    };
    let mut early: Option<Py<PyList>> = None;
    let mut failed: Option<PyErr> = None;
    let done = py.detach(|| {
        let mut check =
            || -> Result<()> { Python::attach(|py| py.check_signals()).map_err(interrupted) };
        let mut arrived = |session: &mut Session, job: &mut Job| {
            let segments = session.take_segments(job);
            let rows = session.take_rows(job);
            if (segments.is_empty() && rows.is_empty()) || failed.is_some() {
                return;
            }
            Python::attach(|py| {
                let list = early
                    .get_or_insert_with(|| PyList::empty(py).unbind())
                    .bind(py);
                if let Err(err) = extend(list, segments).and_then(|()| extend_infos(list, rows)) {
                    failed = Some(err);
                }
            });
        };
        io.run(session, job, tls, &mut check, &mut arrived)
    })?;
    match failed {
        Some(err) => Python::attach(|py| {
            err.restore(py);
            Err(Error::Interrupted)
        }),
        None => Ok((done, early)),
    }
}

/// Appends the lines of `segments` to `list`, freeing each segment once converted.
fn extend(list: &Bound<'_, PyList>, segments: Vec<Segment>) -> PyResult<()> {
    let py = list.py();
    for segment in segments {
        for line in segment.lines() {
            list.append(PyBytes::new(py, line))?;
        }
    }
    Ok(())
}

/// Keeps the exception a signal handler raised (KeyboardInterrupt) for the caller to re-raise.
fn interrupted(err: PyErr) -> Error {
    Python::attach(|py| err.restore(py));
    Error::Interrupted
}

// -- result conversion ----------------------------------------------------------------------

fn reply(
    py: Python<'_>,
    outcome: std::result::Result<Reply, ProtoError>,
    login: bool,
) -> PyResult<Py<PyAny>> {
    let reply = match outcome {
        Ok(reply) => reply,
        Err(ProtoError::ServerError(line)) => return Err(server_error(line, login)),
        Err(err) => return Err(Error::from(err).into()),
    };
    match reply {
        Reply::Status(line) => PyBytes::new(py, &line).into_py_any(py),
        Reply::Lines {
            status,
            lines,
            octets,
        } => (PyBytes::new(py, &status), py_lines(py, lines)?, octets).into_py_any(py),
        Reply::Bytes {
            status,
            data,
            octets,
        } => (PyBytes::new(py, &status), PyBytes::new(py, &data), octets).into_py_any(py),
    }
}

fn convert_reply(py: Python<'_>, done: Done, login: bool) -> PyResult<Py<PyAny>> {
    match done {
        Done::Reply(outcome) => reply(py, outcome, login),
        Done::Sent => Ok(py.None()),
        Done::Capabilities(caps) => caps.list.into_py_any(py),
        other => Err(Error::from(ProtoError::Usage(format!(
            "internal error: unexpected result {other:?}"
        )))
        .into()),
    }
}

/// `[(number, size, uid)]`, each a `MessageInfo`; unique-ids are `str` decoded losslessly
/// (UTF-8 with `surrogateescape`: `uid.encode("utf-8", "surrogateescape")` gives the bytes).
fn convert_messages(py: Python<'_>, done: Done, login: bool) -> PyResult<Py<PyAny>> {
    let Done::Messages(rows) = done else {
        return convert_reply(py, done, login);
    };
    let list = PyList::empty(py);
    extend_infos(&list, rows)?;
    list.into_py_any(py)
}

/// Appends each row to `list` as a `MessageInfo`.
fn extend_infos(list: &Bound<'_, PyList>, rows: Vec<MessageRow>) -> PyResult<()> {
    static MESSAGE_INFO: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    static TUPLE_NEW: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    if rows.is_empty() {
        return Ok(());
    }
    let py = list.py();
    let class = MESSAGE_INFO.import(py, "fastpoplib._types", "MessageInfo")?;
    // `tuple.__new__(MessageInfo, row)`: what the named tuple's own `__new__` does, minus a
    // Python-level call per row.
    let new = TUPLE_NEW
        .get_or_try_init(py, || {
            py.import("builtins")?
                .getattr("tuple")?
                .getattr("__new__")
                .map(Bound::unbind)
        })?
        .bind(py);
    for (number, size, uid) in rows {
        let uid = match uid {
            None => py.None(),
            Some(bytes) => match std::str::from_utf8(&bytes) {
                Ok(text) => PyString::new(py, text).into_any().unbind(),
                Err(_) => PyBytes::new(py, &bytes)
                    .call_method1("decode", ("utf-8", "surrogateescape"))?
                    .unbind(),
            },
        };
        let row = PyTuple::new(py, [number.into_py_any(py)?, size.into_py_any(py)?, uid])?;
        list.append(new.call1((class, row))?)?;
    }
    Ok(())
}

/// `lines` as a Python list of bytes, freeing each segment of the Rust copy once converted.
pub fn py_lines(py: Python<'_>, lines: LinesSink) -> PyResult<Bound<'_, PyList>> {
    let out = PyList::empty(py);
    extend(&out, lines.into_segments())?;
    Ok(out)
}

fn convert_stream(py: Python<'_>, done: Done, login: bool) -> PyResult<Py<PyAny>> {
    let Done::Stream(id, status) = done else {
        return convert_reply(py, done, login);
    };
    (PyBytes::new(py, &status), id).into_py_any(py)
}

fn convert_line(py: Python<'_>, done: Done, login: bool) -> PyResult<Py<PyAny>> {
    match done {
        Done::Line(line) => PyBytes::new(py, &line).into_py_any(py),
        other => convert_reply(py, other, login),
    }
}

fn convert_chunk(py: Python<'_>, done: Done, login: bool) -> PyResult<Py<PyAny>> {
    match done {
        Done::Chunk(chunk) => chunk.map(|c| PyBytes::new(py, &c)).into_py_any(py),
        other => convert_reply(py, other, login),
    }
}

fn convert_item(py: Python<'_>, done: Done, login: bool) -> PyResult<Py<PyAny>> {
    match done {
        Done::Item(None) => Ok(py.None()),
        Done::Item(Some((index, outcome))) => match outcome {
            Err(ProtoError::ServerError(line)) => {
                (index, server_error(line, login).into_value(py)).into_py_any(py)
            }
            outcome => (index, reply(py, outcome, login)?).into_py_any(py),
        },
        other => convert_reply(py, other, login),
    }
}

/// An operation on a connection whose bytes Python moves (`Io::External`): Python calls
/// `step()` and does what it says until it gives the result. The session stays locked (a
/// second call is refused) until the job ends or is dropped.
#[pyclass(module = "fastpoplib._core", name = "Job", frozen)]
pub struct PyJob {
    state: Mutex<Option<JobState>>,
    shared: Arc<Shared>,
}

struct JobState {
    core: OwnedMutexGuard<Core>,
    job: Job,
    convert: Convert,
    login: bool,
    shared: Arc<Shared>,
    /// The lines of a large body already made Python objects, while waiting for more bytes.
    early: Option<Py<PyList>>,
}

/// What `Job.step()` asks of Python.
const WRITE: u8 = 0;
const READ: u8 = 1;
const HANDSHAKE: u8 = 2;
const DONE: u8 = 3;

impl PyJob {
    fn state(&self) -> MutexGuard<'_, Option<JobState>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Ends the job with `result`: publish the session's state, unlock it, convert.
    fn end(
        &self,
        py: Python<'_>,
        mut state: JobState,
        result: Result<Done>,
    ) -> PyResult<Py<PyAny>> {
        state.shared.settle(&mut state.core, &result);
        let JobState {
            convert,
            login,
            core,
            early,
            ..
        } = state;
        drop(core);
        match (result, early) {
            (
                Ok(Done::Reply(Ok(Reply::Lines {
                    status,
                    lines,
                    octets,
                }))),
                Some(early),
            ) => {
                let early = early.into_bound(py);
                extend(&early, lines.into_segments())?;
                (PyBytes::new(py, &status), early, octets).into_py_any(py)
            }
            (Ok(Done::Messages(rows)), Some(early)) => {
                let early = early.into_bound(py);
                extend_infos(&early, rows)?;
                early.into_py_any(py)
            }
            (Ok(done), _) => convert(py, done, login),
            (Err(err), _) => Err(err.into()),
        }
    }
}

#[pymethods]
impl PyJob {
    /// `(0, bytes)`: send them all; `(1, None)`: read some bytes and `feed` them; `(2, None)`:
    /// do the TLS handshake, then `tls_started()`; `(3, result)`: finished.
    fn step(&self, py: Python<'_>) -> PyResult<(u8, Py<PyAny>)> {
        let mut slot = self.state();
        let Some(mut state) = slot.take() else {
            return Err(Error::from(ProtoError::Usage(
                "this operation has already finished".into(),
            ))
            .into());
        };
        let JobState {
            core, job, early, ..
        } = &mut state;
        match core.session.step(job) {
            Ok(crate::proto::session::Step::Write) => {
                let data = PyBytes::new(py, core.session.outgoing())
                    .into_any()
                    .unbind();
                core.session.wrote();
                *slot = Some(state);
                Ok((WRITE, data))
            }
            Ok(crate::proto::session::Step::Read) => {
                // Convert what is complete now, while the next bytes are on their way, as the
                // blocking driver does.
                let segments = core.session.take_segments(job);
                let rows = core.session.take_rows(job);
                if !segments.is_empty() || !rows.is_empty() {
                    let list = early.get_or_insert_with(|| PyList::empty(py).unbind());
                    let list = list.bind(py);
                    if let Err(err) = extend(list, segments).and_then(|()| extend_infos(list, rows))
                    {
                        drop(slot);
                        return Err(err);
                    }
                }
                *slot = Some(state);
                Ok((READ, py.None()))
            }
            Ok(crate::proto::session::Step::Handshake) => {
                *slot = Some(state);
                Ok((HANDSHAKE, py.None()))
            }
            Ok(crate::proto::session::Step::Done(done)) => {
                drop(slot);
                Ok((DONE, self.end(py, state, Ok(done))?))
            }
            Err(err) => {
                drop(slot);
                self.end(py, state, Err(err.into())).map(|v| (DONE, v))
            }
        }
    }

    /// Bytes read from the server; `b""` means it closed the connection.
    fn feed(&self, py: Python<'_>, mut data: &[u8]) -> PyResult<()> {
        let mut slot = self.state();
        let Some(state) = slot.as_mut() else {
            return Ok(());
        };
        let session = &mut state.core.session;
        let result = if data.is_empty() {
            session.received(0)
        } else {
            let mut result = Ok(());
            while !data.is_empty() && result.is_ok() {
                let buf = session.read_buf();
                let n = buf.len().min(data.len());
                buf[..n].copy_from_slice(&data[..n]);
                result = session.received(n);
                data = &data[n..];
            }
            result
        };
        if let Err(err) = result {
            let state = slot.take().expect("state is set");
            drop(slot);
            return self.end(py, state, Err(err.into())).map(drop);
        }
        Ok(())
    }

    /// Whether the connection is closed (after a fatal error): Python then closes its socket.
    #[getter]
    fn closed(&self) -> bool {
        self.shared.status().closed.is_some()
    }

    /// The handshake asked for by step 2 succeeded.
    fn tls_started(&self) {
        if let Some(state) = self.state().as_mut() {
            state.core.session.tls_started();
        }
    }

    /// Python's I/O failed (`reason` says how): the connection is closed, so a reply left
    /// half-read is never taken for another.
    fn fail(&self, reason: String) {
        if let Some(mut state) = self.state().take() {
            let err = Error::NotConnected(format!("the connection was closed after an earlier error ({reason}); open a new connection"));
            state
                .shared
                .status()
                .closed
                .get_or_insert_with(|| err.to_string());
            let result: Result<()> = Err(err);
            state.shared.settle(&mut state.core, &result);
        }
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
                let io = py.detach(|| -> Result<BlockingIo> {
                    let mut check = || -> Result<()> {
                        Python::attach(|py| py.check_signals()).map_err(interrupted)
                    };
                    let mut io = BlockingIo::connect(&opts, &mut check)?;
                    if let Some(config) = config {
                        io.handshake(config, &mut check)?;
                    }
                    Ok(io)
                });
                let io = match io {
                    Ok(io) => io,
                    Err(Error::Interrupted) => {
                        return Err(PyErr::take(py).unwrap_or_else(|| Error::Interrupted.into()))
                    }
                    Err(e) => return Err(e.into()),
                };
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
        let mut status = self.shared.status();
        status.shutdown = None;
        match fd {
            Ok(fd) => Ok(i64::from(fd)),
            Err(err) => {
                status.closed.get_or_insert_with(|| err.to_string());
                Err(err.into())
            }
        }
    }

    /// Sends `line` and reads its reply: `bytes` (kind 0), `(resp, [lines], octets)` (1) or
    /// `(resp, data, octets)` (2). `login`: a bare -ERR is an AuthenticationError. `secret`:
    /// never traced in clear. `raw`: poplib's `_shortcmd`, allowed as a SASL response.
    #[pyo3(signature = (reactor, op, line, kind, login=false, secret=false, raw=false))]
    #[allow(clippy::too_many_arguments)]
    fn command(
        &self,
        py: Python<'_>,
        reactor: Option<&Bound<'_, Reactor>>,
        op: u64,
        line: Vec<u8>,
        kind: u8,
        login: bool,
        secret: bool,
        raw: bool,
    ) -> PyResult<Py<PyAny>> {
        let request = Request::Command {
            line,
            expect: expect(kind)?,
            secret,
            raw,
        };
        self.execute(py, reactor, op, request, None, login, convert_reply)
    }

    /// poplib's `_putline`: sends only.
    fn put(
        &self,
        py: Python<'_>,
        reactor: Option<&Bound<'_, Reactor>>,
        op: u64,
        line: Vec<u8>,
    ) -> PyResult<Py<PyAny>> {
        self.execute(
            py,
            reactor,
            op,
            Request::Put { line },
            None,
            false,
            convert_reply,
        )
    }

    /// poplib's `_getresp` (kind 0) / `_getlongresp` (kind 1): the reply to the oldest line
    /// sent with `put` (or the greeting).
    #[pyo3(signature = (reactor, op, kind, login=false))]
    fn claim(
        &self,
        py: Python<'_>,
        reactor: Option<&Bound<'_, Reactor>>,
        op: u64,
        kind: u8,
        login: bool,
    ) -> PyResult<Py<PyAny>> {
        self.execute(
            py,
            reactor,
            op,
            Request::Claim {
                expect: expect(kind)?,
            },
            None,
            login,
            convert_reply,
        )
    }

    /// poplib's `_getline`: the next line as it arrived, line end included.
    fn raw_line(
        &self,
        py: Python<'_>,
        reactor: Option<&Bound<'_, Reactor>>,
        op: u64,
    ) -> PyResult<Py<PyAny>> {
        self.execute(py, reactor, op, Request::RawLine, None, false, convert_line)
    }

    /// CAPA: `(resp, [lines], octets)`; the session keeps what decides pipelining.
    fn capa(
        &self,
        py: Python<'_>,
        reactor: Option<&Bound<'_, Reactor>>,
        op: u64,
    ) -> PyResult<Py<PyAny>> {
        self.execute(py, reactor, op, Request::Capa, None, false, convert_reply)
    }

    /// LIST and UIDL merged: `[MessageInfo]`.
    fn messages(
        &self,
        py: Python<'_>,
        reactor: Option<&Bound<'_, Reactor>>,
        op: u64,
    ) -> PyResult<Py<PyAny>> {
        self.execute(
            py,
            reactor,
            op,
            Request::Messages,
            None,
            false,
            convert_messages,
        )
    }

    /// Sends `line`, reads its status: `(resp, stream id)`; the body is read with `chunk`.
    fn open_stream(
        &self,
        py: Python<'_>,
        reactor: Option<&Bound<'_, Reactor>>,
        op: u64,
        line: Vec<u8>,
    ) -> PyResult<Py<PyAny>> {
        self.execute(
            py,
            reactor,
            op,
            Request::StreamOpen { line },
            None,
            false,
            convert_stream,
        )
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
            false,
            convert_chunk,
        )
    }

    /// The stream's iterator is gone: the rest of its body will be read and dropped.
    fn drop_stream(&self, id: u64) {
        self.shared.handle_dropped(Handle::Stream(id));
    }

    /// Registers a batch of commands (nothing is sent yet): its id for `batch_next`.
    fn batch(&self, lines: Vec<Vec<u8>>, kind: u8) -> PyResult<u64> {
        let expect = expect(kind)?;
        let mut core = self.shared.core.try_lock().map_err(|_| Error::Busy)?;
        Ok(core.session.batch(lines, expect).map_err(Error::from)?)
    }

    /// The next reply of batch `id`: `(index, reply or ServerError)`, `None` when done.
    fn batch_next(
        &self,
        py: Python<'_>,
        reactor: Option<&Bound<'_, Reactor>>,
        op: u64,
        id: u64,
    ) -> PyResult<Py<PyAny>> {
        self.execute(
            py,
            reactor,
            op,
            Request::BatchNext { id },
            None,
            false,
            convert_item,
        )
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
        self.execute(
            py,
            reactor,
            op,
            Request::StartTls,
            config,
            false,
            convert_reply,
        )
    }

    /// Closes the connection; safe to call more than once and from another thread or task:
    /// an operation in progress is interrupted (it raises) within one wait slice.
    fn close(
        &self,
        py: Python<'_>,
        reactor: Option<&Bound<'_, Reactor>>,
        op: u64,
    ) -> PyResult<Py<PyAny>> {
        {
            let mut status = self.shared.status();
            status
                .closed
                .get_or_insert_with(|| "the connection is closed; open a new one".into());
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
        let mut status = match self.shared.status.try_lock() {
            Ok(status) => status,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return None,
        };
        status.shutdown = None;
        status.task = None;
        status.closed = Some("this connection was inherited from the parent process (os.fork()), which still uses it; open a new connection in the child".into());
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
        let status = self.shared.status();
        status
            .closed
            .is_none()
            .then(|| status.info.tls.clone())
            .flatten()
    }

    /// Why the connection is closed, or `None` while it is open.
    #[getter]
    fn closed(&self) -> Option<String> {
        self.shared.status().closed.clone()
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
