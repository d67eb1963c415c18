//! Handing tokio results to asyncio without touching the GIL from tokio threads.
//!
//! A finished operation is pushed onto its event loop's queue and, if the queue was empty,
//! the loop is woken: one byte is written to a socket pair whose other end the loop watches
//! (`add_reader`), and a thread blocked in [`Reactor::wait`] is notified, for loops without
//! `add_reader` (ProactorEventLoop), whose Python side then calls `call_soon_threadsafe`. The
//! loop thread drains the queue and converts results to Python objects. Tokio threads never
//! wait for the GIL, so there is no GIL convoy under load, no thread pool of GIL waiters,
//! and nothing left running Python code while the interpreter shuts down.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use tokio::runtime::Runtime;

use pyo3::prelude::*;
use pyo3::types::PyList;

use crate::error::Error;

/// A finished operation's value, still in Rust form.
pub type Outcome = Result<Py<PyAny>, PyErr>;

/// Converts a result to Python on the loop thread.
pub type Deliver = Box<dyn FnOnce(Python<'_>) -> Outcome + Send>;

struct Queue {
    done: Vec<(u64, Deliver)>,
    /// The loop was woken and has not drained yet: later results need no new wake-up.
    armed: bool,
    /// A wake-up not yet taken by [`Reactor::wait`].
    signalled: bool,
    /// [`Reactor::close`] was called: `wait` returns `false` from now on.
    closed: bool,
}

pub struct Shared {
    queue: Mutex<Queue>,
    /// Notified with `signalled` (and on close), for the thread in `wait`.
    wake: Condvar,
    waker: UnixStream,
}

impl Shared {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Called from any thread when operation `id` has finished.
    pub fn complete(&self, id: u64, deliver: Deliver) {
        let mut q = self.queue();
        q.done.push((id, deliver));
        if !q.armed {
            q.armed = true;
            q.signalled = true;
            // One byte into a socket the loop drains: cannot block in practice.
            let _ = (&self.waker).write_all(b"!");
            self.wake.notify_one();
        }
    }
}

/// One per asyncio event loop (see `python/fastpoplib/_bridge.py`).
#[pyclass(module = "fastpoplib._core", frozen)]
pub struct Reactor {
    pub shared: Arc<Shared>,
    wakeup: UnixStream,
}

#[pymethods]
impl Reactor {
    #[new]
    fn new() -> PyResult<Self> {
        let (wakeup, waker) =
            UnixStream::pair().map_err(|e| Error::io("creating the asyncio wake-up socket", e))?;
        wakeup
            .set_nonblocking(true)
            .map_err(|e| Error::io("configuring the asyncio wake-up socket", e))?;
        Ok(Reactor {
            shared: Arc::new(Shared {
                queue: Mutex::new(Queue {
                    done: Vec::new(),
                    armed: false,
                    signalled: false,
                    closed: false,
                }),
                wake: Condvar::new(),
                waker,
            }),
            wakeup,
        })
    }

    /// The descriptor the event loop watches (`add_reader`).
    fn fileno(&self) -> i32 {
        self.wakeup.as_raw_fd()
    }

    /// For loops without `add_reader`: blocks, with the GIL released, until results are
    /// waiting to be drained (`True`) or the reactor is closed (`False`).
    fn wait(&self, py: Python<'_>) -> bool {
        py.detach(|| {
            let mut q = self.shared.queue();
            while !q.signalled && !q.closed {
                q = self.shared.wake.wait(q).unwrap_or_else(|p| p.into_inner());
            }
            q.signalled = false;
            !q.closed
        })
    }

    /// Ends `wait` (its event loop is gone).
    fn close(&self) {
        self.shared.queue().closed = true;
        self.shared.wake.notify_all();
    }

    /// Every finished operation: `[(id, ok, value or exception)]`.
    fn drain<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let done = {
            let mut q = self.shared.queue();
            let mut byte = [0u8; 64];
            let _ = (&self.wakeup).read(&mut byte);
            q.armed = false;
            std::mem::take(&mut q.done)
        };
        let out = PyList::empty(py);
        for (id, deliver) in done {
            match deliver(py) {
                Ok(value) => out.append((id, true, value))?,
                Err(err) => out.append((id, false, err.into_value(py)))?,
            }
        }
        Ok(out)
    }
}

/// Lets Python abort a running operation (task cancellation): the future is dropped, and
/// the connection's guard closes it.
#[pyclass(module = "fastpoplib._core", frozen)]
pub struct Pending {
    pub handle: tokio::task::AbortHandle,
    /// Runs when Python cancels the operation, before the task is aborted.
    pub on_abort: Option<Box<dyn Fn() + Send + Sync>>,
}

#[pymethods]
impl Pending {
    fn abort(&self) {
        if let Some(on_abort) = &self.on_abort {
            on_abort();
        }
        self.handle.abort();
    }
}

/// The tokio runtime of this process. After `os.fork()` the parent's runtime is unusable in
/// the child (its worker threads do not exist there): a child gets a fresh one, and the
/// parent's is leaked rather than dropped, since dropping it would wait for threads that
/// are not there.
pub fn runtime() -> Arc<Runtime> {
    static RUNTIME: Mutex<Option<(u32, Arc<Runtime>)>> = Mutex::new(None);
    let mut slot = RUNTIME.lock().unwrap_or_else(|p| p.into_inner());
    let pid = std::process::id();
    if let Some((owner, runtime)) = slot.as_ref() {
        if *owner == pid {
            return runtime.clone();
        }
    }
    if let Some(inherited) = slot.take() {
        std::mem::forget(inherited);
    }
    // Two workers do all the I/O; results reach asyncio through the reactor, so no thread
    // ever blocks on the GIL.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(2)
        .max_blocking_threads(2)
        .thread_name("fastpoplib-io")
        .build()
        .expect("the tokio runtime starts (threads and an epoll instance)");
    let runtime = Arc::new(runtime);
    *slot = Some((pid, runtime.clone()));
    runtime
}
