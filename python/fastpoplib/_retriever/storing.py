"""Storing a batch of whole messages off the event loop: one worker-thread trip per batch (per
message, the hand-offs between the event loop and a thread cost more than the write itself:
bench/bench_fetch_tools.py). Into a Maildir a batch takes three steps: one thread writes its
files into ``tmp/`` (creating files in one directory is serialised by the kernel anyway, and
threads waiting for it spin), MAILDIR_THREADS threads fsync them at once (ext4's journal groups
concurrent fsyncs into one commit), and one thread commits them (renames into ``new/``) in the
batch's order, stopping at the first failure as a single-threaded store would: a message after
one the disk could not take is not stored."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from typing import Union

from .._store import Delivery, Destination, Maildir, Outcome, _MaildirDelivery

MAILDIR_THREADS = 4  # threads fsyncing one batch's Maildir files at once

# A message on its way: its bytes, or for a Maildir its file already written (and fsynced), or
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
        items = await asyncio.to_thread(_write, store, batch, stop)
        files = [i for i, (_, item) in enumerate(items) if isinstance(item, _MaildirDelivery)]
        parts = [files[i::MAILDIR_THREADS] for i in range(min(MAILDIR_THREADS, len(files)))]
        await asyncio.gather(*(asyncio.to_thread(_fsync, items, part, stop) for part in parts))
    return await asyncio.to_thread(_commit, store, items, stop)


def _write(store: Destination, batch: list[tuple[str, bytes]], stop: threading.Event) -> list[tuple[str, _Item]]:
    """In a worker thread: each message's file written, not yet fsynced nor committed."""
    out: list[tuple[str, _Item]] = []
    for key, data in batch:
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
        except Exception as exc:  # noqa: BLE001 - as above (write aborted the delivery)
            out.append((key, exc))
            continue
        out.append((key, delivery))
    return out


def _fsync(items: list[tuple[str, _Item]], part: list[int], stop: threading.Event) -> None:
    """In one of several worker threads: the files at ``part`` (indexes into ``items``)
    fsynced; a failure replaces the file by its exception (fsync aborted the delivery)."""
    for i in part:
        key, delivery = items[i]
        if stop.is_set():
            return
        assert isinstance(delivery, _MaildirDelivery)
        try:
            delivery.fsync()
        except Exception as exc:  # noqa: BLE001 - handed to _commit, which stops there
            items[i] = (key, exc)


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
