"""Storing a batch of whole messages off the event loop: one worker-thread trip per batch (per
message, the hand-offs between the event loop and a thread cost more than the write itself:
bench/bench_fetch_tools.py). Into a Maildir, the files of a batch are first written and
fsynced by several threads at once, so that the file system commits their fsyncs together
(ext4's journal groups concurrent fsyncs into one commit); then they are committed (renamed
into ``new/``) in the batch's order by one thread, which stops at the first failure as a
single-threaded store would: a message after one the disk could not take is not stored."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from typing import Union

from .._store import Delivery, Destination, Maildir, Outcome

MAILDIR_THREADS = 4  # threads writing and fsyncing one batch's Maildir files at once

# A message on its way: its bytes, or for a Maildir its file already written and fsynced, or
# the exception that writing it raised, or None if it was not written (interrupted).
_Item = Union[bytes, Delivery, Exception, None]


@dataclass
class Stored:
    """What storing a batch did: the outcomes of the messages handed over, the message whose
    storing raised (key, exception; storing stopped there), and the keys of the messages not
    stored (interrupted, or after that error)."""

    outcomes: list[Outcome]
    error: tuple[str, Exception] | None
    rest: list[str]


async def store_batch(store: Destination, batch: list[tuple[str, bytes]], stop: threading.Event) -> Stored:
    """Store ``batch`` (key, bytes), in order; ``stop`` set ends it between two messages."""
    items: list[tuple[str, _Item]] = list(batch)
    if isinstance(store, Maildir) and len(batch) > 1:
        parts = [batch[i::MAILDIR_THREADS] for i in range(min(MAILDIR_THREADS, len(batch)))]
        written = await asyncio.gather(*(asyncio.to_thread(_write, store, part, stop) for part in parts))
        files = {key: item for part in written for key, item in part}
        items = [(key, files[key]) for key, _ in batch]
    return await asyncio.to_thread(_commit, store, items, stop)


def _write(store: Destination, part: list[tuple[str, bytes]], stop: threading.Event) -> list[tuple[str, _Item]]:
    """In a worker thread: each message's file written and fsynced, not yet committed."""
    out: list[tuple[str, _Item]] = []
    for key, data in part:
        if stop.is_set():
            out.append((key, None))
            continue
        try:
            delivery = store.begin()
        except Exception as exc:  # noqa: BLE001 - handed to _commit, which stops there
            out.append((key, exc))
            continue
        try:
            delivery.write(data)
            delivery.fsync()  # type: ignore[attr-defined]  # a Maildir's (store_batch checks)
        except Exception as exc:  # noqa: BLE001 - as above
            delivery.abort()
            out.append((key, exc))
            continue
        out.append((key, delivery))
    return out


def _commit(store: Destination, items: list[tuple[str, _Item]], stop: threading.Event) -> Stored:
    """In a worker thread: each message committed in order (written first if it is bytes); at
    the first failure or once ``stop`` is set, the rest is aborted (their files removed)."""
    outcomes: list[Outcome] = []
    for i, (key, item) in enumerate(items):
        if item is None or stop.is_set():
            return _give_up(outcomes, None, items[i:])
        if isinstance(item, Exception):
            return _give_up(outcomes, (key, item), items[i + 1 :])
        try:
            delivery = store.begin() if isinstance(item, bytes) else item
        except Exception as exc:  # noqa: BLE001 - handed to the event loop (OSError: the store failed)
            return _give_up(outcomes, (key, exc), items[i + 1 :])
        try:
            if isinstance(item, bytes):
                delivery.write(item)
            outcomes += delivery.commit(key)
        except Exception as exc:  # noqa: BLE001 - as above
            delivery.abort()
            return _give_up(outcomes, (key, exc), items[i + 1 :])
    return Stored(outcomes, None, [])


def _give_up(outcomes: list[Outcome], error: tuple[str, Exception] | None, rest: list[tuple[str, _Item]]) -> Stored:
    for _, item in rest:
        if item is not None and not isinstance(item, (bytes, Exception)):
            item.abort()
    return Stored(outcomes, error, [key for key, _ in rest])
