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
}
