"""Durable local storage for the retriever: Maildir (default) or mbox, the per-account record
of what was stored, and the locks that keep two writers apart; and the destination interface
(:class:`Destination`) that these and the network destinations of ``_destinations`` share.

The rule that makes ``fetch --delete`` safe: a message counts as stored only once it is
whole on disk and fsynced, and only stored messages are ever deleted on the server. Each
stored message carries a *key* — ``u<hash of (account, exact UID bytes)>-<LIST size>``, or
``d<content digest>-<LIST size>`` when the server has no UIDL — in its Maildir file name or
its mbox ``From_`` line. A crash between storing and recording is repaired on the next run by
scanning the store, and a damaged state file is rebuilt the same way.

Maildir delivery is atomic by construction (``tmp/`` → fsync → rename into ``new/``). An mbox
append is made all-or-nothing: under the mbox locks, a journal records where it begins before
its first byte, a failed write is truncated away, the ``From_`` line records the body length,
and the journal's message, if shorter than that length (the process died mid-append), is
never trusted and, at the end of the file, truncated by the next run. Nothing else in the
file is ever changed: the user's edits are theirs.

The state is a cache of the store: the store is read again before anything is deleted on
the server, and the state directory and files must be the user's own and not writable by
others. Paths are resolved, so a symlink to the store names the same locks and state.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import itertools
import json
import os
import re
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol, Union

FILE_MODE, DIR_MODE = 0o600, 0o700  # mail is private: never readable by other local users
LOCK_POLL = 0.1  # seconds between attempts to take a lock held by someone else
_counter = itertools.count(1)  # next() is atomic: deliveries run in several threads


class StoreError(Exception):
    """The local store cannot be used (path, permissions, disk full, locks)."""


class LockBusy(StoreError):
    """A lock is held by another process and was not released in time."""


def uid_key(account: str, uid: bytes, size: int) -> str:
    """Store key of a message with a UID: the exact UID bytes, and LIST's size, so that a UID
    the server reuses for a different message does not look stored."""
    digest = hashlib.sha256(account.encode("utf-8") + b"\0" + uid).hexdigest()[:24]
    return f"u{digest}-{size}"


def digest_key(sha256_hex: str, size: int) -> str:
    """Store key of a message from a server without UIDL: its content digest."""
    return f"d{sha256_hex[:24]}-{size}"


_KEY = r"[ud][0-9a-f]{24}-[0-9]+"


def make_dirs(path: Path) -> None:
    """Create ``path`` and missing parents as 0700; existing directories keep their mode."""
    missing = []
    while not path.exists():
        missing.append(path)
        if path.parent == path:
            break
        path = path.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, DIR_MODE)
        except FileExistsError:
            pass


def check_private(path: Path, directory: bool) -> None:
    """StoreError unless ``path`` is missing, or is a directory (``directory``) or regular file
    that belongs to this user and that no other user may write: the state says what may be
    deleted on the server, and the locks who may write, so nobody else may plant them."""
    what = "directory" if directory else "file"
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StoreError(f"cannot use the state {what} {path}: {exc.strerror}") from None
    if directory and not stat.S_ISDIR(st.st_mode):
        raise StoreError(f"the state directory {path} is not a directory; move it away and run again")
    if not directory and not stat.S_ISREG(st.st_mode):
        raise StoreError(f"the state file {path} is not a regular file; move it away and run again")
    if st.st_uid != os.getuid():
        raise StoreError(f"the state {what} {path} belongs to another user (uid {st.st_uid}); move it away and run again")
    if st.st_mode & 0o022:
        raise StoreError(
            f"the state {what} {path} is writable by other users (mode {stat.S_IMODE(st.st_mode):04o});"
            f" run chmod go-w {path} after checking its content"
        )


def state_home() -> Path:
    """Where the retriever keeps what has no directory of its own (the state of remote
    destinations, OAuth2 tokens): ``$XDG_STATE_HOME/fastpoplib``, by default
    ``~/.local/state/fastpoplib``."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "fastpoplib"


def check_private_below(home: Path, path: Path) -> None:
    """:func:`check_private` on every existing directory from ``home`` down to ``path``'s
    parent (nothing when ``path`` is not under ``home``): a directory others may write there
    lets them swap what lies below for their own."""
    for directory in reversed(path.parents):
        if directory == home or home in directory.parents:
            check_private(directory, directory=True)


