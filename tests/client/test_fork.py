"""os.fork() with a connection open: a child that drops what it inherited (close(), the end
of a ``with`` block, aclose(), garbage collection) never writes to, shuts down or QUITs the
parent's connection; it only closes its copy of the descriptor. The parent goes on using it,
and the child is told plainly if it tries to use it."""

from __future__ import annotations

import asyncio
import gc
import os
from typing import Any, Callable, Dict

import pytest

import fastpoplib
from support.processes import wait_child

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

# Child exit codes.
OK, USED, WRONG = 0, 3, 4


def in_child(action: Callable[[], None]) -> int:
    """Runs ``action`` in a forked child; its exit status."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = WRONG
        try:
            action()
            code = OK
        except fastpoplib.ConnectionClosedError as exc:
            code = USED if "os.fork()" in str(exc) else WRONG
        finally:
            os._exit(code)
    return wait_child(pid, 20)


def sync_client(path: str, srv: Any) -> Any:
    if path == "plain":
        return fastpoplib.POP3(srv.host, srv.port, timeout=5)
    if path == "rustls":
        return fastpoplib.POP3_SSL(srv.host, srv.port, timeout=5, cafile=srv.cafile)
    return fastpoplib.POP3_SSL(srv.host, srv.port, timeout=5, context=srv.client_context())


def server(path: str, factory: Any) -> Any:
    if path == "plain":
        return factory()
    pytest.importorskip("trustme")
    return factory(tls="implicit")


def parent_goes_on(pop: Any, srv: Any, before: int) -> None:
    """The parent's session is intact: the server saw nothing from the child."""
    assert pop.stat()[0] == 12
    assert pop.retr(1)[1]
    assert [c.split()[0].upper() for c in srv.sessions[0].commands[before:]] == [b"STAT", b"RETR"]
    pop.quit()


SYNC_DROPS: Dict[str, Callable[[Any], None]] = {
    "close": lambda holder: holder["pop"].close(),
    "with-exit": lambda holder: holder["pop"].__exit__(None, None, None),
    "gc": lambda holder: (holder.clear(), gc.collect()) and None,
}


@pytest.mark.parametrize("drop", list(SYNC_DROPS))
@pytest.mark.parametrize("path", ["plain", "rustls", "context"])
def test_child_dropping_a_blocking_connection(path: str, drop: str, pop3_server_factory: Any) -> None:
    srv = server(path, pop3_server_factory)
    holder = {"pop": sync_client(path, srv)}
    pop = holder["pop"]
    pop.user("user")
    pop.pass_("password")
    before = len(srv.sessions[0].commands)
    del pop
    assert in_child(lambda: SYNC_DROPS[drop](holder)) == OK
    parent_goes_on(holder["pop"], srv, before)


@pytest.mark.parametrize("path", ["plain", "rustls", "context"])
def test_child_using_a_blocking_connection_is_refused(path: str, pop3_server_factory: Any) -> None:
    srv = server(path, pop3_server_factory)
    pop = sync_client(path, srv)
    pop.user("user")
    pop.pass_("password")
    before = len(srv.sessions[0].commands)
    assert in_child(lambda: pop.quit() and None) == USED
    parent_goes_on(pop, srv, before)


async def async_client(path: str, srv: Any) -> Any:
    if path == "plain":
        return await fastpoplib.AsyncPOP3.connect(srv.host, srv.port, 5)
    if path == "rustls":
        return await fastpoplib.AsyncPOP3_SSL.connect(srv.host, srv.port, 5, cafile=srv.cafile)
    return await fastpoplib.AsyncPOP3_SSL.connect(srv.host, srv.port, 5, context=srv.client_context())


ASYNC_DROPS: Dict[str, Callable[[Any], None]] = {
    "aclose": lambda holder: asyncio.run(holder["pop"].aclose()),
    "gc": lambda holder: (holder.clear(), gc.collect()) and None,
}


@pytest.mark.parametrize("drop", list(ASYNC_DROPS))
@pytest.mark.parametrize("path", ["plain", "rustls", "context"])
def test_child_dropping_an_asyncio_connection(path: str, drop: str, pop3_server_factory: Any) -> None:
    srv = server(path, pop3_server_factory)

    async def main() -> None:
        holder = {"pop": await async_client(path, srv)}
        await holder["pop"].login("user", "password", allow_insecure=True)
        before = len(srv.sessions[0].commands)
        assert in_child(lambda: ASYNC_DROPS[drop](holder)) == OK
        pop = holder["pop"]
        assert (await pop.stat())[0] == 12
        assert (await pop.retr(1))[1]
        assert [c.split()[0].upper() for c in srv.sessions[0].commands[before:]] == [b"STAT", b"RETR"]
        await pop.quit()

    asyncio.run(asyncio.wait_for(main(), 30))


class NoReaderLoop(asyncio.SelectorEventLoop):
    """A loop without add_reader (as ProactorEventLoop): the bridge wakes it from a thread."""

    def add_reader(self, *args: Any) -> None:
        raise NotImplementedError


def test_child_opens_its_own_connections_on_any_loop(pop3_server: Any) -> None:
    """The child has none of the parent's tokio threads or waker threads: its new loops and
    connections get their own."""

    async def session() -> int:
        async with fastpoplib.AsyncPOP3.connect(pop3_server.host, pop3_server.port, 5) as pop:
            await pop.login("user", "password", allow_insecure=True)
            return (await pop.stat())[0]

    def on_every_loop() -> None:
        for factory in (NoReaderLoop, asyncio.new_event_loop):
            loop = factory()
            try:
                assert loop.run_until_complete(asyncio.wait_for(session(), 10)) == 12
            finally:
                loop.close()

    on_every_loop()  # the parent has a runtime, bridges and a waker thread before forking
    assert in_child(on_every_loop) == OK
    on_every_loop()
