"""retr_to(n, path): a failure removes only what the call created, never the caller's file, a
symlink, a FIFO or a device; success puts the whole message in place."""

from __future__ import annotations

import errno
import os
import stat
import threading
from typing import Any, List

import pytest

from support.clients import logged_in


class Stop(Exception):
    pass


def fail_after_first_chunk(done: int, total: Any) -> None:
    raise Stop("disk full")


def session(kind: str, server: Any) -> Any:
    return logged_in(kind, server.host, server.port)


def leftovers(folder: Any) -> List[str]:
    return sorted(name for name in os.listdir(folder) if name.endswith(".part"))


def test_failure_keeps_the_callers_file_and_success_replaces_it(kind: str, pop3_server: Any, tmp_path: Any) -> None:
    p = session(kind, pop3_server)
    whole = p.retr_bytes(1)
    dest = tmp_path / "mine.eml"
    dest.write_bytes(b"precious")
    dest.chmod(0o640)
    with pytest.raises(Stop):
        p.retr_to(1, dest, progress=fail_after_first_chunk, chunk_size=64)
    assert dest.read_bytes() == b"precious" and leftovers(tmp_path) == []
    assert p.retr_to(1, dest) == len(whole)  # the connection stayed usable
    assert dest.read_bytes() == whole and stat.S_IMODE(dest.stat().st_mode) == 0o640
    p.quit()


def test_failure_removes_a_file_it_created(kind: str, pop3_server: Any, tmp_path: Any) -> None:
    p = session(kind, pop3_server)
    dest = tmp_path / "new.eml"
    with pytest.raises(Stop):
        p.retr_to(2, str(dest), progress=fail_after_first_chunk, chunk_size=64)
    assert not dest.exists() and leftovers(tmp_path) == []
    p.quit()


def test_symlink_is_kept_and_its_target_untouched_on_failure(kind: str, pop3_server: Any, tmp_path: Any) -> None:
    p = session(kind, pop3_server)
    target = tmp_path / "target.eml"
    target.write_bytes(b"old")
    link = tmp_path / "link.eml"
    link.symlink_to(target)
    with pytest.raises(Stop):
        p.retr_to(1, link, progress=fail_after_first_chunk, chunk_size=64)
    assert link.is_symlink() and target.read_bytes() == b"old" and leftovers(tmp_path) == []
    written = p.retr_to(1, link)
    assert link.is_symlink() and len(target.read_bytes()) == written
    p.quit()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_is_written_as_is_and_never_removed(kind: str, pop3_server: Any, tmp_path: Any) -> None:
    p = session(kind, pop3_server)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received: List[bytes] = []
    # The reader is there before retr_to opens the FIFO (opened without waiting), and a writer
    # of the test's own keeps it from seeing the end until retr_to is done.
    reading = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    os.set_blocking(reading, True)
    holding = os.open(fifo, os.O_WRONLY)

    def drain() -> None:
        with os.fdopen(reading, "rb") as f:
            received.append(f.read())

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    with pytest.raises(Stop):
        p.retr_to(1, fifo, progress=fail_after_first_chunk, chunk_size=64)
    os.close(holding)
    reader.join(10)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and received and received[0]
    assert leftovers(tmp_path) == []
    p.quit()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_nobody_reads_is_refused_at_once(kind: str, pop3_server: Any, tmp_path: Any) -> None:
    """Opening a FIFO for writing waits for a reader with no timeout: refused instead."""
    p = session(kind, pop3_server)
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match="no process is reading this FIFO") as info:
        p.retr_to(1, fifo)
    assert info.value.errno == errno.ENXIO
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert p.noop().startswith(b"+OK")
    p.quit()


def test_a_device_is_never_removed(kind: str, pop3_server: Any, tmp_path: Any) -> None:
    """A null device that fails halfway stays there (the old code unlinked it: as root, even
    /dev/null). As root the test makes its own device node, so nothing outside tmp_path is at
    stake; otherwise os.devnull, which the old code failed to unlink (PermissionError)."""
    device = os.devnull
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        device = str(tmp_path / "null")
        os.mknod(device, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    before = os.stat(device)
    p = session(kind, pop3_server)
    with pytest.raises(Stop):
        p.retr_to(1, device, progress=fail_after_first_chunk, chunk_size=64)
    after = os.stat(device)
    assert stat.S_ISCHR(after.st_mode) and after.st_ino == before.st_ino
    p.quit()
