#![forbid(unsafe_code)]
//! fastpoplib's Rust core. See DESIGN.md for the layers.

pub mod auth;
#[cfg(feature = "net")]
pub mod error;
pub mod proto;
#[cfg(feature = "python")]
mod python;
#[cfg(feature = "net")]
pub mod tls;
#[cfg(feature = "net")]
pub mod transport;
