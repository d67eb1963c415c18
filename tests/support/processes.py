"""Waiting for the processes a test forks, always bounded."""

from __future__ import annotations

import os
import signal
import threading
import time

_POLL = threading.Event()  # never set: `_POLL.wait(t)` is the interval of a bounded poll


def wait_child(pid: int, timeout: float) -> int:
    """The child's exit code; kills it and fails if it has not exited within ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError(f"the forked child did not finish within {timeout} s (killed)")
        _POLL.wait(0.01)
