"""The asyncio classes on any event loop: one without add_reader (as ProactorEventLoop on
Windows), uvloop, and a connection used from a loop that is not its own (a second
asyncio.run(), another thread's loop), which raises at once instead of hanging."""

from __future__ import annotations

import asyncio
import gc
import threading
from typing import Any, Callable, Iterator, List

import pytest

import fastpoplib

WAKER = "fastpoplib-asyncio-waker"


class NoReaderLoop(asyncio.SelectorEventLoop):
    """A loop without add_reader, as ProactorEventLoop is (its transports still work)."""

    def add_reader(self, *args: Any) -> None:
        raise NotImplementedError

    def remove_reader(self, *args: Any) -> bool:
        raise NotImplementedError


def uvloop_factory() -> Any:
    uvloop = pytest.importorskip("uvloop")
    return uvloop.new_event_loop()


LOOPS = {"no-add_reader": NoReaderLoop, "uvloop": uvloop_factory, "default": asyncio.new_event_loop}


def run(factory: Callable[[], asyncio.AbstractEventLoop], coro: Any) -> Any:
    loop = factory()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


async def open_client(srv: Any, path: str) -> Any:
    if path == "rustls":
        return await fastpoplib.AsyncPOP3_SSL.connect(srv.host, srv.port, 5, cafile=srv.cafile)
    return await fastpoplib.AsyncPOP3_SSL.connect(srv.host, srv.port, 5, context=srv.client_context())


async def scenario(srv: Any, path: str) -> None:
    """What a user does: log in, batch, stream, a cancelled call, a second connection."""
    pop = await open_client(srv, path)
    await pop.login("user", "password")
    count, _ = await pop.stat()
    got = [n async for n, _ in pop.retr_many(range(1, count + 1))]
    assert got == list(range(1, count + 1))
    chunks = [c async for c in pop.retr_iter(1, chunk_size=64)]
    assert b"".join(chunks) == await pop.retr_bytes(1)
    await pop.quit()
    srv.add_fault(fastpoplib.testing.Fault.stall(3, on="NOOP"))
    async with await open_client(srv, path) as again:
        await again.login("user", "password")
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(again.noop(), 0.2)


@pytest.fixture
def tls_server(pop3_server_factory: Any) -> Any:
    pytest.importorskip("trustme")
    return pop3_server_factory(tls="implicit")


def wakers() -> List[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == WAKER]


def all_end(started: List[threading.Thread]) -> bool:
    """Whether the waker threads started since ``started`` end once their loops are gone."""
    gc.collect()  # a loop in a reference cycle goes with the next collection
    for thread in wakers():
        if thread not in started:
            thread.join(5)
    return all(thread in started for thread in wakers())


@pytest.mark.parametrize("path", ["rustls", "context"])
@pytest.mark.parametrize("loop_kind", list(LOOPS))
def test_a_session_on_every_loop(loop_kind: str, path: str, tls_server: Any) -> None:
    before = wakers()
    run(LOOPS[loop_kind], asyncio.wait_for(scenario(tls_server, path), 30))
    assert all_end(before)  # a waker thread (loops without add_reader) ends with its loop


def test_waker_threads_do_not_pile_up(pop3_server: Any) -> None:
    async def one() -> None:
        async with fastpoplib.AsyncPOP3.connect(pop3_server.host, pop3_server.port, 5) as pop:
            await pop.capa()

    before = wakers()
    for _ in range(5):
        run(NoReaderLoop, one())
    assert all_end(before)


async def opened(connecting: Any) -> Any:
    return await connecting


@pytest.fixture(params=["plain", "context"])
def opened_elsewhere(request: Any, pop3_server_factory: Any) -> Iterator[Callable[[], Any]]:
    """A function opening a connection on the calling thread's running loop."""
    if request.param == "plain":
        srv = pop3_server_factory()
        yield lambda: opened(fastpoplib.AsyncPOP3.connect(srv.host, srv.port, 2))
    else:
        pytest.importorskip("trustme")
        srv = pop3_server_factory(tls="implicit")
        yield lambda: opened(fastpoplib.AsyncPOP3_SSL.connect(srv.host, srv.port, 2, context=srv.client_context()))


def test_second_asyncio_run_raises_at_once(opened_elsewhere: Callable[[], Any]) -> None:
    pop = asyncio.run(opened_elsewhere())

    async def reuse() -> None:
        with pytest.raises(fastpoplib.LocalProtocolError, match="event loop"):
            await asyncio.wait_for(pop.capa(), 5)  # a hang would be a TimeoutError here
        await asyncio.wait_for(pop.aclose(), 5)  # closing from elsewhere does not wait

    asyncio.run(reuse())


def test_another_threads_loop_raises_at_once(opened_elsewhere: Callable[[], Any]) -> None:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        pop = asyncio.run_coroutine_threadsafe(opened_elsewhere(), loop).result(10)

        async def reuse() -> None:
            with pytest.raises(fastpoplib.LocalProtocolError, match="another thread's loop"):
                await asyncio.wait_for(pop.capa(), 5)

        asyncio.run(reuse())
        # Its own loop still serves it.
        assert asyncio.run_coroutine_threadsafe(pop.capa(), loop).result(10)
        asyncio.run_coroutine_threadsafe(pop.quit(), loop).result(10)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.mark.parametrize("path", ["plain", "context"])
def test_aclose_from_another_loop_closes_the_connection(path: str, pop3_server_factory: Any) -> None:
    """aclose() from a loop that is not the connection's closes it at once (its own loop, in
    another thread, aborts the stream): the server sees the connection end."""
    if path == "context":
        pytest.importorskip("trustme")
        srv = pop3_server_factory(tls="implicit")
        connecting = fastpoplib.AsyncPOP3_SSL.connect(srv.host, srv.port, 2, context=srv.client_context())
    else:
        srv = pop3_server_factory()
        connecting = fastpoplib.AsyncPOP3.connect(srv.host, srv.port, 2)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        pop = asyncio.run_coroutine_threadsafe(opened(connecting), loop).result(10)
        asyncio.run(asyncio.wait_for(pop.aclose(), 5))
        assert srv.wait_for_sessions(1)[0].wait_closed(5)
        assert srv.sessions[0].quit_received is False
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
