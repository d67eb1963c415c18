"""How a finished tokio operation reaches asyncio, side by side in one run: our reactor's
two wake-up paths, and pyo3-async-runtimes (the maintained successor of pyo3-asyncio).

- reactor, ``add_reader`` (selector loops, uvloop): the tokio thread queues the result and
  writes one byte to a socket the loop watches; it never takes the GIL, and one wake-up
  delivers every result finished meanwhile;
- reactor, waker thread (loops without ``add_reader``: ProactorEventLoop; here a selector
  loop with ``add_reader`` removed): a thread waiting with the GIL released calls
  ``call_soon_threadsafe`` once per batch of results;
- pyo3-async-runtimes ``future_into_py``: the tokio thread itself takes the GIL and calls
  ``call_soon_threadsafe`` for every result (rows only with ``--features bench-bridges``:
  ``maturin develop --release --features bench-bridges``).

Workloads: a no-op on tokio awaited 20,000 times in a row, and 20,000 at once (gather); then
NOOPs against the shipped test server, sequential on one connection and on 20 connections at
once (the reactor only: a real command's path).

    python bench/bench_bridge.py [--runs 5] [--noops 2000] [--ops 20000]

Prints medians and ratios against the reactor on the default loop. Not a test."""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

sys.path.insert(0, str(Path(__file__).parent))

import fastpoplib  # noqa: E402
from _guard import require_release_build  # noqa: E402
from fastpoplib import _bridge, _core  # noqa: E402
from fastpoplib.testing import POP3TestServer  # noqa: E402

HAVE_ASYNC_RUNTIMES = hasattr(_core, "bench_async_runtimes")


class NoReaderLoop(asyncio.SelectorEventLoop):
    def add_reader(self, *args: Any) -> None:
        raise NotImplementedError


def loops() -> Dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    found: Dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
        "selector": asyncio.new_event_loop,
        "without add_reader": NoReaderLoop,
    }
    try:
        import uvloop
    except ImportError:
        print("uvloop not installed: its row is skipped")
    else:
        found["uvloop"] = uvloop.new_event_loop
    return found


async def sequential(srv: POP3TestServer, noops: int) -> float:
    async with fastpoplib.AsyncPOP3.connect(srv.host, srv.port, 30) as pop:
        await pop.login("user", "password", allow_insecure=True)
        started = time.perf_counter()
        for _ in range(noops):
            await pop.noop()
        return time.perf_counter() - started


async def concurrent(srv: POP3TestServer, noops: int, clients: int = 20) -> float:
    async def one() -> None:
        async with fastpoplib.AsyncPOP3.connect(srv.host, srv.port, 30) as pop:
            await pop.login("user", "password", allow_insecure=True)
            for _ in range(noops // clients):
                await pop.noop()

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(clients)))
    return time.perf_counter() - started


async def reactor_in_a_row(ops: int) -> float:
    bridge = _bridge.current()
    started = time.perf_counter()
    for _ in range(ops):
        await bridge.call(_core.bench_reactor)
    return time.perf_counter() - started


async def reactor_at_once(ops: int) -> float:
    bridge = _bridge.current()
    started = time.perf_counter()
    await asyncio.gather(*(bridge.call(_core.bench_reactor) for _ in range(ops)))
    return time.perf_counter() - started


async def async_runtimes_in_a_row(ops: int) -> float:
    started = time.perf_counter()
    for _ in range(ops):
        await _core.bench_async_runtimes()
    return time.perf_counter() - started


async def async_runtimes_at_once(ops: int) -> float:
    started = time.perf_counter()
    await asyncio.gather(*(_core.bench_async_runtimes() for _ in range(ops)))
    return time.perf_counter() - started


def run(factory: Callable[[], asyncio.AbstractEventLoop], coro: Any) -> float:
    loop = factory()
    try:
        return float(loop.run_until_complete(coro))
    finally:
        loop.close()


def table(title: str, results: Dict[str, List[float]], count: int, base: str) -> None:
    print(title)
    print(f"{'':<52}{'seconds':>9}{'us/op':>8}{'ratio':>8}")
    reference = statistics.median(results[base])
    for name, values in results.items():
        med = statistics.median(values)
        print(f"{name:<52}{med:>9.3f}{med / count * 1e6:>8.1f}{med / reference:>7.2f}x")
    print()


def main() -> None:
    require_release_build()
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--noops", type=int, default=2000)
    ap.add_argument("--ops", type=int, default=20000)
    args = ap.parse_args()
    runs, noops, ops = min(args.runs, 20), min(args.noops, 20000), min(args.ops, 200000)
    kinds = loops()
    if not HAVE_ASYNC_RUNTIMES:
        print("built without --features bench-bridges: the pyo3-async-runtimes rows are skipped")
    no_op: Dict[str, Dict[str, List[float]]] = {"in a row": {}, "at once": {}}
    pop3: Dict[str, Dict[str, List[float]]] = {"sequential": {}, "20 connections": {}}
    with POP3TestServer(allow_concurrent=True) as srv:
        for _ in range(runs):  # alternate everything within each run
            for name, factory in kinds.items():
                for workload, reactor, theirs in (
                    ("in a row", reactor_in_a_row, async_runtimes_in_a_row),
                    ("at once", reactor_at_once, async_runtimes_at_once),
                ):
                    no_op[workload].setdefault(f"reactor, {name}", []).append(run(factory, reactor(ops)))
                    if HAVE_ASYNC_RUNTIMES:
                        no_op[workload].setdefault(f"pyo3-async-runtimes, {name}", []).append(run(factory, theirs(ops)))
                pop3["sequential"].setdefault(name, []).append(run(factory, sequential(srv, noops)))
                pop3["20 connections"].setdefault(name, []).append(run(factory, concurrent(srv, noops)))
    base = "reactor, selector"
    for workload, results in no_op.items():
        table(f"{ops} no-ops on tokio, awaited {workload} ({runs} runs, median)", results, ops, base)
    for workload, results in pop3.items():
        table(f"{noops} NOOPs against the test server, {workload} ({runs} runs, median)", results, noops, "selector")


if __name__ == "__main__":
    main()
