"""Durable local storage for the retriever: Maildir (default) or mbox, plus the per-account
record of UIDs already fetched.

The rule that makes ``fetch --delete`` safe: a message counts as stored only once it is on
disk and fsynced, and only stored messages are ever deleted on the server. Each stored
message carries a tag derived from (account, UID) — in its Maildir file name or its mbox
``From_`` line — so a crash between storing and recording the UID is repaired on the next
run by scanning the store instead of fetching the message twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from pathlib import Path
from typing import Iterable, Set

_counter = 0


def uid_tag(account: str, uid: str) -> str:
    return hashlib.sha256(f"{account}\0{uid}".encode("utf-8")).hexdigest()[:24]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Write temp file, fsync, rename over ``path``, fsync the directory."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


class Maildir:
    """Delivery into a Maildir: ``tmp/`` → fsync → ``new/`` (the Maildir protocol)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        for sub in ("tmp", "new", "cur"):
            (path / sub).mkdir(parents=True, exist_ok=True)
        self.state_dir = path / ".fastpoplib"

    def deliver(self, data: bytes, tag: str) -> Path:
        global _counter
        _counter += 1
        now = time.time()
        host = socket.gethostname().replace("/", "\\057").replace(":", "\\072")
        name = f"{int(now)}.M{int(now % 1 * 1e6)}P{os.getpid()}Q{_counter}_fpl-{tag}.{host},S={len(data)}"
        tmp = self.path / "tmp" / name
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        final = self.path / "new" / name
        os.rename(tmp, final)
        _fsync_dir(final.parent)
        return final

    def stored_tags(self) -> Set[str]:
        tags = set()
        for sub in ("new", "cur"):
            for entry in os.scandir(self.path / sub):
                _, sep, rest = entry.name.partition("_fpl-")
                if sep:
                    tags.add(rest[:24])
        return tags

    def count(self) -> int:
        return sum(1 for sub in ("new", "cur") for _ in os.scandir(self.path / sub))


class Mbox:
    """Appending to an mbox file (mboxrd quoting), fsynced after each message."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.state_dir = path.with_name(path.name + ".fastpoplib")

    def deliver(self, data: bytes, tag: str) -> Path:
        body = data.replace(b"\r\n", b"\n")
        lines = [(b">" + line if line.lstrip(b">").startswith(b"From ") else line) for line in body.split(b"\n")]
        stamp = time.asctime(time.gmtime()).encode("ascii")
        text = b"From fpl-" + tag.encode("ascii") + b" " + stamp + b"\n" + b"\n".join(lines).rstrip(b"\n") + b"\n\n"
        with open(self.path, "ab") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        return self.path

    def stored_tags(self) -> Set[str]:
        tags = set()
        if self.path.exists():
            with open(self.path, "rb") as f:
                for line in f:
                    if line.startswith(b"From fpl-"):
                        tags.add(line[9:33].decode("ascii", "replace"))
        return tags

    def count(self) -> int:
        return len(self.stored_tags())


class State:
    """UIDs of one account already stored, saved atomically as JSON."""

    def __init__(self, directory: Path, account: str) -> None:
        self.path = directory / (hashlib.sha256(account.encode("utf-8")).hexdigest()[:16] + ".json")
        self.account = account
        self.uids: Set[str] = set()
        if self.path.exists():
            self.uids = set(json.loads(self.path.read_text("utf-8")).get("uids", []))

    def add(self, uids: Iterable[str]) -> None:
        self.uids.update(uids)

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = {"account": self.account, "uids": sorted(self.uids)}
        write_atomic(self.path, json.dumps(data, indent=0).encode("utf-8"))
