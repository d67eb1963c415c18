//! Errors raised by the sans-IO core.

use thiserror::Error;

/// Everything that can go wrong while encoding a command or decoding a reply.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ProtoError {
    /// The server answered `-ERR` (or anything not starting with `+`); holds the line.
    #[error("{}", String::from_utf8_lossy(.0))]
    ServerError(Vec<u8>),
    /// A line longer than the configured limit (a hostile or broken server).
    #[error("line too long: the server sent a {what} line longer than {limit} bytes")]
    LineTooLong { what: &'static str, limit: usize },
    /// A multi-line response larger than the configured limit.
    #[error("response too large: more than {limit} bytes in one multi-line response; raise max_response_size or stream the message")]
    ResponseTooLarge { limit: usize },
    /// Data the client cannot make sense of (malformed STAT, bad challenge...).
    #[error("malformed server response: {0}")]
    Malformed(String),
    /// A caller-supplied argument that would corrupt the command stream.
    #[error("{0}")]
    InvalidArgument(String),
    /// A request that is not allowed in the session's current state (the text says why).
    #[error("{0}")]
    Usage(String),
    /// The server closed the connection while a reply was outstanding.
    #[error("the server closed the connection while a reply was expected; open a new connection")]
    Closed,
    /// Plaintext bytes arrived after the server's STLS `+OK`: a response-injection attempt.
    #[error("STARTTLS response injection: {0} bytes of plaintext arrived after the STLS +OK; the connection was closed")]
    StlsInjection(usize),
    /// The connection is closed (the sentence says why: `session::Closed`).
    #[error("{0}")]
    NotConnected(String),
}

impl ProtoError {
    /// The one policy for which errors leave the connection usable: a `-ERR` reply, a refused
    /// argument or request (or one made on a connection already closed) leave the byte stream
    /// in step; anything else may have left part of a reply unread, so the connection must be
    /// closed rather than desynchronised.
    pub fn is_fatal(&self) -> bool {
        !matches!(
            self,
            ProtoError::ServerError(_)
                | ProtoError::InvalidArgument(_)
                | ProtoError::Usage(_)
                | ProtoError::NotConnected(_)
        )
    }
}
