//! The crate's error type. Only `python::errors` turns it into Python exceptions.

use std::io;

use thiserror::Error;

use crate::proto::ProtoError;

#[derive(Debug, Error)]
pub enum Error {
    #[error(transparent)]
    Proto(#[from] ProtoError),
    #[error("timed out after {0:.3} s waiting for the server {1}")]
    Timeout(f64, &'static str),
    #[error("{context}: {source}")]
    Io { context: String, source: io::Error },
    #[error("{0}")]
    Connect(String),
    /// A TLS failure during the handshake or later; `host` is used to explain certificate problems.
    #[error("{}", tls_message(.source, .host))]
    Tls { source: rustls::Error, host: String },
    /// TLS settings that cannot be honoured (bad PEM, unsupported version...).
    #[error("{0}")]
    TlsConfig(String),
    /// The connection is already closed (by `close()`, `quit()` or an earlier fatal error).
    #[error("{0}")]
    NotConnected(String),
    /// Another thread or task is using the same connection right now.
    #[error("this connection is busy with another call (another thread or task); POP3 replies come in order, so wait for that call to finish, or use one connection per thread or task")]
    Busy,
    /// A Python signal handler raised (Ctrl-C); the pending Python exception is re-raised.
    #[error("interrupted by a signal")]
    Interrupted,
}

impl Error {
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// Whether the byte stream can still be trusted after this error. A `-ERR` reply or a
    /// rejected argument leaves the session usable; anything else may have left part of a
    /// response unread, so the connection must be closed rather than desynchronised.
    pub fn is_fatal(&self) -> bool {
        !matches!(
            self,
            Error::Proto(
                ProtoError::ServerError(_) | ProtoError::InvalidArgument(_) | ProtoError::Usage(_)
            ) | Error::Busy
                | Error::NotConnected(_)
        )
    }
}

fn tls_message(err: &rustls::Error, host: &str) -> String {
    use rustls::CertificateError as C;
    let hint = "; trust a private CA (or the server's own self-signed certificate) with cafile=... or context=...";
    match err {
        rustls::Error::InvalidCertificate(cert) => match cert {
            C::UnknownIssuer => {
                format!("certificate for {host} is signed by an unknown authority{hint}")
            }
            C::NotValidForName | C::NotValidForNameContext { .. } => {
                format!("certificate is not valid for the name {host} (hostname mismatch)")
            }
            C::Expired | C::ExpiredContext { .. } => format!("certificate for {host} has expired"),
            C::NotValidYet | C::NotValidYetContext { .. } => {
                format!("certificate for {host} is not valid yet")
            }
            C::Revoked => format!("certificate for {host} has been revoked"),
            C::BadSignature => format!("certificate for {host} has an invalid signature"),
            C::BadEncoding => format!("certificate for {host} is malformed"),
            C::InvalidPurpose | C::InvalidPurposeContext { .. } => {
                format!("certificate for {host} is not meant for a TLS server")
            }
            // webpki reports a self-signed (CA) certificate used as the server's own this way.
            C::Other(reason) if reason.to_string() == "CaUsedAsEndEntity" => {
                format!("certificate for {host} is self-signed (a CA certificate used as the server's own) and not trusted{hint}")
            }
            C::Other(_) => format!("certificate for {host} was refused{hint}"),
            _ => format!("certificate for {host} was refused{hint}"),
        },
        rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired) => format!(
            "the server {host} requires a client certificate; pass certfile=... and keyfile=..."
        ),
        other => format!("TLS error with {host}: {other}"),
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
