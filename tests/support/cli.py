"""Running the `fastpoplib` command for real, in subprocesses, and reading what it stored:
shared by the CLI and retriever tests."""

from __future__ import annotations

import mailbox
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

ENV = dict(os.environ, POP_PW="password")
DEADLINE = 30.0  # seconds any polling loop may take


def cli(*args: str, timeout: float = 120, **kw: Any) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fastpoplib", *args],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=timeout,
        check=False,
        **kw,
    )


def spawn(*args: str, **kw: Any) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "fastpoplib", *args],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def account(srv: Any) -> list[str]:
    return [
        "--host",
        srv.host,
        "--port",
        str(srv.port),
        "--user",
        "user",
        "--tls",
        "none",
        "--insecure",
        "--password-env",
        "POP_PW",
    ]


def wait_for(condition: Callable[[], bool], what: str, deadline: float = DEADLINE) -> None:
    """Poll an observable condition, failing after ``deadline`` seconds."""
    end = time.monotonic() + deadline
    while not condition():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.02)


def crlf(message: bytes) -> bytes:
    return lf(message).replace(b"\n", b"\r\n")


def lf(message: bytes) -> bytes:
    return message.replace(b"\r\n", b"\n")


def maildir_messages(path: Path) -> list[bytes]:
    return sorted(p.read_bytes() for sub in ("new", "cur") if (path / sub).exists() for p in (path / sub).iterdir())


def mbox_messages(path: Path) -> list[bytes]:
    """The messages of an mbox as Python's mailbox module reads them (LF line ends)."""
    box = mailbox.mbox(path, create=False)
    try:
        return sorted(box.get_bytes(key) for key in box.iterkeys())
    finally:
        box.close()



def no_traceback(*outputs: str) -> None:
    """No traceback, and no bare exception line (``ValueError: ...``) either."""
    for out in outputs:
        assert "Traceback" not in out, out
        assert not re.search(r"^\w*(Error|Exception|Interrupt)\b", out, re.MULTILINE), out


def _message(i: int, size: int) -> bytes:
    body = b"".join(b"line %d of message %d %s\n" % (n, i, b"x" * 60) for n in range(size // 80 + 1))
    return b"From: sender%d@example.org\nSubject: message %d\n\n" % (i, i) + body


def screen(output: str) -> list[str]:
    """The lines a terminal shows for ``output`` (CR moves back to the start of the line,
    ``ESC[K`` erases from the cursor to the end of the line)."""
    lines = []
    for raw in output.replace("\r\n", "\n").split("\n"):
        cells: list[str] = []
        column = 0
        for piece in re.split("(\x1b\\[K)", raw):
            if piece == "\x1b[K":
                del cells[column:]
                continue
            column = _draw(cells, column, piece)
        lines.append("".join(cells).rstrip())
    return lines


def _draw(cells: list[str], column: int, text: str) -> int:
    for ch in text:
        if ch == "\r":
            column = 0
            continue
        cells[column : column + 1] = [ch]
        column += 1
    return column
