//! The pyo3 layer: the only Rust code that knows Python.

#[cfg(feature = "bench-bridges")]
mod bench;
mod command;
mod connection;
mod errors;
mod message_info;
mod reactor;
mod tls_settings;

#[pyo3::pymodule]
mod _core {
    #[pymodule_export]
    use super::command::{PyCommand, PySecret};
    #[pymodule_export]
    use super::connection::{Connection, PyJob};
    #[pymodule_export]
    use super::message_info::MessageInfo;
    #[pymodule_export]
    use super::reactor::{Pending, Reactor};
    #[pymodule_export]
    use super::tls_settings::TlsSettings;

    #[cfg(feature = "bench-bridges")]
    #[pymodule_export]
    use super::bench::{bench_async_runtimes, bench_reactor};

    use pyo3::prelude::*;

    /// Whether this extension was built without optimisations (benchmarks refuse to run on it).
    #[pyfunction]
    fn debug_build() -> bool {
        cfg!(debug_assertions)
    }
}
