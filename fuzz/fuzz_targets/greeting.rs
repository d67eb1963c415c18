//! The APOP timestamp scan: a slice of the input that is a bounded msg-id, or an error.
#![no_main]

use _core::proto::greeting::{apop_timestamp, MAX_TIMESTAMP_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(stamp)) = apop_timestamp(data) {
        assert!(stamp.len() <= MAX_TIMESTAMP_LEN);
        assert!(stamp.starts_with(b"<") && stamp.ends_with(b">"));
        let digest = _core::auth::apop::digest(stamp, b"secret");
        assert_eq!(digest.len(), 32);
    }
});
