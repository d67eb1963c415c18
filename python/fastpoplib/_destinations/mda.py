"""The MDA destination: a program that gets each message on its standard input."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import tempfile
from pathlib import Path

from .._store import Outcome, Receipt, Refusal
from .remote import DestinationError, Remote, state_dir_for

EX_TEMPFAIL = 75  # sysexits.h: "temporary failure, try again later"
MDA_KEEP_ENV = ("PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR")


def mda_state_dir(command: str) -> Path:
    """Where the state of accounts delivering through this command lives."""
    return state_dir_for("mda", command)


class MdaDestination(Remote):
    """Delivery by a program (procmail, maildrop, dovecot-lda...): the message on its standard
    input, stored on exit status 0; 75 (EX_TEMPFAIL) keeps it for a later run; anything else
    is a failed message, kept on the server. The command is
    split as a shell would (no shell runs it) and gets only a minimal environment
    (``MDA_KEEP_ENV``): no password the retriever was given reaches it. Killed after
    ``timeout`` seconds (kept for a later run)."""

    def __init__(self, command: str, account: str, *, timeout: float = 60.0) -> None:
        super().__init__(f"mda {command}", mda_state_dir(command), account)
        try:
            self.argv = shlex.split(command)
        except ValueError as exc:
            raise DestinationError(f"the --mda command cannot be parsed: {exc}", "usage") from None
        if not self.argv:
            raise DestinationError("the --mda command is empty", "usage")
        self.timeout = timeout
        self.env = {k: v for k, v in os.environ.items() if k in MDA_KEEP_ENV}

    def deliver(self, key: str, data: bytes) -> list[Outcome]:
        with tempfile.TemporaryFile() as errors:
            try:
                # Its own process group, so a timeout kills what it started too.
                child = subprocess.Popen(
                    self.argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=errors, env=self.env, start_new_session=True
                )
            except OSError as exc:
                return [Refusal(key, f"the MDA could not be run ({exc.strerror or exc}); check --mda", stop=True)]
            try:
                child.communicate(data, timeout=self.timeout)
            except subprocess.TimeoutExpired:
                # This message only, like a broken one: the others are still delivered.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGKILL)
                child.wait()
                return [Refusal(key, f"the MDA did not finish within {self.timeout:g} s and was killed; it stays on the POP server")]
            done = child
            errors.seek(0)
            said = errors.read(300).decode("utf-8", "backslashreplace").strip().splitlines()
        detail = f" ({said[0]})" if said else ""
        if done.returncode == 0:
            return [Receipt(key, "MDA exit 0")]
        if done.returncode == EX_TEMPFAIL:
            # Temporary, maybe for this message only: the others are still tried.
            return [Refusal(key, f"the MDA asked to try again later (exit 75){detail}; it stays on the POP server")]
        status = f"exit status {done.returncode}" if done.returncode > 0 else f"signal {-done.returncode}"
        return [Refusal(key, f"the MDA failed ({status}){detail}; it stays on the POP server")]
