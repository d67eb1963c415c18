"""What the stores leave behind when things go wrong. A state file is replaced whole or not at
all, also when the disk fills up or a file-size limit (RLIMIT_FSIZE) stops a write part way: a
state saved cut short would be read as damaged, rebuilt from what the store still holds, and
every message the user had moved away fetched again. A killed run's partial files in a
Maildir's tmp/ are removed once they are 36 hours old."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from fastpoplib._store import Maildir
from support.cli import account, cli

LIMIT = 40 * 1024  # bytes any file of the child process may grow to


def _limited() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, LIMIT))


def test_a_write_cut_short_by_a_size_limit_leaves_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    target.write_bytes(b'{"old": true}')
    code = (
        "import sys; from pathlib import Path; from fastpoplib._store import write_atomic\n"
        "try:\n"
        f"    write_atomic(Path({str(target)!r}), b'x' * {3 * LIMIT})\n"
        "except OSError as exc:\n"
        "    print(exc.errno); sys.exit(0)\n"
        "sys.exit('written whole past the limit?')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, preexec_fn=_limited, timeout=60)
    assert out.returncode == 0, out.stderr
    assert target.read_bytes() == b'{"old": true}'
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # no temporary file left


def test_fetch_whose_state_cannot_be_saved_fails_and_stores_nothing_twice(tmp_path: Path, pop3_server_factory: Any) -> None:
    # Enough messages that the state file outgrows the limit, each message file well under it.
    srv = pop3_server_factory(mailbox=[b"Subject: m%d\r\n\r\nbody\r\n" % i for i in range(2000)])
    maildir = tmp_path / "Maildir"
    first = cli("fetch", *account(srv), "--maildir", str(maildir), preexec_fn=_limited)
    assert first.returncode != 0 and "File too large" in first.stderr, first.stdout + first.stderr
    for state in (maildir / ".fastpoplib").glob("*.json"):
        json.loads(state.read_bytes())  # never a state cut short
    assert list((maildir / "new").iterdir())  # messages were stored before the state outgrew the limit
    second = cli("fetch", *account(srv), "--maildir", str(maildir))
    assert second.returncode == 0, second.stderr
    subjects = [p.read_bytes().split(b"\r\n", 1)[0] for p in (maildir / "new").iterdir()]
    assert len(subjects) == len(set(subjects)) == 2000
    for p in (maildir / "new").iterdir():  # the user moves the mail away
        p.unlink()
    third = cli("fetch", *account(srv), "--maildir", str(maildir))
    assert third.returncode == 0, third.stderr
    assert list((maildir / "new").iterdir()) == []


def test_opening_a_maildir_removes_only_tmp_files_left_36_hours_ago(tmp_path: Path) -> None:
    """A killed run leaves its partial files in tmp/ (never renamed, so nothing is lost): the
    Maildir protocol has deliverers remove those untouched for 36 hours."""
    Maildir(tmp_path / "m")
    tmp = tmp_path / "m" / "tmp"
    old, fresh, folder = tmp / "old.eml", tmp / "fresh.eml", tmp / "a-directory"
    old.write_bytes(b"partial")
    fresh.write_bytes(b"being written")
    folder.mkdir()
    long_ago = time.time() - 37 * 3600
    os.utime(old, (long_ago, long_ago))
    os.utime(folder, (long_ago, long_ago))
    Maildir(tmp_path / "m")
    assert sorted(p.name for p in tmp.iterdir()) == ["a-directory", "fresh.eml"]