def private_dir(path: Path) -> Path:
    """``path`` created (0700) if missing and checked by :func:`check_private`."""
    try:
        make_dirs(path)
    except OSError as exc:
        raise StoreError(f"cannot create the state directory {path}: {exc.strerror}") from None
    check_private(path, directory=True)
    return path


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


TMP_MAX_AGE = 36 * 3600  # seconds: a Maildir tmp/ file untouched this long is a crash's leftover


def write_atomic(path: Path, data: bytes) -> None:
    """Write a temporary file (0600), fsync, rename over ``path``, fsync the directory: a
    reader sees the old content or the new, never a mix. OSError (``path`` untouched, the
    temporary file removed) if the data cannot all be written: a full disk, a file-size limit."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        try:
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _write_all(fd: int, data: bytes) -> None:
    """``os.write`` until all of ``data`` is written: near a full disk or a file-size limit a
    write may take only part of it without an error (the next one then raises)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written == 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        view = view[written:]


def _poll(attempt: Callable[[], bool], wait: float, busy: str, cancelled: threading.Event) -> None:
    """Call ``attempt()`` until it returns True, for at most ``wait`` seconds, or until
    ``cancelled`` is set (Ctrl-C must not wait for another program's lock)."""
    deadline = time.monotonic() + wait
    while not attempt():
        if time.monotonic() >= deadline or cancelled.wait(LOCK_POLL):
            raise LockBusy(busy)


class AccountLock:
    """An exclusive ``flock`` per account and store, so that overlapping runs (two cron jobs)
    do not fetch the same messages twice. The kernel releases it when the process exits."""

    def __init__(self, directory: Path, account: str) -> None:
        self.path = directory / (_name(account) + ".lock")
        self.fd: int | None = None

    def acquire(self, wait: float, cancelled: threading.Event) -> None:
        private_dir(self.path.parent)
        check_private(self.path, directory=False)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, FILE_MODE)
        except OSError as exc:
            raise StoreError(f"cannot open the lock file {self.path}: {exc.strerror}") from None

        def attempt() -> bool:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            return True

        try:
            _poll(attempt, wait, "another fastpoplib fetch of this account into this store is running", cancelled)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd

    def release(self) -> None:
        fd, self.fd = self.fd, None
        if fd is not None:
            os.close(fd)


def _name(account: str) -> str:
    return hashlib.sha256(account.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True)
class Receipt:
    """The destination's word that it holds the message with this key (a file fsynced into
    place, an IMAP tagged OK, an LMTP 250, an MDA's exit 0). Only a key with a receipt is
    recorded, and only a recorded message is ever deleted on the server."""

    key: str
    detail: str = ""  # what the destination said, for the log (e.g. "UID 12, UIDVALIDITY 3")


@dataclass(frozen=True)
class Refusal:
    """The destination did not take the message: nothing of it counts as stored, it stays on
    the server. ``reason`` is a sentence; ``stop`` means the destination is unusable for now
    (quota, connection lost, a temporary failure): the run stores nothing more. ``pause``
    (with ``stop``): it refuses every message until someone acts (an unknown recipient, a
    full mailbox), so ``watch`` stops polling the account instead of retrying each interval."""

    key: str
    reason: str
    stop: bool = False
    pause: bool = False


Outcome = Union[Receipt, Refusal]


class Delivery(Protocol):
    """One message being written; ``commit(key)`` hands it over (the key is known at the end:
    a digest key needs the whole content), ``abort`` leaves no trace of it.

    ``commit`` returns the outcomes that this call settled: this message's, or, for a
    destination that sends messages in batches (IMAP MULTIAPPEND), nothing while the batch
    fills and then every message of the batch. ``committed`` says whether this message got a
    receipt."""

    committed: bool

    def write(self, chunk: bytes) -> None: ...

    def commit(self, key: str) -> list[Outcome]: ...

    def abort(self) -> None: ...


