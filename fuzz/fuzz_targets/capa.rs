//! CAPA bodies: parsed capabilities or an error, never a panic.
#![no_main]

use _core::proto::capa::{has, parse_capa};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(caps) = parse_capa(data.split(|b| *b == b'\n')) {
        for (name, _) in &caps {
            assert!(has(&caps, name));
        }
    }
});
