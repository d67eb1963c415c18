//! Running one operation: the session's job on the connection's driver. Blocking with the GIL
//! released, on tokio with the result delivered to asyncio through the reactor, or, when
//! Python moves the bytes, as a [`PyJob`] that Python pumps.

use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::types::PyList;
use pyo3::IntoPyObjectExt;
use rustls::ClientConfig;
use tokio::sync::OwnedMutexGuard;

use super::conversion::{convert, convert_early, finish};
use super::job::PyJob;
use super::status::Shared;
use super::Connection;
use crate::error::{Error, Result};
use crate::proto::session::{Closed, Done, Job, Request, Session};
use crate::python::reactor::{runtime, Pending, Reactor};
use crate::transport::blocking::BlockingIo;
use crate::transport::tokio::TokioIo;
use crate::transport::Info;

/// The connection's driver, chosen at connect.
pub(super) enum Io {
    Blocking(BlockingIo),
    Tokio(TokioIo),
    /// Python moves the bytes (a socket of its own, an `ssl.SSLSocket` made with the user's
    /// context, an asyncio stream): each operation returns a [`PyJob`] it pumps.
    External,
    Closed,
}

/// The session and its driver: locked for the whole of an operation.
pub(super) struct Core {
    pub(super) session: Session,
    pub(super) io: Io,
}

impl Io {
    /// The socket's addresses, descriptor and TLS; `None` where Python holds the socket.
    pub(super) fn info(&self) -> Option<Info> {
        match self {
            Io::Blocking(b) => Some(b.info()),
            Io::Tokio(t) => Some(t.info()),
            Io::External | Io::Closed => None,
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
    done_queue: Arc<crate::python::reactor::Shared>,
    op: u64,
}

impl Drop for Active {
    fn drop(&mut self) {
        if let Some(mut core) = self.core.take() {
            core.session.close(Closed::Cancelled);
            let why = self.shared.closed.get().unwrap_or(Closed::Cancelled);
            {
                let mut status = self.shared.status();
                status.info.fd = -1;
                status.task = None;
            }
            core.io = Io::Closed;
            drop(core);
            self.done_queue.complete(
                self.op,
                Box::new(move |_| Err(Error::not_connected(&why).into())),
            );
        }
    }
}

impl Connection {
    /// Runs `request` blocking (no reactor) or on tokio (a reactor: returns a `Pending`); its
    /// result is converted by kind ([`convert`]).
    pub(super) fn execute(
        &self,
        py: Python<'_>,
        reactor: Option<&Bound<'_, Reactor>>,
        op: u64,
        request: Request,
        tls: Option<Arc<ClientConfig>>,
    ) -> PyResult<Py<PyAny>> {
        let shared = self.shared.clone();
        // Closed (after an error, a cancellation, or by `close()`) is said before busy: a
        // cancelled operation may still be unwinding on tokio for a moment.
        shared.closed.check().map_err(Error::from)?;
        if matches!(
            shared.core.try_lock().map(|c| matches!(c.io, Io::External)),
            Ok(true)
        ) {
            let (core, job) = start(&shared, request)?;
            return PyJob::new(core, job, shared).into_py_any(py);
        }
        match reactor {
            None => {
                let (mut core, job) = start(&shared, request)?;
                let login = job.is_login_step();
                let result = blocking(py, &mut core, job, tls.as_ref());
                shared.settle(&mut core, &result);
                drop(core);
                match result {
                    Ok((done, early)) => finish(py, done, early, login),
                    Err(err) => Err(raised(py, shared.attributed(err))),
                }
            }
            Some(reactor) => {
                let (core, job) = start(&shared, request)?;
                let login = job.is_login_step();
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
                        _ => Err(Error::not_connected(&Closed::ByCaller)),
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
                        cancelled.closed.close(Closed::Cancelled);
                    })),
                }
                .into_py_any(py)?)
            }
        }
    }
}

/// Locks the session for one operation (`Busy` while another runs), applies what changed
/// while it was not locked, and starts `request`.
fn start(shared: &Arc<Shared>, request: Request) -> Result<(OwnedMutexGuard<Core>, Job)> {
    let mut core = shared
        .core
        .clone()
        .try_lock_owned()
        .map_err(|_| Error::Busy)?;
    shared.prepare(&mut core);
    let job = core.session.start(request).map_err(Error::from)?;
    Ok((core, job))
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
        return Err(Error::not_connected(&Closed::ByCaller));
    };
    let mut early: Option<Py<PyList>> = None;
    let mut failed: Option<PyErr> = None;
    let done = py.detach(|| {
        let mut arrived = |session: &mut Session, job: &mut Job| {
            let segments = session.take_segments(job);
            let rows = session.take_rows(job);
            if (segments.is_empty() && rows.is_empty()) || failed.is_some() {
                return;
            }
            Python::attach(|py| {
                if let Err(err) = convert_early(py, &mut early, segments, rows) {
                    failed = Some(err);
                }
            });
        };
        io.run(session, job, tls, &mut check_signals, &mut arrived)
    })?;
    match failed {
        Some(err) => Python::attach(|py| {
            err.restore(py);
            Err(Error::Interrupted)
        }),
        None => Ok((done, early)),
    }
}

/// Runs Python's signal handlers from a thread that released the GIL; the exception one
/// raised (KeyboardInterrupt) is kept for the caller to re-raise ([`raised`]).
pub(super) fn check_signals() -> Result<()> {
    Python::attach(|py| {
        py.check_signals().map_err(|err| {
            err.restore(py);
            Error::Interrupted
        })
    })
}

/// A failed run as a Python exception: an interrupted one raises what the signal handler did.
pub(super) fn raised(py: Python<'_>, err: Error) -> PyErr {
    match err {
        Error::Interrupted => PyErr::take(py).unwrap_or_else(|| Error::Interrupted.into()),
        err => err.into(),
    }
}