class Destination(Protocol):
    """Where the retriever stores messages. It knows nothing of POP3: it takes bytes under a
    key and confirms (:class:`Receipt`) only once it holds them.

    ``path`` names it in reports; the account's state and lock live in ``state_dir``.
    ``stored_keys()`` answers "do you hold it" for every key at once (a Maildir reads its file
    names; a network destination its own records, resolving messages whose delivery was
    interrupted). ``flush()`` settles a batch still waiting; ``sync()`` makes the receipts
    given so far durable (the engine calls it before it saves its state, so before any DELE);
    ``recorded(keys)`` tells it which keys the engine's state holds after a save (a record of
    any other key, a message since deleted on the server, may go); ``close()`` ends it. All may block: the engine calls them
    in worker threads, one at a time.
    """

    path: Any
    state_dir: Path
    cancelled: threading.Event

    def begin(self) -> Delivery: ...

    def stored_keys(self) -> set[str]: ...

    def flush(self) -> list[Outcome]: ...

    def sync(self) -> None: ...

    def recorded(self, keys: set[str]) -> None: ...

    def close(self) -> None: ...


class _LocalStore:
    """What Maildir and mbox share as destinations: each message is settled by its own
    commit, and the store's own files are the whole record."""

    def __init__(self) -> None:
        self.cancelled = threading.Event()  # set when the run is interrupted: stop waiting for locks

    def flush(self) -> list[Outcome]:
        return []

    def recorded(self, keys: set[str]) -> None:
        pass

    def close(self) -> None:
        pass


