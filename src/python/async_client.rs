//! `AsyncConnection`: the tokio driver as a Python class whose operations run on tokio
//! (on the tokio runtime of pyo3-async-runtimes, results delivered through `reactor`). The
//! asyncio API is built on it in `python/fastpoplib/_aio.py`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use pyo3::prelude::*;
use pyo3::IntoPyObjectExt;
use pyo3::types::{PyBytes, PyTuple};
use tokio::sync::{Mutex, OwnedMutexGuard};

use super::errors::login_error;
use super::sync_client::{duration, limits, py_lines};
use super::reactor::{Pending, Reactor};
use super::tls_settings::TlsSettings;
use crate::error::{Error, Result};
use crate::proto::response::{BytesSink, LinesSink};
use crate::transport::tokio::TokioConn;
use crate::transport::ConnectOptions;

#[pyclass(module = "fastpoplib._core", frozen)]
pub struct AsyncConnection {
    inner: Arc<Mutex<TokioConn>>,
}

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

/// Holds the connection for one operation. If the operation's future is dropped before it
/// finishes (the asyncio task was cancelled), the stream is mid-reply: close it.
struct Active {
    conn: OwnedMutexGuard<TokioConn>,
    finished: bool,
}

impl Drop for Active {
    fn drop(&mut self) {
        if !self.finished {
            self.conn.shutdown_now("the connection was closed because an operation was cancelled".into());
        }
    }
}


