//! A connection's two locks: the session with its driver ([`Core`], held for a whole
//! operation) and the [`Status`] (held only for a moment), which accessors such as
//! `Connection.closed`, `fileno()` or `capabilities` read without waiting for an operation
//! in progress. `prepare` and `settle` hand state between them around each operation.

use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::run::{Core, Io};
use crate::error::{Error, Result};
use crate::proto::session::{Facts, Session};
use crate::transport::Info;

/// What may be read while an operation runs: never held across I/O.
pub(super) struct Status {
    pub(super) info: Info,
    /// What the server said (greeting, capabilities, TLS, RFC 1939 state): the session's own
    /// value, shared as it was when the last operation ended, never a copy kept apart.
    pub(super) facts: Arc<Facts>,
    pub(super) timeout: Option<Duration>,
    /// Why the connection is closed, once it is.
    pub(super) closed: Option<String>,
    /// Lines traced by the session, waiting for Python to print or log them.
    pub(super) trace: Vec<(bool, Vec<u8>)>,
    /// A second handle on a blocking socket, so `close()` can interrupt a stalled read.
    pub(super) shutdown: Option<TcpStream>,
    /// The tokio task of the operation in progress, so `close()` can abort it.
    pub(super) task: Option<tokio::task::AbortHandle>,
    /// Batches and streams whose Python objects went away while the session was busy.
    pub(super) dropped: Vec<Handle>,
}

/// A batch or a stream the session is to forget (its Python object went away).
#[derive(Clone, Copy)]
pub(super) enum Handle {
    Batch(u64),
    Stream(u64),
}

/// One connection's state, shared by its Python object, its jobs and its tokio tasks.
pub(super) struct Shared {
    pub(super) core: Arc<tokio::sync::Mutex<Core>>,
    pub(super) status: Mutex<Status>,
    pub(super) tracing: AtomicBool,
}

impl Shared {
    pub(super) fn status(&self) -> MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn new(session: Session, io: Io, timeout: Option<Duration>) -> Arc<Self> {
        let info = io.info().unwrap_or_default();
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
    pub(super) fn prepare(&self, core: &mut Core) -> Result<()> {
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
    pub(super) fn settle<T>(&self, core: &mut Core, result: &Result<T>) {
        let trace = core.session.take_trace();
        let info = core.io.info();
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

    pub(super) fn handle_dropped(self: &Arc<Self>, handle: Handle) {
        match self.core.try_lock() {
            Ok(mut core) => match handle {
                Handle::Batch(id) => core.session.drop_batch(id),
                Handle::Stream(id) => core.session.drop_stream(id),
            },
            Err(_) => self.status().dropped.push(handle),
        }
    }
}