class Maildir(_LocalStore):
    """Delivery into a Maildir: ``tmp/`` → fsync → ``new/`` (the Maildir protocol). The renames
    into ``new/`` are made durable by :meth:`sync` (one directory fsync for a batch of
    messages), which the retriever calls before it records them or deletes them on the
    server: a crash before that loses only renames that nothing relies on yet."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        # Locks and state follow the directory itself, not the spelling of its path (symlinks).
        self.path = path = path.resolve()
        self.unsynced = False  # a rename into new/ may not be on disk yet
        # The host part of the file names (Maildir protocol: "/" and ":" escaped), once per run.
        self.host = socket.gethostname().replace("/", "\\057").replace(":", "\\072")
        self.sync_lock = threading.Lock()
        try:
            for sub in ("tmp", "new", "cur"):
                make_dirs(path / sub)
        except OSError as exc:
            raise StoreError(f"cannot create the Maildir {path}: {exc.strerror}") from None
        for sub in ("tmp", "new", "cur"):
            if not (path / sub).is_dir():
                raise StoreError(f"{path / sub} is not a directory, so {path} is no Maildir; give --maildir another path")
        self.state_dir = private_dir(path / ".fastpoplib")
        self._clean_tmp()

    def _clean_tmp(self) -> None:
        """Remove files in ``tmp/`` untouched for 36 hours, as the Maildir protocol asks of
        deliverers: what a killed run (ours or another program's) left there is never renamed."""
        cutoff = time.time() - TMP_MAX_AGE
        try:
            entries = list(os.scandir(self.path / "tmp"))
        except OSError:
            return
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
                if stat.S_ISREG(st.st_mode) and max(st.st_mtime, st.st_atime) < cutoff:
                    os.unlink(entry.path)
            except OSError:
                pass  # removed meanwhile, or not ours to remove: it only costs space

    def begin(self) -> MaildirDelivery:
        return MaildirDelivery(self, _unique())

    def sync(self) -> None:
        """Make every committed delivery's rename durable (fsync ``new/``)."""
        with self.sync_lock:
            if self.unsynced:
                self.unsynced = False
                _fsync_dir(self.path / "new")

    def stored_keys(self) -> set[str]:
        """Keys of the messages in ``new/`` and ``cur/``: complete by construction."""
        keys = set()
        for sub in ("new", "cur"):
            for entry in os.scandir(self.path / sub):
                found = re.search(f"_fpl-({_KEY})[.]", entry.name)
                if found:
                    keys.add(found.group(1))
        return keys


def _unique() -> str:
    now = time.time()
    return f"{int(now)}.M{int(now % 1 * 1e6)}P{os.getpid()}Q{next(_counter)}"


class MaildirDelivery:
    """One message on its way into a Maildir: a file in ``tmp/`` until :meth:`commit` renames
    it into ``new/`` (after an fsync, its own or :meth:`finish`'s)."""

    # Its methods run in worker threads; an abort from an interrupted run must wait for a
    # write or commit in progress instead of closing the descriptor under it.
    def __init__(self, maildir: Maildir, unique: str) -> None:
        self.maildir, self.path, self.unique = maildir, maildir.path, unique
        self.tmp = self.path / "tmp" / unique
        self.fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        self.size = 0
        self.finished = False  # fsynced and closed by finish(): commit only renames it
        self.committed = False
        self.lock = threading.RLock()

    def write(self, chunk: bytes) -> None:
        with self.lock:
            self._check()
            try:
                _write_all(self.fd, chunk)
            except BaseException:
                self.abort()
                raise
            self.size += len(chunk)

    def _check(self) -> None:
        if self.fd < 0:
            raise StoreError("the delivery was aborted")

    def finish(self) -> None:
        """Make the file durable (fsync) and close it ahead of :meth:`commit`, which then only
        renames it: several threads can fsync a batch's files at once, and a batch does not
        hold a descriptor per file until its commit. Nothing more can be written."""
        with self.lock:
            self._check()
            self._sync_and_close()
            self.finished = True

    def _sync_and_close(self) -> None:
        try:
            os.fsync(self.fd)
        except BaseException:
            self.abort()
            raise
        fd, self.fd = self.fd, -1
        os.close(fd)

    def commit(self, key: str) -> list[Outcome]:
        with self.lock:
            if not self.finished:
                self._check()
                self._sync_and_close()
            final = self.path / "new" / f"{self.unique}_fpl-{key}.{self.maildir.host},S={self.size}"
            try:
                with self.maildir.sync_lock:
                    os.rename(self.tmp, final)
                    self.maildir.unsynced = True
            except BaseException:
                self.abort()
                raise
            self.committed = True
        return [Receipt(key, final.name)]

    def abort(self) -> None:
        with self.lock:
            self.finished = False  # a later commit fails (_check)
            if self.fd >= 0:
                fd, self.fd = self.fd, -1
                os.close(fd)
            if self.committed:
                return  # the file is in new/ and stays there
            try:
                os.unlink(self.tmp)
            except FileNotFoundError:
                pass


class Mbox(_LocalStore):
    """Appending to an mbox file (mboxrd quoting), locked as mail programs lock it: an fcntl
    (``lockf``) lock on the file plus a ``FILE.lock`` dotlock, as Python's ``mailbox`` does.

    A message is first spooled (converted to mbox form) in the state directory, so that the
    mbox is locked only for the final copy, and the ``From_`` line can carry the body length.
    """

    def __init__(self, path: Path, lock_wait: float = 60.0) -> None:
        super().__init__()
        # Locks and state follow the file itself, not the spelling of its path (symlinks).
        self.path = path = path.resolve()
        self.lock_wait = lock_wait
        self.state_dir = path.with_name(path.name + ".fastpoplib")
        # Checked before anything is created beside it: a device (/dev/full reads zeros for
        # ever) or a directory is no mbox.
        if path.exists() and not path.is_file():
            raise StoreError(f"{path} is not a regular file; give --mbox a file path")
        try:
            make_dirs(path.parent)
        except OSError as exc:
            raise StoreError(f"cannot create the directory of the mbox {path}: {exc.strerror}") from None
        private_dir(self.state_dir)
        try:
            # Only a new file is opened and closed here: closing a descriptor of a file drops
            # every fcntl lock this process holds on it (another account may be appending).
            if not path.exists():
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
        except FileExistsError:
            pass
        except OSError as exc:
            raise StoreError(f"cannot create the mbox {path}: {exc.strerror}") from None

    def sync(self) -> None:
        """Nothing to do: each append is fsynced before it counts (see :class:`Maildir`)."""

    def begin(self) -> Delivery:
        return _MboxDelivery(self)

    @contextmanager
    def locked(self) -> Iterator[int]:
        """The mbox open for append, with both locks held; waits up to ``lock_wait`` s."""
        # fcntl locks do not exclude threads of one process (two accounts appending to one
        # mbox): a lock per file serialises them first.
        in_process = _process_lock(self.path)
        _poll(
            lambda: in_process.acquire(blocking=False),
            self.lock_wait,
            "another account is writing to the mbox",
            self.cancelled,
        )
        try:
            with self._file_locked() as fd:
                yield fd
        finally:
            in_process.release()

    @contextmanager
    def _file_locked(self) -> Iterator[int]:
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, FILE_MODE)
        try:
            _poll(
                lambda: _try_lockf(fd),
                self.lock_wait,
                f"the mbox {self.path} stayed locked by another program (fcntl lock); try again later",
                self.cancelled,
            )
            try:
                _poll(
                    self._try_dotlock,
                    self.lock_wait,
                    f"the mbox {self.path} stayed locked by another program ({self.path}.lock); try again later,"
                    " or remove a stale lock file",
                    self.cancelled,
                )
                try:
                    yield fd
                finally:
                    os.unlink(f"{self.path}.lock")
            finally:
                fcntl.lockf(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def _try_dotlock(self) -> bool:
        """Create ``FILE.lock`` as ``mailbox`` does (a unique file hard-linked into place,
        safe on NFS); ours hold our pid, so one left by a killed fastpoplib is removed."""
        lock = f"{self.path}.lock"
        unique = f"{lock}.{socket.gethostname()}.{os.getpid()}.{threading.get_ident()}"
        fd = os.open(unique, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        try:
            os.write(fd, f"fastpoplib {socket.gethostname()} {os.getpid()}\n".encode())
        finally:
            os.close(fd)
        try:
            os.link(unique, lock)
            return True
        except FileExistsError:
            _remove_stale_dotlock(lock)
            return False
        finally:
            os.unlink(unique)

    @property
    def journal(self) -> Path:
        """Where an append in progress is recorded (its start offset and ``From_`` line)
        before its first byte is written; removed once it is complete or rolled back."""
        return self.state_dir / "append.json"

    def stored_keys(self) -> set[str]:
        """Keys of the messages in the mbox. An append this store recorded in its journal and
        did not complete (a run killed in the middle) is not counted, and is truncated away if
        nothing follows it, under the locks; nothing else in the file is ever changed (a mail
        reader may shorten a message, or remove it)."""
        with self.locked() as fd:
            unfinished = self._read_journal()
            keys, cut = _scan_mbox(fd, unfinished)
            if cut is not None:
                os.ftruncate(fd, cut)
                os.fsync(fd)
            if unfinished is not None:
                os.unlink(self.journal)
        return keys

    def _read_journal(self) -> tuple[int, int, bytes] | None:
        """The unfinished append: where its bytes begin, where its ``From_`` line begins, and that line."""
        check_private(self.journal, directory=False)
        try:
            data = json.loads(self.journal.read_bytes())
            start = int(data["start"])
            # A journal without "at" was written before separators were recorded: at most one newline.
            return start, int(data.get("at", start + 1)), str(data["from"]).encode("ascii")
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # write_atomic never leaves half a journal: this one was not written by us.
            raise StoreError(f"the journal {self.journal} cannot be read ({exc}); move it away and run again") from None


_process_locks: dict[str, threading.Lock] = {}
_process_locks_guard = threading.Lock()


def _process_lock(path: Path) -> threading.Lock:
    with _process_locks_guard:
        return _process_locks.setdefault(os.path.realpath(path), threading.Lock())


def _try_lockf(fd: int) -> bool:
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            return False
        raise
    return True


def _remove_stale_dotlock(lock: str) -> None:
    try:
        with open(lock, "rb") as f:
            words = f.read(200).split()
    except OSError:
        return
    if (
        len(words) == 3
        and words[0] == b"fastpoplib"
        and words[1] == socket.gethostname().encode()
        and words[2].isdigit()
    ):
        try:
            os.kill(int(words[2]), 0)
        except ProcessLookupError:
            try:
                os.unlink(lock)
            except FileNotFoundError:
                pass
        except PermissionError:
            pass  # the process exists (another user's)


_FROM_FPL = re.compile(rb"From fpl-(" + _KEY.encode() + rb")-L([0-9]+) ")


def _scan_mbox(fd: int, unfinished: tuple[int, int, bytes] | None) -> tuple[set[str], int | None]:
    """Keys of the fastpoplib messages of the mbox, and the offset to truncate the file to if
    it ends with the ``unfinished`` append (from the journal: where its bytes begin, where its
    ``From_`` line begins, and that line) cut short. That message counts only if at least the body length in its ``From_``
    line follows it; every other one counts as stored whatever its length now (the user's
    edits are theirs). Any line starting with ``From `` ends the previous message (mboxrd
    quotes such lines inside messages)."""
    keys: set[str] = set()
    current: tuple[str, int, int, int, bool] | None = None  # key, length, From_ offset, body offset, unfinished
    offset = 0

    def close(end: int) -> bool:
        """Count the current message; False if it is the unfinished append, cut short."""
        if current is None:
            return True
        key, length, _, body, ours = current
        complete = not ours or end - body >= length + 1  # the body, then the blank separator line
        if complete:
            keys.add(key)
        return complete

    # Read through the locked descriptor: opening and closing another would drop our fcntl lock.
    with open(fd, "rb", closefd=False) as f:
        f.seek(0)
        for line in f:
            if line.startswith(b"From "):
                close(offset)
                found = _FROM_FPL.match(line)
                ours = unfinished is not None and line == unfinished[2]
                current = (found.group(1).decode(), int(found.group(2)), offset, offset + len(line), ours) if found else None
            offset += len(line)
    if not close(offset) and current is not None and unfinished is not None:
        start = current[2]
        # Also the separator written before the From_ line, if the file still has it where
        # the journal says (the user did not edit what comes before).
        return keys, unfinished[0] if unfinished[0] < start == unfinished[1] else start
    return keys, None


class _MboxDelivery:
    def __init__(self, mbox: Mbox) -> None:
        self.mbox = mbox
        self.spool_path = mbox.state_dir / f"spool.{_unique()}"
        fd = os.open(self.spool_path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, FILE_MODE)
        self.spool: BinaryIO | None = open(fd, "w+b")  # noqa: SIM115 - open until commit or abort
        self.carry = b""
        self.length = 0
        self.committed = False
        self.lock = threading.RLock()  # as MaildirDelivery's: abort waits for a write or commit

    def write(self, chunk: bytes) -> None:
        with self.lock:
            lines = (self.carry + chunk).split(b"\n")
            self.carry = lines.pop()
            self._put(lines)

    def _put(self, lines: list[bytes]) -> None:
        if self.spool is None:
            raise StoreError("the delivery was aborted")
        out = b"".join(_mboxrd(line) for line in lines)
        try:
            self.spool.write(out)
        except BaseException:
            self.abort()
            raise
        self.length += len(out)

    def commit(self, key: str) -> list[Outcome]:
        with self.lock:
            self._put([self.carry] if self.carry else [])
            self.carry = b""
            self._append(key)
        return [Receipt(key)]

    def _append(self, key: str) -> None:
        assert self.spool is not None  # checked by _put
        try:
            self.spool.flush()
            self.spool.seek(0)
            stamp = time.asctime(time.gmtime()).encode("ascii")
            from_line = b"From fpl-" + key.encode("ascii") + b"-L%d " % self.length + stamp + b"\n"
            with self.mbox.locked() as fd:
                start = os.fstat(fd).st_size
                separator = _missing_separator(os.pread(fd, 2, max(0, start - 2)) if start else b"")
                # Recorded before the first byte: only what this append wrote (the separator
                # included) is ever rolled back.
                journal = {"start": start, "at": start + len(separator), "from": from_line.decode("ascii")}
                write_atomic(self.mbox.journal, json.dumps(journal).encode())
                try:
                    _write_all(fd, separator + from_line)
                    while chunk := self.spool.read(1 << 20):
                        _write_all(fd, chunk)
                    _write_all(fd, b"\n")
                    os.fsync(fd)
                    self.committed = True
                except BaseException:
                    # All or nothing: cut the partial message off (disk full, file too large).
                    os.ftruncate(fd, start)
                    os.fsync(fd)
                    raise
                finally:
                    if self.committed or os.fstat(fd).st_size == start:
                        os.unlink(self.mbox.journal)
        finally:
            self.abort()

    def abort(self) -> None:
        with self.lock:
            spool, self.spool = self.spool, None
            if spool is not None:
                spool.close()
                try:
                    os.unlink(self.spool_path)
                except FileNotFoundError:
                    pass


def _missing_separator(tail: bytes) -> bytes:
    """What to write before a ``From_`` line after an mbox ending in ``tail`` (its last two
    bytes, empty for an empty file): mboxrd separates messages by a blank line, which a user's
    edit (a mail reader removing the last newline) may have taken away."""
    if not tail or tail.endswith(b"\n\n") or tail == b"\n":
        return b""
    return b"\n" if tail.endswith(b"\n") else b"\n\n"


def _mboxrd(line: bytes) -> bytes:
    """One line in mbox form: LF ending, ``>`` added before ``>*From `` (mboxrd)."""
    if line.endswith(b"\r"):
        line = line[:-1]
    if line.lstrip(b">").startswith(b"From "):
        line = b">" + line
    return line + b"\n"


class State:
    """What one account has stored: the (exact UID, LIST size) pairs, and for a server without
    UIDL the content digests; ``aliases`` maps a key whose message was found already stored
    under another key (same bytes, another route or no UID) to that key; ``failures`` counts
    the runs in a row a message failed in. Saved atomically; a damaged file is ignored
    (``damaged``), and the caller rebuilds what it held from the store's keys. The state is a
    cache of the store, never the authority: nothing is deleted on the server unless the store
    holds it."""

    def __init__(self, directory: Path, account: str) -> None:
        self.path = directory / (_name(account) + ".json")
        self.account = account
        self.keys: set[str] = set()
        self.aliases: dict[str, str] = {}
        self.failures: dict[str, int] = {}
        self.damaged = False
        # A run interrupted during a save starts its final save while the first still runs in
        # its worker thread: both would write the same temporary file.
        self.saving = threading.Lock()
        check_private(self.path, directory=False)
        try:
            data = json.loads(self.path.read_bytes())
            self.keys = {str(k) for k in data["keys"]}
            self.aliases = {str(k): str(v) for k, v in data.get("aliases", {}).items()}
            self.failures = {str(k): int(v) for k, v in data.get("failures", {}).items()}
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            self.damaged = True

    def add(self, keys: Iterable[str]) -> None:
        self.keys.update(keys)

    def dump(self) -> bytes:
        data = {
            "account": self.account,
            "keys": sorted(self.keys),
            "aliases": dict(sorted(self.aliases.items())),
            "failures": dict(sorted(self.failures.items())),
        }
        return json.dumps(data, indent=0).encode("utf-8")

    def save(self, data: bytes) -> None:
        with self.saving:
            try:
                private_dir(self.path.parent)
                write_atomic(self.path, data)
            except OSError as exc:
                raise StoreError(f"cannot save the state file {self.path}: {exc.strerror or exc}") from None


class DigestIndex:
    """Which content each stored message has, for the whole store (every account and route
    writing to it): lines ``<digest key> <store key>`` appended to ``digests`` in the state
    directory once the message is stored. Lets a run recognise bytes already stored under
    another key: the same mailbox reached by another host name or port, or a message stored
    under its UID and later seen without one. A cache like the state: an entry counts only if
    the store holds its key."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "digests"

    def load(self) -> dict[str, str]:
        check_private(self.path, directory=False)
        try:
            with open(self.path, "rb") as f:
                entries = [line.split() for line in f]
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise StoreError(f"cannot read {self.path}: {exc.strerror}") from None
        return {e[0].decode(): e[1].decode() for e in entries if len(e) == 2 and _is_key(e[0]) and _is_key(e[1])}

    def add(self, entries: list[tuple[str, str]]) -> None:
        """Append ``(digest, key)`` pairs, one line each."""
        # One write with O_APPEND: concurrent runs do not interleave. Not fsynced: a crash may
        # lose the last lines, which only makes a later run of another route store those
        # messages once more (the store's own keys are fsynced).
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)
        try:
            _write_all(fd, "".join(f"{digest} {key}\n" for digest, key in entries).encode("ascii"))
        finally:
            os.close(fd)


def _is_key(word: bytes) -> bool:
    return re.fullmatch(_KEY.encode(), word) is not None