impl AsyncConnection {
    /// Runs `op` on the connection in the tokio runtime; its outcome is queued on `reactor`
    /// as operation `id` and converted to Python on the event loop's thread. Concurrent use
    /// of one connection raises instead of interleaving commands on the wire.
    fn spawn<T>(&self, reactor: &Bound<'_, Reactor>, id: u64, login: bool, op: impl for<'a> FnOnce(&'a mut TokioConn) -> BoxFuture<'a, T> + Send + 'static) -> Pending
    where
        T: for<'p> IntoPyObject<'p> + Send + 'static,
    {
        let inner = self.inner.clone();
        let shared = reactor.get().shared.clone();
        let handle = pyo3_async_runtimes::tokio::get_runtime().spawn(async move {
            let result = match inner.try_lock_owned() {
                Err(_) => Err(Error::Busy),
                Ok(conn) => {
                    let mut active = Active { conn, finished: false };
                    let result = op(&mut active.conn).await;
                    active.finished = true;
                    result
                }
            };
            shared.complete(id, Box::new(move |py| deliver(py, result, login)));
        });
        Pending { handle: handle.abort_handle() }
    }
}

fn deliver<T: for<'p> IntoPyObject<'p>>(py: Python<'_>, result: Result<T>, login: bool) -> PyResult<Py<PyAny>> {
    match result {
        Ok(v) => v.into_py_any(py),
        Err(e) if login => Err(login_error(e)),
        Err(e) => Err(e.into()),
    }
}

async fn read_long(c: &mut TokioConn) -> Result<LongReply> {
    let mut sink = LinesSink::default();
    let (resp, octets) = c.read_long_reply(&mut sink).await?;
    Ok(LongReply(resp, sink, octets))
}

/// `(status, [lines], octets)`, built under the GIL only when delivered.
struct LongReply(Vec<u8>, LinesSink, usize);

impl<'py> IntoPyObject<'py> for LongReply {
    type Target = PyTuple;
    type Output = Bound<'py, PyTuple>;
    type Error = PyErr;

    fn into_pyobject(self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        (PyBytes::new(py, &self.0), py_lines(py, &self.1)?, self.2).into_pyobject(py)
    }
}

#[pymethods]
impl AsyncConnection {
    /// Awaitable that connects (with TLS at once when `tls` is given).
    #[staticmethod]
    #[pyo3(signature = (reactor, id, host, port, *, timeout=None, source_address=None, tls=None, max_line=2048, max_data_line=1<<20, max_response=256<<20))]
    #[allow(clippy::too_many_arguments)]
    fn connect(
        reactor: &Bound<'_, Reactor>,
        id: u64,
        host: String,
        port: u16,
        timeout: Option<f64>,
        source_address: Option<(String, u16)>,
        tls: Option<PyRef<'_, TlsSettings>>,
        max_line: usize,
        max_data_line: usize,
        max_response: usize,
    ) -> PyResult<Pending> {
        let opts = ConnectOptions { host, port, timeout: duration(timeout)?, source_address, limits: limits(max_line, max_data_line, max_response)? };
        let config = tls.map(|t| t.config.clone());
        let shared = reactor.get().shared.clone();
        let handle = pyo3_async_runtimes::tokio::get_runtime().spawn(async move {
            let result: Result<TokioConn> = async {
                let mut conn = TokioConn::connect(&opts).await?;
                if let Some(config) = config {
                    conn.handshake(config).await?;
                }
                Ok(conn)
            }
            .await;
            shared.complete(
                id,
                Box::new(move |py| match result {
                    Ok(conn) => Ok(Py::new(py, AsyncConnection { inner: Arc::new(Mutex::new(conn)) })?.into_any()),
                    Err(e) => Err(e.into()),
                }),
            );
        });
        Ok(Pending { handle: handle.abort_handle() })
    }

    fn putlines(&self, reactor: &Bound<'_, Reactor>, id: u64, lines: Vec<Vec<u8>>) -> Pending {
        self.spawn(reactor, id, false, move |c| Box::pin(async move { c.send_lines(&lines).await }))
    }

    fn getlongresp(&self, reactor: &Bound<'_, Reactor>, id: u64) -> Pending {
        self.spawn(reactor, id, false, |c| Box::pin(read_long(c)))
    }

    #[pyo3(signature = (reactor, id, login=false))]
    fn getresp(&self, reactor: &Bound<'_, Reactor>, id: u64, login: bool) -> Pending {
        self.spawn(reactor, id, login, |c| Box::pin(async move { c.read_status().await.map(Bytes) }))
    }

    #[pyo3(signature = (reactor, id, line, login=false))]
    fn shortcmd(&self, reactor: &Bound<'_, Reactor>, id: u64, line: Vec<u8>, login: bool) -> Pending {
        self.spawn(reactor, id, login, move |c| {
            Box::pin(async move {
                c.send_line(&line).await?;
                c.read_status().await.map(Bytes)
            })
        })
    }

    fn longcmd(&self, reactor: &Bound<'_, Reactor>, id: u64, line: Vec<u8>) -> Pending {
        self.spawn(reactor, id, false, move |c| {
            Box::pin(async move {
                c.send_line(&line).await?;
                read_long(c).await
            })
        })
    }

    fn longcmd_bytes(&self, reactor: &Bound<'_, Reactor>, id: u64, line: Vec<u8>) -> Pending {
        self.spawn(reactor, id, false, move |c| {
            Box::pin(async move {
                c.send_line(&line).await?;
                let mut sink = BytesSink::default();
                let (resp, octets) = c.read_long_reply(&mut sink).await?;
                Ok((Bytes(resp), Bytes(sink.data), octets))
            })
        })
    }

    fn begin_body(&self, reactor: &Bound<'_, Reactor>, id: u64, line: Vec<u8>) -> Pending {
        self.spawn(reactor, id, false, move |c| Box::pin(async move { c.begin_body(&line).await.map(Bytes) }))
    }

    fn read_chunk(&self, reactor: &Bound<'_, Reactor>, id: u64, max: usize) -> Pending {
        self.spawn(reactor, id, false, move |c| Box::pin(async move { Ok(c.read_chunk(max).await?.map(Bytes)) }))
    }

    fn starttls(&self, reactor: &Bound<'_, Reactor>, id: u64, tls: PyRef<'_, TlsSettings>) -> Pending {
        let config = tls.config.clone();
        self.spawn(reactor, id, false, move |c| Box::pin(async move { c.starttls(config).await.map(Bytes) }))
    }

    /// Graceful close (waits for an operation in progress); safe to call more than once.
    fn close(&self, reactor: &Bound<'_, Reactor>, id: u64) -> Pending {
        let inner = self.inner.clone();
        let shared = reactor.get().shared.clone();
        let handle = pyo3_async_runtimes::tokio::get_runtime().spawn(async move {
            inner.lock().await.shutdown("the connection is closed".into()).await;
            shared.complete(id, Box::new(|py| Ok(py.None())));
        });
        Pending { handle: handle.abort_handle() }
    }

    /// Immediate close without waiting (for `__del__`-like paths and errors).
    fn abort(&self) {
        if let Ok(mut c) = self.inner.try_lock() {
            c.shutdown_now("the connection is closed".into());
        }
    }

    #[getter]
    fn get_timeout(&self) -> Option<f64> {
        self.inner.try_lock().ok().and_then(|c| c.timeout()).map(|d| d.as_secs_f64())
    }

    #[setter]
    fn set_timeout(&self, timeout: Option<f64>) -> PyResult<()> {
        let t = duration(timeout)?;
        self.inner.try_lock().map_err(|_| Error::Busy)?.set_timeout(t);
        Ok(())
    }

    fn set_max_line(&self, max_line: usize) -> PyResult<()> {
        let mut c = self.inner.try_lock().map_err(|_| Error::Busy)?;
        c.limits = limits(max_line, c.limits.max_data_line, c.limits.max_response)?;
        Ok(())
    }

    fn fileno(&self) -> i64 {
        use std::os::fd::AsRawFd;
        self.inner.try_lock().ok().and_then(|c| c.tcp().map(|t| i64::from(t.as_raw_fd()))).unwrap_or(-1)
    }

    fn peername(&self) -> Option<(String, u16)> {
        let c = self.inner.try_lock().ok()?;
        c.tcp().and_then(|t| t.peer_addr().ok()).map(|a| (a.ip().to_string(), a.port()))
    }

    fn sockname(&self) -> Option<(String, u16)> {
        let c = self.inner.try_lock().ok()?;
        c.tcp().and_then(|t| t.local_addr().ok()).map(|a| (a.ip().to_string(), a.port()))
    }

    fn tls_info(&self) -> Option<(String, String)> {
        self.inner.try_lock().ok()?.tls_info()
    }
}

/// `Vec<u8>` that converts to Python `bytes`.
struct Bytes(Vec<u8>);

impl<'py> IntoPyObject<'py> for Bytes {
    type Target = PyBytes;
    type Output = Bound<'py, PyBytes>;
    type Error = std::convert::Infallible;

    fn into_pyobject(self, py: Python<'py>) -> std::result::Result<Self::Output, Self::Error> {
        Ok(PyBytes::new(py, &self.0))
    }
}
