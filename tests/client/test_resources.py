"""Resource hygiene: repeated sessions leave no descriptors, threads or memory behind, and a
connection dropped without close() is closed by garbage collection."""

from __future__ import annotations

import asyncio
import gc
import os
import resource
import threading
import time
from typing import Any

import fastpoplib

CYCLES = 1000  # each a full connect/login/stat/quit; the soak run in bench/ does 10,000


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_sync_cycles_leak_nothing(pop3_server_factory: Any) -> None:
    # Sessions overlap briefly: the server releases a maildrop after our QUIT reply.
    pop3_server = pop3_server_factory(allow_concurrent=True)
    def cycle() -> None:
        with fastpoplib.POP3(pop3_server.host, pop3_server.port, timeout=10) as p:
            p.user("user")
            p.pass_("password")
            p.stat()

    for _ in range(50):  # warm-up: lazy imports, caches
        cycle()
    gc.collect()
    fds, threads = open_fds(), threading.active_count()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    deadline = time.monotonic() + 120
    for _ in range(CYCLES):
        cycle()
        assert time.monotonic() < deadline
    pop3_server.wait_for_sessions_closed()
    gc.collect()
    assert open_fds() <= fds  # no growth (earlier tests' leftovers may close meanwhile)
    assert threading.active_count() <= threads
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss < 20_000  # KiB


def test_async_cycles_leak_nothing(pop3_server_factory: Any) -> None:
    pop3_server = pop3_server_factory(allow_concurrent=True)
    async def cycle() -> None:
        async with fastpoplib.AsyncPOP3.connect(pop3_server.host, pop3_server.port, 10) as p:
            await p.user("user")
            await p.pass_("password")
            await p.stat()

    async def many(n: int) -> None:
        for _ in range(n):
            await cycle()

    asyncio.run(many(50))
    gc.collect()
    fds = open_fds()
    asyncio.run(many(CYCLES))
    gc.collect()
    pop3_server.wait_for_sessions_closed()
    assert open_fds() <= fds


def test_garbage_collected_connection_closes_its_socket(pop3_server: Any) -> None:
    gc.collect()
    fds = open_fds()
    p = fastpoplib.POP3(pop3_server.host, pop3_server.port)
    p.user("user")
    assert open_fds() > fds
    del p
    gc.collect()
    assert pop3_server.sessions[-1].wait_closed(timeout=5), "the server never saw the socket close"
    assert open_fds() <= fds  # our socket and the server's are both gone
