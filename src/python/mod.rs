//! The pyo3 layer: the only Rust code that knows Python.

#[cfg(feature = "bench-bridges")]
mod bench;
mod connection;
mod errors;
mod reactor;
mod tls_settings;

#[pyo3::pymodule]
mod _core {
    #[pymodule_export]
    use super::connection::{Connection, PyJob};
    #[pymodule_export]
    use super::reactor::{Pending, Reactor};
    #[pymodule_export]
    use super::tls_settings::TlsSettings;

    #[cfg(feature = "bench-bridges")]
    #[pymodule_export]
    use super::bench::{bench_async_runtimes, bench_reactor};

    use pyo3::prelude::*;

    /// The APOP timestamp of a greeting (`None` if absent); malformed ones raise.
    #[pyfunction]
    fn apop_timestamp(greeting: &[u8]) -> PyResult<Option<Vec<u8>>> {
        Ok(crate::proto::greeting::apop_timestamp(greeting)
            .map_err(crate::error::Error::from)?
            .map(<[u8]>::to_vec))
    }

    /// Hex MD5 of `timestamp || secret` (RFC 1939 APOP).
    #[pyfunction]
    fn apop_digest(timestamp: &[u8], secret: &[u8]) -> String {
        crate::auth::apop::digest(timestamp, secret)
    }

    /// `[(name, [args])]` from CAPA body lines.
    #[pyfunction]
    fn parse_capa(lines: Vec<Vec<u8>>) -> PyResult<Vec<(String, Vec<String>)>> {
        Ok(
            crate::proto::capa::parse_capa(lines.iter().map(Vec::as_slice))
                .map_err(crate::error::Error::from)?,
        )
    }

    /// A copy of a command line fit for logs, secrets masked (`PASS ****`).
    #[pyfunction]
    #[pyo3(signature = (line, in_auth_exchange=false))]
    fn redact(line: &[u8], in_auth_exchange: bool) -> Vec<u8> {
        crate::proto::command::redact(line, in_auth_exchange)
    }

    /// Whether this extension was built without optimisations (benchmarks refuse to run on it).
    #[pyfunction]
    fn debug_build() -> bool {
        cfg!(debug_assertions)
    }
}
