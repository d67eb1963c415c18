"""A caller's ssl.SSLContext (Python's ssl moves the bytes, the Rust session frames them)
against fastpoplib's own TLS (rustls, `cafile=`) and stdlib poplib with the same context, on
a private Dovecot over implicit TLS; same run, clients alternating, medians, ratios printed.

    python bench/bench_context.py [--runs 5]

Rows: retr() loop, retr_many() and retr_to() over 1,000 x 4 KB and 10 x 20 MB. The target:
with a context at most 15 % slower than rustls, and faster than poplib in every row. Needs
root and Dovecot (.ci/install-dovecot.sh). Not a test."""

from __future__ import annotations

import argparse
import poplib
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict

sys.path.insert(0, str(Path(__file__).parent))

import fastpoplib  # noqa: E402
from _guard import require_release_build  # noqa: E402
from bench_dovecot import MB, message, run_cases  # noqa: E402
from fastpoplib.testing.dovecot import PASSWORD, Dovecot  # noqa: E402


def client(dove: Dovecot, how: str) -> Any:
    if how == "poplib":
        return poplib.POP3_SSL(dove.host, dove.tls_port, timeout=60, context=dove.ssl_context())
    if how == "context":
        return fastpoplib.POP3_SSL(dove.host, dove.tls_port, timeout=60, context=dove.ssl_context())
    return fastpoplib.POP3_SSL(dove.host, dove.tls_port, timeout=60, cafile=dove.cafile)


def session(dove: Dovecot, how: str, user: str, call: str) -> int:
    p = client(dove, how)
    p.user(user)
    p.pass_(PASSWORD)
    count = p.stat()[0]
    numbers = range(1, count + 1)
    if call == "retr":
        total = sum(p.retr(n)[2] for n in numbers)
    elif call == "retr_many":
        total = sum(octets for _, (_, _, octets) in p.retr_many(numbers))
    else:
        with open("/dev/null", "wb") as sink:
            total = sum(p.retr_to(n, sink) for n in numbers)
    p.quit()
    return total


def main() -> None:
    require_release_build()
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    runs = max(1, min(args.runs, 20))
    root = Path(tempfile.mkdtemp(prefix="fastpoplib-bench-"))
    dove = Dovecot(root)
    dove.add_user("small", [message(i, 4096) for i in range(1000)])
    dove.add_user("large", [message(i, 20 * MB) for i in range(10)])
    ratios = []
    try:
        with dove:
            for user, label in (("small", "1,000 x 4 KB"), ("large", "10 x 20 MB")):
                for call in ("retr", "retr_many", "retr_to"):
                    cases: Dict[str, Callable[[], int]] = {
                        "rustls (cafile=)": lambda: session(dove, "rustls", user, call),
                        "context= (Python ssl)": lambda: session(dove, "context", user, call),
                    }
                    if call == "retr":
                        cases["stdlib poplib retr(), context="] = lambda: session(dove, "poplib", user, call)
                    row = run_cases(f"{label} TLS, {call}()", cases, runs)
                    walls = [s["wall"] for s in row["summary"].values()]
                    ratios.append((row["title"], walls[1] / walls[0], walls[2] / walls[1] if len(walls) > 2 else None))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print("\n| case | context= / rustls wall | poplib / context= wall |\n|---|---:|---:|")
    for title, slower, vs_poplib in ratios:
        print(f"| {title} | {slower:.2f} | {'' if vs_poplib is None else f'{vs_poplib:.2f}x'} |")


if __name__ == "__main__":
    main()
