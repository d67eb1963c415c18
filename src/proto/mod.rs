//! Sans-IO POP3: the client session (`session`) with its framing (`response`), command
//! encoding (`command`), and the parsers of untrusted greeting and CAPA text.
//!
//! Nothing here touches sockets, clocks, TLS or Python. Both drivers (`transport::blocking`
//! and `transport::tokio`) only move bytes for the session, so every protocol rule lives once
//! and is tested here.

pub mod capa;
pub mod command;
pub mod error;
pub mod greeting;
pub mod response;
pub mod session;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use error::ProtoError;
