//! Sans-IO POP3: bytes in, parsed lines and responses out; commands in, bytes out.
//!
//! Nothing here touches sockets, clocks, TLS or Python. Both drivers (`transport::blocking`
//! and `transport::tokio`) are thin loops around these types, so every framing rule lives
//! once and is tested here.

pub mod capa;
pub mod command;
pub mod error;
pub mod greeting;
pub mod response;

pub use error::ProtoError;
