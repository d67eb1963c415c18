"""How a finished tokio operation reaches asyncio, per event loop: the bridge's two wake-up
paths side by side in one run.

- ``add_reader``: the default selector loop and uvloop watch the reactor's socket; the loop
  thread is woken by the kernel, and tokio threads never take the GIL;
- waker thread: loops without ``add_reader`` (ProactorEventLoop on Windows; here a selector
  loop with ``add_reader`` removed) get a thread that waits with the GIL released and calls
  ``call_soon_threadsafe``: one more GIL hand-over per wake-up, the cost a
  ``call_soon_threadsafe``-per-result design (pyo3-async-runtimes' ``future_into_py``, which
  does it from the tokio thread itself) pays on every loop.

Workloads against the shipped test server: sequential NOOPs on one connection (latency of a
round trip through the bridge), and NOOPs on 20 connections at once (wake-ups batched while
the loop is busy).

    python bench/bench_bridge.py [--runs 5] [--noops 2000]

Prints medians and ratios against the default loop. Not a test."""

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
from fastpoplib.testing import POP3TestServer  # noqa: E402


class NoReaderLoop(asyncio.SelectorEventLoop):
    def add_reader(self, *args: Any) -> None:
        raise NotImplementedError


def loops() -> Dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    found: Dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
        "selector (add_reader)": asyncio.new_event_loop,
        "no add_reader (waker thread)": NoReaderLoop,
    }
    try:
        import uvloop
    except ImportError:
        print("uvloop not installed: its row is skipped")
    else:
        found["uvloop (add_reader)"] = uvloop.new_event_loop
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


def run(factory: Callable[[], asyncio.AbstractEventLoop], coro: Any) -> float:
    loop = factory()
    try:
        return float(loop.run_until_complete(coro))
    finally:
        loop.close()


def main() -> None:
    require_release_build()
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--noops", type=int, default=2000)
    args = ap.parse_args()
    runs, noops = min(args.runs, 20), min(args.noops, 20000)
    kinds = loops()
    results: Dict[str, Dict[str, List[float]]] = {w: {k: [] for k in kinds} for w in ("sequential", "20 connections")}
    with POP3TestServer(allow_concurrent=True) as srv:
        for _ in range(runs):  # alternate the loops within each run
            for name, factory in kinds.items():
                results["sequential"][name].append(run(factory, sequential(srv, noops)))
                results["20 connections"][name].append(run(factory, concurrent(srv, noops)))
    print(f"{noops} NOOPs through the asyncio bridge, {runs} runs (median)")
    print(f"{'workload':<16}{'loop':<30}{'seconds':>9}{'us/NOOP':>9}{'vs selector':>13}")
    for workload, per_loop in results.items():
        base = statistics.median(per_loop["selector (add_reader)"])
        for name, values in per_loop.items():
            med = statistics.median(values)
            print(f"{workload:<16}{name:<30}{med:>9.3f}{med / noops * 1e6:>9.1f}{med / base:>12.2f}x")


if __name__ == "__main__":
    main()
