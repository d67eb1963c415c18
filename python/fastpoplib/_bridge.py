"""asyncio's side of the Rust reactor: one per event loop.

Operations run on tokio threads; when one finishes, the Rust side queues its result and
wakes this loop: through a socket registered with ``add_reader`` where the loop has it
(selector loops, uvloop), else through a thread that waits in ``Reactor.wait`` with the GIL
released and calls ``call_soon_threadsafe`` (ProactorEventLoop and other loops without
``add_reader``). ``_drain`` then resolves the futures on the loop's own thread. Cancelling a
future aborts its tokio task. A connection belongs to the loop it was opened on: a call from
another loop raises at once instead of waiting for a wake-up that would never come.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import threading
import weakref
from functools import partial
from typing import Any, Callable, Dict

from . import _core
from .exceptions import LocalProtocolError


class Bridge:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # Only a weak reference to the loop: the loop is the key of a WeakKeyDictionary whose
        # value this is, and a strong reference back would keep both alive forever.
        self._loop = weakref.ref(loop)
        self._reactor = _core.Reactor()
        self._futures: "Dict[int, asyncio.Future[Any]]" = {}
        self._ids = itertools.count()
        try:
            loop.add_reader(self._reactor.fileno(), self._drain)
        except NotImplementedError:
            weakref.finalize(loop, self._reactor.close)
            threading.Thread(
                target=_wake, args=(self._reactor, weakref.ref(self), self._loop), name="fastpoplib-asyncio-waker", daemon=True
            ).start()

    @property
    def loop(self) -> "asyncio.AbstractEventLoop | None":
        """This bridge's event loop, or None once it is gone."""
        return self._loop()

    def owns_running_loop(self) -> bool:
        """Whether the running event loop (if any) is this bridge's."""
        try:
            return asyncio.get_running_loop() is self._loop()
        except RuntimeError:
            return False

    def check(self) -> None:
        """Raises LocalProtocolError unless called from this bridge's event loop."""
        if not self.owns_running_loop():
            raise LocalProtocolError(
                "this connection belongs to the event loop it was opened on, which is not the running one "
                "(a second asyncio.run(), or another thread's loop); open a new connection in this loop"
            )

    def call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> "asyncio.Future[Any]":
        """Starts ``method(reactor, id, *args, **kwargs)``; a future for its result."""
        self.check()
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


def _wake(reactor: Any, bridge: "weakref.ref[Bridge]", loop: "weakref.ref[asyncio.AbstractEventLoop]") -> None:
    """The waker thread of a loop without ``add_reader``: ends with its loop."""
    while reactor.wait():
        alive, target = loop(), bridge()
        if alive is None or target is None:
            return
        try:
            alive.call_soon_threadsafe(target._drain)
        except RuntimeError:  # the loop is closed
            return
        del alive, target


_bridges: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Bridge]" = weakref.WeakKeyDictionary()

if hasattr(os, "register_at_fork"):
    # A forked child has none of the parent's waker threads or tokio tasks: its loops get
    # new bridges.
    os.register_at_fork(after_in_child=_bridges.clear)


def current() -> Bridge:
    """The bridge of the running event loop (made on first use)."""
    loop = asyncio.get_running_loop()
    bridge = _bridges.get(loop)
    if bridge is None:
        bridge = _bridges[loop] = Bridge(loop)
    return bridge
