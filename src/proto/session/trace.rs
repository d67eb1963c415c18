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

    /// Remembers what a command sent that must never be shown, not even echoed back by the
    /// server ([`Command::secret`]).
    pub(super) fn remember_secret(&mut self, secret: Option<&[u8]>) {
        // Short strings ("*", "=") would mask ordinary text; a few recent secrets suffice.
        let Some(secret) = secret.filter(|s| s.len() >= 4) else {
            return;
        };
        if self.secrets.len() == MAX_SECRETS {
            self.secrets.remove(0);
        }
        self.secrets.push(Secret::new(secret));
    }

    /// A received status line with the secrets the server echoes back masked.
    pub(super) fn masked(&self, line: &[u8]) -> Vec<u8> {
        let mut out = line.to_vec();
        if self.secrets.is_empty() {
            return out;
        }
        for secret in &self.secrets {
            let secret = secret.expose();
            while let Some(at) = memchr::memmem::find(&out, secret) {
                out.splice(at..at + secret.len(), b"****".iter().copied());
            }
        }
        out
    }
}
