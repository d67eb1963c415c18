//! The whole session: random requests (commands, put/claim, raw lines, batches, streams, STLS)
//! against random server bytes. Never a panic; a failed step leaves the session broken.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    _core::proto::testing::drive(data);
});
