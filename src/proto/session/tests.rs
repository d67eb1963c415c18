//! Session tests: scripted server bytes, no sockets.
use super::*;
