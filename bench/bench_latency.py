"""200 x ~4 KB messages through a loopback delay proxy (25 ms each way = 50 ms round trip):
the whole session (connect, login, list, retrieve all, quit) with stdlib poplib's retr() loop,
fastpoplib's poplib-compatible retr() loop, and fastpoplib's pipelined retr_many().

    python bench/bench_latency.py [--runs 3] [--delay-ms 25] [--messages 200]

Prints medians and ratios (same run, alternating clients). Not a test."""

from __future__ import annotations

import argparse
import poplib
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

sys.path.insert(0, str(Path(__file__).parent))

import fastpoplib  # noqa: E402
from _guard import require_release_build  # noqa: E402
from delay_proxy import DelayProxy  # noqa: E402
from fastpoplib.testing import POP3TestServer  # noqa: E402


def mailbox(n: int) -> List[bytes]:
    body = b"".join(b"line %04d of a 4 KB message body, padded to 64 bytes......\r\n" % i for i in range(62))
    return [b"Subject: message %d\r\n\r\n" % i + body for i in range(n)]


def with_retr(lib: Any, port: int) -> int:
    p = lib.POP3("127.0.0.1", port, timeout=30)
    p.user("user")
    p.pass_("password")
    _, listing, _ = p.list()
    p.uidl()
    total = sum(len(p.retr(int(line.split()[0]))[1]) for line in listing)
    p.quit()
    return total


def with_retr_many(port: int) -> int:
    with fastpoplib.POP3("127.0.0.1", port, timeout=30) as p:
        p.user("user")
        p.pass_("password")
        infos = p.messages()
        return sum(len(lines) for _, (_, lines, _) in p.retr_many(i.number for i in infos))


def main() -> None:
    require_release_build()
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--delay-ms", type=float, default=25.0)
    ap.add_argument("--messages", type=int, default=200)
    args = ap.parse_args()
    clients: Dict[str, Callable[[int], int]] = {
        "stdlib poplib retr()": lambda port: with_retr(poplib, port),
        "fastpoplib retr()": lambda port: with_retr(fastpoplib, port),
        "fastpoplib retr_many()": with_retr_many,
    }
    times: Dict[str, List[float]] = {name: [] for name in clients}
    with POP3TestServer(mailbox=mailbox(args.messages), stls=False, allow_concurrent=True) as srv:
        with DelayProxy(("127.0.0.1", srv.port), args.delay_ms / 1000) as proxy:
            rtt = 2 * args.delay_ms / 1000
            for _ in range(min(args.runs, 20)):
                for name, run in clients.items():
                    started = time.perf_counter()
                    assert run(proxy.port) == args.messages * 64
                    times[name].append(time.perf_counter() - started)
    base = statistics.median(times["stdlib poplib retr()"])
    print(f"{args.messages} x ~4 KB, RTT {rtt * 1000:.0f} ms, {args.runs} runs (median; whole session)")
    print(f"{'client':<26}{'seconds':>9}{'RTTs':>8}{'vs poplib':>11}")
    for name, values in times.items():
        med = statistics.median(values)
        print(f"{name:<26}{med:>9.3f}{med / rtt:>8.1f}{base / med:>10.1f}x")
    print("round-trip floor of a session (greeting, USER, PASS, CAPA, LIST+UIDL, RETRs, QUIT ~ 7 RTT): "
          f"{7 * rtt:.3f} s")


if __name__ == "__main__":
    main()
