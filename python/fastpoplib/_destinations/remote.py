"""What the network destinations share: the journal, the in-memory spool of a message on its
way, the lock around every conversation with the destination, and where their state lives."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from email.parser import BytesHeaderParser
from email.policy import compat32
from pathlib import Path
from typing import Any, Callable

from .._store import Outcome, Receipt, StoreError, make_dirs, state_home, write_atomic

log = logging.getLogger("fastpoplib.retriever")

IDLE_CHECK = 60.0  # seconds unused after which a connection is checked (NOOP) before it is used again


class DestinationError(StoreError):
    """The destination could not be opened. ``kind`` says why, for the exit code: ``usage``
    (a bad URL, a missing extra), ``auth`` (login refused) or ``connection``."""

    def __init__(self, message: str, kind: str = "connection") -> None:
        super().__init__(message)
        self.kind = kind


def state_dir_for(kind: str, identity: str) -> Path:
    return state_home() / kind / hashlib.sha256(identity.encode("utf-8")).hexdigest()[:16]


class Journal:
    """The destination's own record (see the package docstring): ``stored`` maps each key it
    confirmed, as long as the engine's state holds it, to what the destination said;
    ``intents`` holds the IMAP messages whose APPEND was sent and whose outcome is not known
    yet. Saved atomically; a damaged file counts as empty (its messages may then be delivered
    again)."""

    def __init__(self, path: Path, read: bool = True) -> None:
        self.path = path
        self.stored: dict[str, str] = {}
        self.intents: dict[str, dict[str, Any]] = {}
        if not read:
            return
        try:
            data = json.loads(path.read_bytes())
            self.stored = {str(k): str(v) for k, v in data["stored"].items()}
            self.intents = {str(k): dict(v) for k, v in data["intents"].items()}
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            log.warning("the destination journal %s was damaged; ignoring it", path)

    def save(self) -> None:
        make_dirs(self.path.parent)
        write_atomic(self.path, json.dumps({"stored": self.stored, "intents": self.intents}).encode("utf-8"))


class Spool:
    """A message on its way to a network destination: held in memory (an APPEND literal, LMTP
    DATA and an MDA's standard input all take it whole), handed over on commit."""

    def __init__(self, settle: Callable[[str, bytes], list[Outcome]], lock: threading.RLock) -> None:
        self.settle, self.lock = settle, lock
        self.chunks: list[bytes] | None = []
        self.committed = False

    def write(self, chunk: bytes) -> None:
        if self.chunks is None:
            raise StoreError("the delivery was aborted")
        self.chunks.append(chunk)

    def commit(self, key: str) -> list[Outcome]:
        if self.chunks is None:
            raise StoreError("the delivery was aborted")
        data, self.chunks = b"".join(self.chunks), None
        outcomes = self.settle(key, data)
        self.committed = any(isinstance(o, Receipt) and o.key == key for o in outcomes)
        return outcomes

    def abort(self) -> None:
        # Waits for a delivery in progress (the destination's lock), as a file store's abort does.
        with self.lock:
            self.chunks = None


class Remote:
    """What the network destinations share: the journal, one lock around every conversation
    with the destination (the engine's worker threads and an interrupted run's abort), and the
    receipts of the journal as the answer to "do you hold it"."""

    def __init__(self, path: str, state_dir: Path, account: str) -> None:
        self.path = path
        self.state_dir = state_dir
        self.cancelled = threading.Event()
        self.lock = threading.RLock()
        # Read by stored_keys(), once the engine holds the account's lock.
        self.journal = Journal(state_dir / (hashlib.sha256(account.encode("utf-8")).hexdigest()[:16] + ".journal.json"), read=False)

    def begin(self) -> Spool:
        return Spool(self._settle, self.lock)

    def _settle(self, key: str, data: bytes) -> list[Outcome]:
        with self.lock:
            return self._confirm(self.deliver(key, data))

    def _confirm(self, outcomes: list[Outcome]) -> list[Outcome]:
        """Journal the outcomes before the engine sees them: the receipts, and the intents
        that a refusal settled."""
        if outcomes:
            self.journal.stored.update({o.key: o.detail for o in outcomes if isinstance(o, Receipt)})
            self.journal.save()
        return outcomes

    def deliver(self, key: str, data: bytes) -> list[Outcome]:
        raise NotImplementedError

    def stored_keys(self) -> set[str]:
        with self.lock:
            self.journal = Journal(self.journal.path)
            return set(self.journal.stored)

    def flush(self) -> list[Outcome]:
        return []

    def sync(self) -> None:
        """Nothing to do: a receipt is the destination's own confirmation, journalled."""

    def recorded(self, keys: set[str]) -> None:
        """The engine's state holds ``keys``: receipts of other keys (messages deleted on the
        server since) are forgotten, so the journal stays as small as the state."""
        with self.lock:
            kept = {key: detail for key, detail in self.journal.stored.items() if key in keys}
            if len(kept) != len(self.journal.stored):
                self.journal.stored = kept
                self.journal.save()

    def close(self) -> None:
        pass


def header_fields(data: bytes) -> Any:
    end = data.find(b"\r\n\r\n")
    return BytesHeaderParser(policy=compat32).parsebytes(data[: end + 2] if end >= 0 else data)
