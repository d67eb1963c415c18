//! APOP (RFC 1939 §7): MD5 over the greeting's timestamp and the shared secret.

use md5::{Digest, Md5};

/// Lower-case hex MD5 of `timestamp || secret`.
pub fn digest(timestamp: &[u8], secret: &[u8]) -> String {
    let mut h = Md5::new();
    h.update(timestamp);
    h.update(secret);
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc1939_vector() {
        assert_eq!(
            super::digest(b"<1896.697170952@dbc.mtview.ca.us>", b"tanstaaf"),
            "c4c9334bac560ecc979e58001b3e22fb"
        );
    }
}
