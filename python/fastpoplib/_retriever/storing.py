"""Storing a batch of whole messages off the event loop: one worker-thread trip per batch (per
message, the hand-offs between the event loop and a thread cost more than the write itself:
bench/bench_fetch_tools.py). Into a Maildir, that thread writes the batch's files into ``tmp/``
one after the other (creating files in one directory is serialised by the kernel anyway, and
threads waiting for it spin) and hands each to a few threads that fsync and close it (ext4's
journal groups concurrent fsyncs into one commit), at most MAILDIR_OPEN_FILES open at once; then
it commits them (renames into ``new/``) in the batch's order, stopping at the first failure as
a single-threaded store would: a message after one the disk could not take is not stored."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Union

from .._store import Delivery, Destination, Maildir, Outcome, MaildirDelivery

MAILDIR_THREADS = 4  # threads fsyncing a batch's Maildir files at once
MAILDIR_OPEN_FILES = 16  # at most this many of a batch's Maildir files open at once

# A message on its way: its bytes, or for a Maildir its file already written and finished, or
# the exception that storing it raised, or None if it was not written (interrupted).
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
    if isinstance(store, Maildir) and len(batch) > 1:
        return await asyncio.to_thread(_store_files, store, batch, stop)
    return await asyncio.to_thread(_commit, store, list(batch), stop)


def _store_files(store: Maildir, batch: list[tuple[str, bytes]], stop: threading.Event) -> Stored:
    """In a worker thread: a Maildir batch written, finished by MAILDIR_THREADS threads of its
    own (so that no other account waits for them), then committed in order."""
    items: list[tuple[str, _Item]] = []
    finishing: list[tuple[int, Future[Exception | None]]] = []
    open_files = threading.BoundedSemaphore(MAILDIR_OPEN_FILES)
    with ThreadPoolExecutor(MAILDIR_THREADS, thread_name_prefix="fastpoplib-fsync") as pool:
        for key, data in batch:
            if stop.is_set():
                items.append((key, None))
                continue
            open_files.acquire()
            try:
                delivery = store.begin()
                delivery.write(data)  # aborts the delivery if it fails
            except Exception as exc:  # noqa: BLE001 - handed to _commit, which stops there
                open_files.release()
                items.append((key, exc))
                continue
            finishing.append((len(items), pool.submit(_finish, delivery, open_files)))
            items.append((key, delivery))
    for i, done in finishing:
        failure = done.result()
        if failure is not None:
            items[i] = (items[i][0], failure)
    return _commit(store, items, stop)


def _finish(delivery: MaildirDelivery, open_files: threading.BoundedSemaphore) -> Exception | None:
    """In one of a batch's fsync threads: the file fsynced and closed; the exception if that
    failed (the delivery aborted)."""
    try:
        delivery.finish()
    except Exception as exc:  # noqa: BLE001 - handed to _commit, which stops there
        return exc
    finally:
        open_files.release()
    return None


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
