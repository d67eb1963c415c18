"""Soak run: N connect/login/stat/quit cycles (sync and async) against the shipped test server
(`fastpoplib serve`, in its own process so that its session records do not count), reporting
this process's file descriptors, threads and peak RSS before and after. Growth means a leak.

    python bench/soak.py [--cycles 10000]

Bounded in count (--cycles, at most 100,000) and time (--max-seconds)."""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import re
import resource
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fastpoplib  # noqa: E402
from _guard import require_release_build  # noqa: E402


def snapshot() -> tuple:
    gc.collect()
    return (len(os.listdir("/proc/self/fd")), threading.active_count(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)


def main() -> None:
    require_release_build()
    ap = argparse.ArgumentParser()
    ap.add_argument("--cycles", type=int, default=10_000)
    ap.add_argument("--max-seconds", type=float, default=600)
    args = ap.parse_args()
    cycles = min(args.cycles, 100_000)
    server = subprocess.Popen([sys.executable, "-m", "fastpoplib", "serve", "--port", "0", "--seconds", str(args.max_seconds + 30)],
                              stdout=subprocess.PIPE, text=True)
    try:
        port = int(re.search(r":(\d+),", server.stdout.readline()).group(1))  # type: ignore[union-attr]
        run(port, cycles, args.max_seconds)
    finally:
        server.terminate()
        server.wait(10)


def run(port: int, cycles: int, max_seconds: float) -> None:
    host = "127.0.0.1"

    def sync_cycle() -> None:
        with fastpoplib.POP3(host, port, timeout=10) as p:
            p.user("user")
            p.pass_("password")
            p.stat()

    async def async_cycles(n: int, deadline: float) -> int:
        done = 0
        while done < n and time.monotonic() < deadline:
            async with fastpoplib.AsyncPOP3.connect(host, port, 10) as p:
                await p.user("user")
                await p.pass_("password")
                await p.stat()
            done += 1
        return done

    for name in ("sync", "async"):
        sync_cycle()
        asyncio.run(async_cycles(1, time.monotonic() + 10))  # warm-up
        before = snapshot()
        started = time.monotonic()
        deadline = started + max_seconds / 2
        if name == "sync":
            done = 0
            while done < cycles and time.monotonic() < deadline:
                sync_cycle()
                done += 1
        else:
            done = asyncio.run(async_cycles(cycles, deadline))
        after = snapshot()
        print(f"{name}: {done} cycles in {time.monotonic() - started:.1f} s; "
              f"fds {before[0]} -> {after[0]}, threads {before[1]} -> {after[1]}, peak RSS {before[2]} -> {after[2]} MiB")


if __name__ == "__main__":
    main()
