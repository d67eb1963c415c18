//! Authentication computations, free of I/O.

pub mod apop;
