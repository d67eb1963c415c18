//! Drivers: the same sans-IO core behind a blocking socket and behind tokio.

pub mod blocking;
pub mod tokio;

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use crate::error::Error;
use crate::proto::response::Limits;

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub host: String,
    pub port: u16,
    /// Bounds the connect and every later wait for the server; `None` waits forever.
    pub timeout: Option<Duration>,
    pub source_address: Option<(String, u16)>,
    pub limits: Limits,
}

impl ConnectOptions {
    /// Resolves the host (IPv4 and IPv6, in the resolver's order).
    pub fn addresses(&self) -> Result<Vec<SocketAddr>, Error> {
        let host = self.host.trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<_> = (host, self.port)
            .to_socket_addrs()
            .map_err(|e| Error::Connect(format!("cannot resolve {}: {e}", self.host)))?
            .collect();
        if addrs.is_empty() {
            return Err(Error::Connect(format!("{} has no address", self.host)));
        }
        Ok(addrs)
    }

    pub fn source(&self) -> Result<Option<SocketAddr>, Error> {
        let Some((host, port)) = &self.source_address else { return Ok(None) };
        let host = if host.is_empty() { "0.0.0.0" } else { host.as_str() };
        (host, *port)
            .to_socket_addrs()
            .map_err(|e| Error::Connect(format!("bad source_address {host}:{port}: {e}")))?
            .next()
            .map(Some)
            .ok_or_else(|| Error::Connect(format!("bad source_address {host}:{port}")))
    }
}

/// Maps an I/O error from the socket or TLS layer to ours, unwrapping the `rustls::Error`
/// that rustls and tokio-rustls hide inside `io::Error`.
pub(crate) fn map_io(err: io::Error, host: &str, context: &'static str) -> Error {
    let tls = err.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()).cloned();
    match (tls, err.kind()) {
        (Some(source), _) => Error::Tls { source, host: host.to_owned() },
        (None, io::ErrorKind::UnexpectedEof) => Error::Closed(context),
        _ => Error::io(format!("{context} ({host})"), err),
    }
}

/// Connection failure message naming every address tried.
pub(crate) fn connect_error(opts: &ConnectOptions, errors: Vec<(SocketAddr, io::Error)>) -> Error {
    let timed_out = errors.iter().all(|(_, e)| e.kind() == io::ErrorKind::TimedOut);
    let detail: Vec<String> = errors.iter().map(|(a, e)| format!("{a}: {e}")).collect();
    if timed_out {
        Error::Timeout(opts.timeout.unwrap_or_default().as_secs_f64(), "to accept the connection")
    } else {
        Error::Connect(format!("cannot connect to {}:{} ({})", opts.host, opts.port, detail.join("; ")))
    }
}
