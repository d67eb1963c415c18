"""The ``fetch`` progress line on a terminal: messages and bytes stored out of those announced,
the rate, and a time estimate once there is enough to base one on. One line on stderr, redrawn
in place at most ten times a second and erased when the run ends, so that the summary and
errors print on a clean line. No dependency: a carriage return and ``ESC[K`` (erase to the end
of the line), which every terminal emulator in use understands."""

from __future__ import annotations

import os
import time
from typing import TextIO

from ._retriever import Progress

REDRAW_EVERY = 0.1  # seconds between redraws
# No estimate before this much of the run is measured: the first seconds (connecting, logging
# in, the first pipelined replies) say little about the rest, and a wild guess is worse than none.
ESTIMATE_AFTER_SECONDS = 2.0
ESTIMATE_AFTER_FRACTION = 0.05


def _size(nbytes: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if nbytes < 1000 or unit == "GB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1000
    raise AssertionError("unreachable")


def _duration(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class TerminalProgress(Progress):
    """Draws on ``stream``, which must be a terminal."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.now = time.monotonic
        self.total_bytes = self.total_messages = 0
        self.done_bytes = self.done_messages = 0
        self.first_byte_at: float | None = None
        self.drawn_at = 0.0
        self.visible = False

    def expect(self, nbytes: int, messages: int = 0) -> None:
        self.total_bytes += nbytes
        self.total_messages += messages
        self.draw(force=True)

    def advance(self, nbytes: int) -> None:
        if self.first_byte_at is None:
            self.first_byte_at = self.now()
        self.done_bytes += nbytes
        self.done_messages += 1
        self.draw()

    def line(self) -> str:
        done = min(self.done_bytes, self.total_bytes)
        text = (
            f"fetching: {self.done_messages}/{max(self.total_messages, self.done_messages)} messages,"
            f" {_size(done)} of {_size(self.total_bytes)}"
        )
        if self.first_byte_at is None:
            return text
        elapsed = self.now() - self.first_byte_at
        if elapsed <= 0:
            return text
        rate = done / elapsed
        text += f", {_size(rate)}/s"
        enough = elapsed >= ESTIMATE_AFTER_SECONDS and done >= ESTIMATE_AFTER_FRACTION * self.total_bytes
        if enough and rate > 0 and done < self.total_bytes:
            text += f", about {_duration((self.total_bytes - done) / rate)} left"
        return text

    def draw(self, force: bool = False) -> None:
        now = self.now()
        if not force and now - self.drawn_at < REDRAW_EVERY:
            return
        self.drawn_at = now
        try:
            width = os.get_terminal_size(self.stream.fileno()).columns
        except (OSError, ValueError):
            width = 80
        # Shorter than the terminal: a wrapped line could not be redrawn in place.
        self.stream.write("\r" + self.line()[: max(width - 1, 1)] + "\x1b[K")
        self.stream.flush()
        self.visible = True

    def close(self) -> None:
        """Erase the line (the summary or an error is printed next)."""
        if self.visible:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.visible = False
