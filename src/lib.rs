#![forbid(unsafe_code)]
//! fastpoplib's Rust core. See DESIGN.md for the layers.

pub mod auth;
pub mod error;
pub mod proto;
pub mod tls;
pub mod transport;
#[cfg(feature = "python")]
mod python;
