"""asyncio behaviour that has no blocking twin: running inside a live loop (Jupyter),
cancellation, concurrent use of one connection, loops in several threads."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import warnings
from typing import Any, List

import pytest

import fastpoplib
from fastpoplib.testing import Fault

USER, PASSWORD = "user", "password"


async def _session(server: Any) -> int:
    async with fastpoplib.AsyncPOP3.connect(server.host, server.port, timeout=10) as pop:
        await pop.user(USER)
        await pop.pass_(PASSWORD)
        count, _ = await pop.stat()
        _, lines, _ = await pop.retr(count)
        assert lines
        return count


def test_inside_a_running_loop_like_jupyter(pop3_server: Any) -> None:
    """In a notebook the loop is already running: `await` works, and so does the blocking API."""

    async def cell() -> None:
        assert await _session(pop3_server) == 12
        with fastpoplib.POP3(pop3_server.host, pop3_server.port) as p:  # never calls asyncio.run
            p.user(USER)
            p.pass_(PASSWORD)
            assert p.stat()[0] == 12

    asyncio.run(cell())


def test_await_form_and_aclose(pop3_server: Any) -> None:
    async def main() -> None:
        pop = await fastpoplib.AsyncPOP3.connect(pop3_server.host, pop3_server.port)
        assert pop.getwelcome().startswith(b"+OK")
        await pop.aclose()
        await pop.aclose()
        with pytest.raises(fastpoplib.LocalProtocolError, match="closed"):
            await pop.noop()

    asyncio.run(main())
    assert pop3_server.wait_for_sessions_closed()


def test_cancellation_closes_the_connection(pop3_server: Any) -> None:
    pop3_server.add_fault(Fault.stall(10, on="RETR"))

    async def main() -> Any:
        pop = await fastpoplib.AsyncPOP3.connect(pop3_server.host, pop3_server.port)
        await pop.user(USER)
        await pop.pass_(PASSWORD)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(pop.retr(1), 0.3)
        # The reply was half-read at best: the connection must be closed, not reused.
        with pytest.raises(fastpoplib.POP3Error, match="cancelled"):
            await pop.noop()
        await pop.aclose()
        return pop

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        asyncio.run(main())
        gc.collect()
    session = pop3_server.sessions[-1]
    assert session.wait_closed(timeout=3), "the server never saw the connection close"


def test_task_cancel_inside_async_with(pop3_server: Any) -> None:
    pop3_server.add_fault(Fault.stall(10, on="STAT"))

    async def worker(started: asyncio.Event) -> None:
        async with fastpoplib.AsyncPOP3.connect(pop3_server.host, pop3_server.port) as pop:
            await pop.user(USER)
            await pop.pass_(PASSWORD)
            started.set()
            await pop.stat()

    async def main() -> None:
        started = asyncio.Event()
        task = asyncio.create_task(worker(started))
        await started.wait()
        # Cancel only once STAT is in flight (the server has it and stalls): poll, bounded.
        deadline = time.monotonic() + 5
        while b"STAT" not in pop3_server.sessions[-1].commands:
            assert time.monotonic() < deadline, "the server never received STAT"
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert pop3_server.sessions[-1].wait_closed(timeout=3)


def test_concurrent_calls_on_one_connection_are_rejected(pop3_server: Any) -> None:
    pop3_server.add_fault(Fault.stall(0.5, on="STAT"))

    async def main() -> List[Any]:
        async with fastpoplib.AsyncPOP3.connect(pop3_server.host, pop3_server.port) as pop:
            await pop.user(USER)
            await pop.pass_(PASSWORD)
            results = await asyncio.gather(pop.stat(), pop.noop(), return_exceptions=True)
            assert (await pop.stat())[0] == 12  # the stream was not corrupted
            return results

    first, second = asyncio.run(main())
    # Deterministically the second call is refused, at once, and the first completes.
    assert first == (12, sum(len(m) for m in pop3_server.mailbox.messages))
    assert isinstance(second, fastpoplib.LocalProtocolError) and "busy with another call" in str(second)


def test_separate_loops_in_threads(pop3_server_factory: Any) -> None:
    servers = [pop3_server_factory() for _ in range(3)]
    results: List[int] = []
    errors: List[BaseException] = []

    def run(server: Any) -> None:
        try:
            results.append(asyncio.run(_session(server)))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(s,)) for s in servers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors and results == [12, 12, 12]


def test_many_concurrent_sessions(pop3_server_factory: Any) -> None:
    srv = pop3_server_factory(allow_concurrent=True)

    async def main() -> List[int]:
        return list(await asyncio.gather(*(_session(srv) for _ in range(50))))

    assert asyncio.run(main()) == [12] * 50


def test_uvloop_if_installed(pop3_server: Any) -> None:
    uvloop = pytest.importorskip("uvloop", reason="uvloop is optional")
    assert uvloop.run(_session(pop3_server)) == 12


def test_thousand_concurrent_sessions_retrieve_intact_messages(pop3_server_factory: Any) -> None:
    """Load: 1,000 sessions at once on one loop, every message checked against the mailbox."""
    import hashlib

    srv = pop3_server_factory(allow_concurrent=True)
    want = {n: hashlib.sha256(m).hexdigest() for n, m in enumerate(srv.mailbox.messages, start=1)}

    async def one(i: int) -> int:
        numbers = [1 + (i + k) % 12 for k in range(3)]
        async with fastpoplib.AsyncPOP3.connect(srv.host, srv.port, timeout=60) as pop:
            await pop.user(USER)
            await pop.pass_(PASSWORD)
            checked = 0
            async for number, (_, lines, _) in pop.retr_many(numbers):
                assert hashlib.sha256(b"".join(line + b"\r\n" for line in lines)).hexdigest() == want[number]
                checked += 1
            return checked

    async def main() -> List[int]:
        return list(await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(1000))), 120))

    assert asyncio.run(main()) == [3] * 1000
