//! `Job`: one operation on a connection whose bytes Python moves (its own socket, an
//! `ssl.SSLSocket` made with the caller's context, an asyncio transport; `_wire.py` pumps it).

use std::sync::{Arc, Mutex, MutexGuard};

use pyo3::exceptions::asyncio::CancelledError;
use pyo3::exceptions::{PyBaseException, PyKeyboardInterrupt};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};
use tokio::sync::OwnedMutexGuard;

use super::conversion::{convert_early, finish};
use super::run::Core;
use super::status::Shared;
use crate::error::{Error, Result};
use crate::proto::session::{Closed, Done, Job};
use crate::proto::ProtoError;

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
    /// A job Python pumps; it holds the session (`core`) locked until it ends.
    pub(super) fn new(core: OwnedMutexGuard<Core>, job: Job, shared: Arc<Shared>) -> Self {
        let state = JobState {
            core,
            job,
            shared: shared.clone(),
            early: None,
        };
        PyJob {
            state: Mutex::new(Some(state)),
            shared,
        }
    }

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
        let login = state.job.is_login_step();
        let JobState {
            core,
            early,
            shared,
            ..
        } = state;
        drop(core);
        match result {
            Ok(done) => finish(py, done, early, login),
            Err(err) => Err(shared.attributed(err).into()),
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
                if let Err(err) = convert_early(py, early, segments, rows) {
                    drop(slot);
                    return Err(err);
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
        self.shared.closed.is_closed()
    }

    /// The handshake asked for by step 2 succeeded.
    fn tls_started(&self) {
        if let Some(state) = self.state().as_mut() {
            state.core.session.tls_started();
        }
    }

    /// Python's side failed with `exc` (its own I/O, a timeout, a task cancelled, Ctrl-C):
    /// the connection is closed, for the same reason the other drivers give, so a reply left
    /// half-read is never taken for another.
    fn fail(&self, exc: &Bound<'_, PyBaseException>) -> PyResult<()> {
        let why = if exc.is_instance_of::<CancelledError>() {
            Closed::Cancelled
        } else if exc.is_instance_of::<PyKeyboardInterrupt>() {
            Closed::Interrupted
        } else {
            // Its sentence (the driver translated it), so later calls say what happened.
            let text = exc.str()?.to_string();
            Closed::Failed(if text.is_empty() {
                exc.get_type().name()?.to_string()
            } else {
                text
            })
        };
        if let Some(mut state) = self.state().take() {
            state.core.session.close(why);
            state.shared.settle(&mut state.core, &Ok::<(), Error>(()));
        }
        Ok(())
    }
}
