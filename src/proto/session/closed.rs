//! The connection's error/closed state (h11's ERROR and CLOSED states): one value, set once,
//! the first reason kept, and every request after it fails with the same sentence.
//!
//! The session sets it on a fatal error (the one policy: [`ProtoError::is_fatal`]). Its
//! connection sets it through a [`ClosedCell`] the session hands out, for what happens outside
//! the session: `close()`, an operation cancelled or interrupted, a driver's I/O failing, a
//! forked child's copy. That may be another thread while an operation holds the session, and
//! accessors read the cell without waiting for it: it is locked only for a moment.

use std::fmt;
use std::sync::{Arc, Mutex, TryLockError};

use super::ProtoError;

/// Why the connection can no longer be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Closed {
    /// An error that may have left a reply half-read (its text): the byte stream can no
    /// longer be trusted.
    Failed(String),
    /// Closed by its user (`close()`, `quit()`, a watchdog in another thread).
    ByCaller,
    /// An operation was cancelled half-way (an asyncio task, `wait_for`).
    Cancelled,
    /// An operation was interrupted half-way (Ctrl-C).
    Interrupted,
    /// A forked child's copy of its parent's connection.
    Inherited,
}

impl fmt::Display for Closed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Closed::Failed(err) => {
                // The earlier error may already say what to do: said once.
                let err = ["; open a new connection", "; open a new one"]
                    .iter()
                    .find_map(|advice| err.strip_suffix(advice))
                    .unwrap_or(err);
                write!(
                    f,
                    "the connection was closed after an earlier error ({err}); open a new connection"
                )
            }
            Closed::ByCaller => f.write_str("the connection is closed; open a new one"),
            Closed::Cancelled => f.write_str(
                "the connection was closed because an operation was cancelled; open a new connection",
            ),
            Closed::Interrupted => f.write_str(
                "the connection was closed because an operation was interrupted; open a new connection",
            ),
            Closed::Inherited => f.write_str(
                "this connection was inherited from the parent process (os.fork()), which still \
                 uses it; open a new connection in the child",
            ),
        }
    }
}

/// The session's closed state, shared with its connection (see the module's text).
#[derive(Debug, Clone, Default)]
pub struct ClosedCell(Arc<Mutex<Option<Closed>>>);

impl ClosedCell {
    fn slot(&self) -> std::sync::MutexGuard<'_, Option<Closed>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Closes for `why`, unless already closed (the first reason stays).
    pub fn close(&self, why: Closed) {
        self.slot().get_or_insert(why);
    }

    /// As [`close`](Self::close) without ever waiting (a forked child, where a thread of the
    /// parent may have held the lock at the fork and never lets go): `false` if it could not.
    pub fn try_close(&self, why: Closed) -> bool {
        let mut slot = match self.0.try_lock() {
            Ok(slot) => slot,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => return false,
        };
        slot.get_or_insert(why);
        true
    }

    /// Why it is closed; `None` while it is open.
    pub fn get(&self) -> Option<Closed> {
        self.slot().clone()
    }

    pub fn is_closed(&self) -> bool {
        self.slot().is_some()
    }

    /// The error every request gets once it is closed.
    pub fn check(&self) -> Result<(), ProtoError> {
        match self.get() {
            None => Ok(()),
            Some(why) => Err(ProtoError::NotConnected(why.to_string())),
        }
    }
}
