//! A connection's two locks: the session with its driver ([`Core`], held for a whole
//! operation) and the [`Status`] (held only for a moment), which accessors such as
//! `fileno()` or `capabilities` read without waiting for an operation in progress.
//! `prepare` and `settle` hand state between them around each operation. Whether the
//! connection is closed, and why, is the session's own [`ClosedCell`], read and set (by
//! `close()`, a cancel, a fork) without waiting too.

use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::run::{Core, Io};
use crate::error::{Error, Result};
use crate::proto::session::{ClosedCell, Facts, Session};
use crate::transport::Info;

/// What may be read while an operation runs: never held across I/O.
pub(super) struct Status {
    pub(super) info: Info,
    /// What the server said (greeting, capabilities, TLS, RFC 1939 state): the session's own
    /// value, shared as it was when the last operation ended, never a copy kept apart.
    pub(super) facts: Arc<Facts>,
    pub(super) timeout: Option<Duration>,
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
    /// The session's closed state (the same cell, not a copy).
    pub(super) closed: ClosedCell,
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
        let closed = session.closed_cell().clone();
        Arc::new(Shared {
            core: Arc::new(tokio::sync::Mutex::new(Core { session, io })),
            status: Mutex::new(Status {
                info,
                facts,
                timeout,
                trace: Vec::new(),
                shutdown,
                task: None,
                dropped: Vec::new(),
            }),
            closed,
            tracing: AtomicBool::new(false),
        })
    }

    /// Before an operation: apply what changed while the session was not locked.
    pub(super) fn prepare(&self, core: &mut Core) {
        let dropped = std::mem::take(&mut self.status().dropped);
        for handle in dropped {
            match handle {
                Handle::Batch(id) => core.session.drop_batch(id),
                Handle::Stream(id) => core.session.drop_stream(id),
            }
        }
        core.session.set_trace(self.tracing.load(Ordering::Relaxed));
    }

    /// After an operation: publish the new state; an error the policy calls fatal
    /// ([`Error::closes`]) closes the session, and a closed session's socket is closed, so a
    /// stream that may be mid-reply is never read again.
    pub(super) fn settle<T>(&self, core: &mut Core, result: &Result<T>) {
        if let Some(why) = result.as_ref().err().and_then(Error::closes) {
            core.session.close(why);
        }
        let trace = core.session.take_trace();
        let info = core.io.info();
        let mut status = self.status();
        status.trace.extend(trace);
        status.facts = core.session.facts().clone();
        status.task = None;
        if let Some(info) = info {
            status.info = info;
        }
        if self.closed.is_closed() {
            status.info.fd = -1;
            status.shutdown = None;
            drop(status);
            if let Io::Blocking(b) = &mut core.io {
                b.close();
            }
            core.io = Io::Closed;
        }
    }

    /// The error an operation that failed raises: if the connection was closed under it for
    /// another reason (`close()` from another thread shut the socket it was reading), that
    /// reason, not the I/O error the close caused.
    pub(super) fn attributed(&self, err: Error) -> Error {
        match (self.closed.get(), err.closes()) {
            (Some(why), Some(own)) if why != own => Error::not_connected(&why),
            _ => err,
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
