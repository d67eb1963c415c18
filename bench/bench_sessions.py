"""1,000 concurrent POP3 sessions in one process: fastpoplib.AsyncPOP3 on one event loop
against stdlib poplib in a thread pool. Each session logs in, lists, retrieves 3 messages
and quits. The server (`fastpoplib serve`) runs in its own process; each client runs in a
fresh subprocess so its peak memory and thread count are its own.

    python bench/bench_sessions.py [--sessions 1000] [--pool 100]

Not a test: prints wall time, messages/s, peak RSS and threads, and the ratios."""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _guard import require_release_build  # noqa: E402

PER_SESSION = 3


def _threads() -> int:
    return len(os.listdir("/proc/self/task"))


class Peak:
    """Samples the process's thread count while the load runs."""

    def __init__(self) -> None:
        self.threads = _threads()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self.threads = max(self.threads, _threads())

    def __enter__(self) -> "Peak":
        self._t.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._t.join()


def run_fast(port: int, sessions: int) -> int:
    import asyncio

    import fastpoplib

    async def one() -> int:
        async with fastpoplib.AsyncPOP3.connect("127.0.0.1", port, 60) as p:
            await p.user("user")
            await p.pass_("password")
            await p.list()
            return sum([1 async for _ in p.retr_many(range(1, PER_SESSION + 1))])

    async def all_sessions() -> int:
        return sum(await asyncio.gather(*(one() for _ in range(sessions))))

    return asyncio.run(all_sessions())


def run_stdlib(port: int, sessions: int, pool: int) -> int:
    import poplib

    def one(_: int) -> int:
        p = poplib.POP3("127.0.0.1", port, timeout=60)
        p.user("user")
        p.pass_("password")
        p.list()
        for n in range(1, PER_SESSION + 1):
            p.retr(n)
        p.quit()
        return PER_SESSION

    with ThreadPoolExecutor(pool) as ex:
        return sum(ex.map(one, range(sessions)))


def child(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    with Peak() as peak:
        if args.child == "fast":
            got = run_fast(args.port, args.sessions)
        else:
            got = run_stdlib(args.port, args.sessions, args.pool)
    wall = time.perf_counter() - started
    assert got == args.sessions * PER_SESSION
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"wall": wall, "messages": got, "rss_mb": rss_mb, "threads": peak.threads}))


def main() -> None:
    require_release_build()
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", type=int, default=1000)
    ap.add_argument("--pool", type=int, default=100, help="poplib thread-pool size")
    ap.add_argument("--child", choices=["fast", "stdlib"])
    ap.add_argument("--port", type=int)
    args = ap.parse_args()
    args.sessions = min(args.sessions, 5000)
    if args.child:
        return child(args)
    server = subprocess.Popen([sys.executable, "-m", "fastpoplib", "serve", "--port", "0", "--seconds", "600"], stdout=subprocess.PIPE, text=True)
    try:
        port = int(re.search(r":(\d+),", server.stdout.readline()).group(1))
        results: Dict[str, Dict[str, float]] = {}
        for name in ("stdlib", "fast"):
            cmd = [sys.executable, __file__, "--child", name, "--port", str(port), "--sessions", str(args.sessions), "--pool", str(args.pool)]
            results[name] = json.loads(subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=True).stdout)
    finally:
        server.terminate()
        server.wait(10)
    print(f"{args.sessions} sessions x (login, LIST, {PER_SESSION} RETR, QUIT) against `fastpoplib serve`")
    print(f"{'client':<34}{'wall s':>8}{'msg/s':>9}{'peak RSS MB':>13}{'threads':>9}")
    labels = {"stdlib": f"stdlib poplib, {args.pool}-thread pool", "fast": "fastpoplib AsyncPOP3, one loop"}
    for name, r in results.items():
        print(f"{labels[name]:<34}{r['wall']:>8.2f}{r['messages'] / r['wall']:>9.0f}{r['rss_mb']:>13.1f}{r['threads']:>9}")
    s, f = results["stdlib"], results["fast"]
    print(f"ratios fastpoplib/poplib: wall {f['wall'] / s['wall']:.2f}, memory {f['rss_mb'] / s['rss_mb']:.2f}, threads {f['threads']}/{s['threads']}")


if __name__ == "__main__":
    main()
