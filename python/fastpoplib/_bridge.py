"""asyncio's side of the Rust reactor: one per event loop.

Operations run on tokio threads; when one finishes, the Rust side queues its result and
wakes this loop through a socket registered with ``add_reader``. ``_drain`` then resolves the
futures on the loop's own thread. Cancelling a future aborts its tokio task.
"""

from __future__ import annotations

import asyncio
import itertools
import weakref
from functools import partial
from typing import Any, Callable, Dict

from . import _core


class Bridge:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # No reference to the loop here: the loop is the key of a WeakKeyDictionary whose
        # value this is, and a strong reference back would keep both alive forever.
        self._reactor = _core.Reactor()
        self._futures: Dict[int, asyncio.Future] = {}
        self._ids = itertools.count()
        loop.add_reader(self._reactor.fileno(), self._drain)

    def call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> "asyncio.Future[Any]":
        """Starts ``method(reactor, id, *args, **kwargs)``; a future for its result."""
        future = asyncio.get_running_loop().create_future()
        op_id = next(self._ids)
        pending = method(self._reactor, op_id, *args, **kwargs)
        self._futures[op_id] = future
        future.add_done_callback(partial(self._settled, op_id, pending))
        return future

    def _settled(self, op_id: int, pending: Any, future: "asyncio.Future[Any]") -> None:
        if future.cancelled():
            self._futures.pop(op_id, None)
            pending.abort()

    def _drain(self) -> None:
        for op_id, ok, value in self._reactor.drain():
            future = self._futures.pop(op_id, None)
            if future is None or future.done():
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)


_bridges: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Bridge]" = weakref.WeakKeyDictionary()


def current() -> Bridge:
    """The bridge of the running event loop (made on first use)."""
    loop = asyncio.get_running_loop()
    bridge = _bridges.get(loop)
    if bridge is None:
        bridge = _bridges[loop] = Bridge(loop)
    return bridge
