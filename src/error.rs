//! The crate's error type. Only `python::errors` turns it into Python exceptions.

use std::io;

use thiserror::Error;

use crate::proto::session::Closed;
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

    /// The connection is closed: `why` says so.
    pub fn not_connected(why: &Closed) -> Self {
        Error::Proto(ProtoError::NotConnected(why.to_string()))
    }

    /// Why the connection must be closed after this error, `None` if it stays usable: the
    /// session's one policy ([`ProtoError::is_fatal`]) for its own errors; a call refused
    /// as busy leaves it usable; any failure of the driver (I/O, timeout, TLS) or a signal
    /// may have left a reply half-read.
    pub fn closes(&self) -> Option<Closed> {
        match self {
            Error::Proto(err) if !err.is_fatal() => None,
            Error::Busy => None,
            Error::Interrupted => Some(Closed::Interrupted),
            other => Some(Closed::Failed(other.to_string())),
        }
    }
}

fn tls_message(err: &rustls::Error, host: &str) -> String {
    match err {
        rustls::Error::InvalidCertificate(cert) => {
            let (reason, shown) = match cert {
                rustls::CertificateError::Other(other) => {
                    match other.0.downcast_ref::<crate::tls::Presented>() {
                        Some(p) => (
                            p.reason.as_ref(),
                            format!(
                                "; the server presented the certificate of {:?} with fingerprint {}",
                                p.subject, p.fingerprint
                            ),
                        ),
                        None => (Some(cert), String::new()),
                    }
                }
                _ => (Some(cert), String::new()),
            };
            match reason {
                None => format!("certificate for {host} is not the pinned certificate{shown}"),
                Some(reason) => {
                    // The presented certificate is shown where trusting or pinning it is the
                    // remedy; a wrong name or date is the same sentence as Python's ssl gives.
                    let (problem, trust_hint) = certificate_problem(reason, host);
                    if trust_hint {
                        format!(
                            "{problem}{shown}; trust a private CA (or the server's own \
                             self-signed certificate) with cafile=... or context=..., or pin this \
                             certificate with fingerprint=... once you have checked it is the \
                             server's"
                        )
                    } else {
                        problem
                    }
                }
            }
        }
        rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired) => format!(
            "the server {host} requires a client certificate; pass certfile=... and keyfile=..."
        ),
        // A POP3 greeting ("+OK ...") where the TLS handshake was expected.
        rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType) => format!(
            "the server {host} answered in plain text, not TLS: is this a plain POP3 port? \
             Connect without TLS there (upgrading with STLS), or use the server's POP3S port \
             (usually 995)"
        ),
        other => format!("TLS error with {host}: {other}"),
    }
}

/// What is wrong with the certificate, and whether trusting it (or its CA) is the remedy.
fn certificate_problem(cert: &rustls::CertificateError, host: &str) -> (String, bool) {
    use rustls::CertificateError as C;
    match cert {
        C::UnknownIssuer => (
            format!("certificate for {host} is signed by an unknown authority"),
            true,
        ),
        C::NotValidForName | C::NotValidForNameContext { .. } => (
            format!("certificate is not valid for the name {host} (hostname mismatch)"),
            false,
        ),
        C::Expired | C::ExpiredContext { .. } => {
            (format!("certificate for {host} has expired"), false)
        }
        C::NotValidYet | C::NotValidYetContext { .. } => {
            (format!("certificate for {host} is not valid yet"), false)
        }
        C::Revoked => (format!("certificate for {host} has been revoked"), false),
        C::BadSignature => (
            format!("certificate for {host} has an invalid signature"),
            false,
        ),
        C::BadEncoding => (format!("certificate for {host} is malformed"), false),
        C::InvalidPurpose | C::InvalidPurposeContext { .. } => (
            format!("certificate for {host} is not meant for a TLS server"),
            false,
        ),
        // webpki reports a self-signed (CA) certificate used as the server's own this way.
        C::Other(reason) if reason.to_string() == "CaUsedAsEndEntity" => (
            format!("certificate for {host} is self-signed (a CA certificate used as the server's own) and not trusted"),
            true,
        ),
        _ => (format!("certificate for {host} was refused"), true),
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
