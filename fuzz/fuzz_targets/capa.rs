//! CAPA bodies: every line kept (blank ones skipped), never a panic.
#![no_main]

use _core::proto::capa::parse_capa;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let caps = parse_capa(data.split(|b| *b == b'\n'));
    let lines = data
        .split(|b| *b == b'\n')
        .filter(|l| !String::from_utf8_lossy(l).trim_ascii().is_empty())
        .count();
    assert_eq!(caps.list.len(), lines);
    assert_eq!(caps.pipelining, caps.list.iter().any(|(n, _)| n.eq_ignore_ascii_case("PIPELINING")));
});
