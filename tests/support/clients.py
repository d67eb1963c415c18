"""Opening the same scenario on every client: stdlib poplib, fastpoplib's blocking POP3, and
fastpoplib's AsyncPOP3 behind a small adapter that runs each coroutine to completion. Scenarios
are written once, in blocking style, and run on all three."""

from __future__ import annotations

import asyncio
import poplib
from typing import Any

import fastpoplib

KINDS = ("stdlib", "sync", "async")
FAST_KINDS = ("sync", "async")


class AsyncAdapter:
    """Presents an AsyncPOP3 with blocking methods, each call awaited on a private loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, client: fastpoplib.AsyncPOP3) -> None:
        self._loop = loop
        self.client = client

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.client, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            result = attr(*args, **kwargs)
            if asyncio.iscoroutine(result):
                return self._loop.run_until_complete(result)
            return result

        return call

    def _finish(self, coro: Any) -> Any:
        try:
            return self._loop.run_until_complete(coro)
        finally:
            self._loop.close()

    def close(self) -> None:
        if not self._loop.is_closed():
            self._finish(self.client.aclose())

    def quit(self) -> bytes:
        return self._finish(self.client.quit())


def lib_for(kind: str) -> Any:
    return poplib if kind == "stdlib" else fastpoplib


def connect(kind: str, host: str, port: int, *, tls: bool = False, context: Any = None, timeout: float = 10, **kw: Any) -> Any:
    """A connected client of `kind`; with `tls`, implicit TLS verified with `context`."""
    if kind == "stdlib":
        return poplib.POP3_SSL(host, port, timeout=timeout, context=context) if tls else poplib.POP3(host, port, timeout=timeout)
    if kind == "sync":
        if tls:
            return fastpoplib.POP3_SSL(host, port, timeout=timeout, context=context, **kw)
        return fastpoplib.POP3(host, port, timeout=timeout, **kw)
    loop = asyncio.new_event_loop()
    cls = fastpoplib.AsyncPOP3_SSL if tls else fastpoplib.AsyncPOP3
    extra = dict(kw, context=context) if tls else kw
    try:
        client = loop.run_until_complete(cls.connect(host, port, timeout, **extra))
    except BaseException:
        loop.close()
        raise
    return AsyncAdapter(loop, client)


def logged_in(kind: str, host: str, port: int, user: str = "user", password: str = "password", **kw: Any) -> Any:
    """A client of `kind`, logged in with USER/PASS."""
    p = connect(kind, host, port, **kw)
    p.user(user)
    p.pass_(password)
    return p


def iterate(kind: str, client: Any, batch: Any) -> Any:
    """Items of a batch call (`retr_many`...), lazily, from either client."""
    if kind != "async":
        yield from batch
        return
    while True:
        try:
            yield client._loop.run_until_complete(batch.__anext__())
        except StopAsyncIteration:
            return


def outcome(fn: Any, *args: Any) -> Any:
    """A call's result, or `(exception class name chain, args)` so errors compare too."""
    try:
        return ("ok", fn(*args))
    except poplib.error_proto as exc:
        return ("error_proto", exc.args)
