//! Drivers: they move bytes between a socket and the sans-IO session (`proto::session`), and
//! know nothing of POP3. `blocking` (std + rustls) serves the blocking classes, `tokio`
//! (tokio + tokio-rustls) the asyncio ones.

pub mod blocking;
pub mod tokio;

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use crate::error::Error;
use crate::proto::response::Limits;
use crate::proto::ProtoError;

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
    /// The host without the brackets of an IPv6 literal.
    pub(crate) fn bare_host(&self) -> &str {
        self.host.trim_start_matches('[').trim_end_matches(']')
    }

    /// Resolves the host (IPv4 and IPv6, in the resolver's order), blocking.
    pub fn addresses(&self) -> Result<Vec<SocketAddr>, Error> {
        self.resolved(
            (self.bare_host(), self.port)
                .to_socket_addrs()
                .map(Iterator::collect),
        )
    }

    pub(crate) fn resolved(
        &self,
        result: io::Result<Vec<SocketAddr>>,
    ) -> Result<Vec<SocketAddr>, Error> {
        let addrs =
            result.map_err(|e| Error::Connect(format!("cannot resolve {}: {e}", self.host)))?;
        if addrs.is_empty() {
            return Err(Error::Connect(format!("{} has no address", self.host)));
        }
        Ok(addrs)
    }

    pub fn source(&self) -> Result<Option<SocketAddr>, Error> {
        let Some((host, port)) = &self.source_address else {
            return Ok(None);
        };
        let host = if host.is_empty() {
            "0.0.0.0"
        } else {
            host.as_str()
        };
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
    let tls = err
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .cloned();
    match (tls, err.kind()) {
        (Some(source), _) => Error::Tls {
            source,
            host: host.to_owned(),
        },
        (None, io::ErrorKind::UnexpectedEof) => Error::Proto(ProtoError::Closed),
        _ => Error::io(format!("{context} ({host})"), err),
    }
}

/// Connection failure message naming every address tried.
pub(crate) fn connect_error(opts: &ConnectOptions, errors: Vec<(SocketAddr, io::Error)>) -> Error {
    let timed_out = errors
        .iter()
        .all(|(_, e)| e.kind() == io::ErrorKind::TimedOut);
    let detail: Vec<String> = errors.iter().map(|(a, e)| format!("{a}: {e}")).collect();
    if timed_out {
        Error::Timeout(
            opts.timeout.unwrap_or_default().as_secs_f64(),
            "to accept the connection",
        )
    } else {
        Error::Connect(format!(
            "cannot connect to {}:{} ({})",
            opts.host,
            opts.port,
            detail.join("; ")
        ))
    }
}

/// What the accessors of a connection report; kept apart from the session so that reading
/// it never waits for an operation in progress.
#[derive(Debug, Clone, Default)]
pub struct Info {
    /// The socket's file descriptor, `-1` once closed.
    pub fd: i64,
    pub peer: Option<SocketAddr>,
    pub local: Option<SocketAddr>,
    /// `(protocol version, cipher suite)` once TLS is up.
    pub tls: Option<(String, String)>,
}

pub(crate) fn tls_summary(conn: &rustls::CommonState) -> (String, String) {
    let version = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_owned(),
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_owned(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    };
    // TLS 1.3 suites under OpenSSL's names (`TLS_AES_256_GCM_SHA384`), as `SSLSocket.cipher()`.
    let cipher = conn
        .negotiated_cipher_suite()
        .and_then(|c| c.suite().as_str())
        .map(|name| name.replacen("TLS13_", "TLS_", 1))
        .unwrap_or_default();
    (version, cipher)
}
