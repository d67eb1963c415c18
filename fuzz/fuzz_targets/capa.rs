//! CAPA bodies: parsed capabilities or an error, never a panic.
#![no_main]

use _core::proto::capa::parse_capa;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(caps) = parse_capa(data.split(|b| *b == b'\n')) {
        for (name, _) in &caps {
            assert!(caps.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)));
        }
    }
});
