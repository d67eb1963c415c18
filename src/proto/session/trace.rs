//! The trace of lines sent and status lines received, secrets masked (debug output, logs).

use super::*;

impl Session {
    /// Turns recording of [`Session::take_trace`] on or off.
    pub fn set_trace(&mut self, on: bool) {
        if on != self.trace.is_some() {
            self.trace = on.then(Vec::new);
        }
    }

    /// `(sent, line)` pairs since the last call: command lines (secrets masked) and status lines.
    pub fn take_trace(&mut self) -> Vec<(bool, Vec<u8>)> {
        self.trace.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// What a command line carries that must never be traced, not even echoed back by the
    /// server: a PASS argument, an APOP digest, an AUTH initial response, a SASL response.
    pub(super) fn remember_secret(&mut self, line: &[u8], verb: Verb) {
        let secret = match verb {
            Verb::Sasl => line,
            Verb::Login | Verb::Auth => {
                let skip = if verb == Verb::Login
                    && !line.starts_with(b"APOP")
                    && !line.starts_with(b"apop")
                {
                    1
                } else {
                    2
                };
                let mut words = line.splitn(skip + 1, |b| *b == b' ');
                match words.nth(skip) {
                    Some(rest) => rest,
                    None => return,
                }
            }
            _ => return,
        };
        // Short strings ("*", "=") would mask ordinary text; a few recent secrets suffice.
        if secret.len() >= 4 {
            if self.secrets.len() == MAX_SECRETS {
                self.secrets.remove(0);
            }
            self.secrets.push(secret.to_vec());
        }
    }

    /// A received line fit for the trace: secrets the server echoes back are masked.
    pub(super) fn masked(&self, line: &[u8]) -> Vec<u8> {
        let mut out = line.to_vec();
        for secret in &self.secrets {
            while let Some(at) = memchr::memmem::find(&out, secret) {
                out.splice(at..at + secret.len(), b"****".iter().copied());
            }
        }
        out
    }

    /// A secret line outside an AUTH exchange is traced with only its verb.
    pub(super) fn mask_last_trace(&mut self, line: &[u8]) {
        if let Some((_, traced)) = self.trace.as_mut().and_then(|t| t.last_mut()) {
            if verb(line) != "AUTH" {
                *traced = [verb(line).as_bytes(), b" ****"].concat();
            }
        }
    }
}
