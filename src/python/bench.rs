//! Benchmark only (`--features bench-bridges`, `bench/bench_bridge.py`): the same no-op on
//! tokio, its completion handed to asyncio by pyo3-async-runtimes (`future_into_py`: the tokio
//! thread takes the GIL and calls `call_soon_threadsafe`) or by our reactor (the tokio thread
//! queues it and wakes the loop without the GIL; the loop thread converts it).

use pyo3::prelude::*;

use super::reactor::{runtime, Pending, Reactor};

/// An awaitable for a no-op run on pyo3-async-runtimes' tokio runtime.
#[pyfunction]
pub fn bench_async_runtimes(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    pyo3_async_runtimes::tokio::future_into_py(py, async {
        tokio::task::yield_now().await;
        Ok(())
    })
}

/// A no-op run on our tokio runtime, completed through `reactor` as operation `op`.
#[pyfunction]
pub fn bench_reactor(reactor: &Bound<'_, Reactor>, op: u64) -> Pending {
    let done = reactor.get().shared.clone();
    let handle = runtime().spawn(async move {
        tokio::task::yield_now().await;
        done.complete(op, Box::new(|py| Ok(py.None())));
    });
    Pending {
        handle: handle.abort_handle(),
        on_abort: None,
    }
}
