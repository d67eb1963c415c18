"""fastpoplib against stdlib poplib on a real server (a private Dovecot on loopback), same run,
clients alternating, medians of N runs, ratios printed; writes a Markdown table (and a PNG
chart when matplotlib is installed).

    python bench/bench_dovecot.py [--runs 5] [--huge] [--out bench/results]

Rows: retrieval of 1,000 x 4 KB and 10 x 20 MB (plaintext and TLS) with poplib's retr(),
fastpoplib's retr(), and fastpoplib's fastest path (retr_many / retr_iter); LIST+UIDL of
20,000 messages (whole sessions, and the calls alone with their peak memory and the ratios
the project aims at); connect+login+quit; peak memory streaming one 20 MB (and with --huge a
500 MB) message; and a raw-socket reader as the physical ceiling. Needs root and Dovecot
(.ci/install-dovecot.sh). Not a test."""

from __future__ import annotations

import argparse
import json
import poplib
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

sys.path.insert(0, str(Path(__file__).parent))

import fastpoplib  # noqa: E402
from _guard import require_release_build  # noqa: E402
from fastpoplib.testing.dovecot import PASSWORD, Dovecot

MB = 1_000_000


def message(index: int, size: int) -> bytes:
    """A realistic-looking message of about `size` bytes: headers + 76-column base64-ish body."""
    head = (f"From: Sender {index} <s{index}@example.com>\r\nTo: me@example.com\r\n"
            f"Subject: benchmark message {index}\r\nMessage-ID: <{index}@bench>\r\n\r\n").encode()
    line = (b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0NTY3" * 2)[:76] + b"\r\n"
    return head + line * max(1, (size - len(head)) // len(line))


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def measure(fn: Callable[[], int]) -> Tuple[float, float, int]:
    wall, c = time.perf_counter(), cpu()
    nbytes = fn()
    return time.perf_counter() - wall, cpu() - c, nbytes


def open_client(lib: Any, dove: Dovecot, user: str, tls: bool) -> Any:
    if tls:
        return lib.POP3_SSL(dove.host, dove.tls_port, timeout=60, context=dove.ssl_context())
    return lib.POP3(dove.host, dove.plain_port, timeout=60)


def retr_loop(lib: Any, dove: Dovecot, user: str, tls: bool) -> int:
    p = open_client(lib, dove, user, tls)
    p.user(user)
    p.pass_(PASSWORD)
    count, _ = p.stat()
    total = sum(p.retr(n)[2] for n in range(1, count + 1))
    p.quit()
    return total


def fast_path(dove: Dovecot, user: str, tls: bool, large: bool) -> int:
    p = open_client(fastpoplib, dove, user, tls)
    p.user(user)
    p.pass_(PASSWORD)
    count, _ = p.stat()
    if large:
        total = sum(len(chunk) for n in range(1, count + 1) for chunk in p.retr_iter(n))
    else:
        total = sum(octets for _, (_, _, octets) in p.retr_many(range(1, count + 1)))
    p.quit()
    return total


def raw_reader(dove: Dovecot, user: str, tls: bool) -> int:
    """Physical ceiling: big recv()s, only the end-of-response marker is looked for."""
    sock: Any = socket.create_connection((dove.host, dove.tls_port if tls else dove.plain_port))
    if tls:
        sock = dove.ssl_context().wrap_socket(sock, server_hostname=dove.host)

    buf = bytearray()

    def until(marker: bytes) -> bytes:
        """Everything up to and including `marker` (searching only the new tail)."""
        nonlocal buf
        start = 0
        while (end := buf.find(marker, start)) < 0:
            start = max(0, len(buf) - len(marker))
            buf += sock.recv(1 << 20)
        out, buf = bytes(buf[: end + len(marker)]), buf[end + len(marker) :]
        return out

    until(b"\r\n")
    for command in (f"USER {user}", f"PASS {PASSWORD}"):
        sock.sendall(command.encode() + b"\r\n")
        until(b"\r\n")
    sock.sendall(b"STAT\r\n")
    count = int(until(b"\r\n").split()[1])
    total = 0
    for n in range(1, count + 1):
        sock.sendall(b"RETR %d\r\n" % n)
        total += len(until(b"\r\n.\r\n"))
    sock.sendall(b"QUIT\r\n")
    sock.close()
    return total


def list_uidl(lib: Any, dove: Dovecot, merged: bool = False) -> int:
    p = lib.POP3(dove.host, dove.plain_port, timeout=60)
    p.user("many")
    p.pass_(PASSWORD)
    if merged:
        n = len(p.messages())
    else:
        n = len(p.list()[1])
        p.uidl()
    p.quit()
    return n


# The listing alone, in a fresh process per run: wall time of the calls (Dovecot opens the
# mailbox at the first command after login, the same for every client, so a STAT comes
# first) and the peak RSS they add, with the result held as a caller holds it. `absolute` is
# the process's whole peak, each process importing only the library it measures.
LISTING_CHILD = """
import sys, time

def hwm_mib():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

case, host, port, pw = sys.argv[1:5]
if case == "poplib":
    import poplib as lib
else:
    import fastpoplib as lib
p = lib.POP3(host, int(port), timeout=120)
p.user("many"); p.pass_(pw); p.stat()
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
base = hwm_mib()
started = time.perf_counter()
result = p.messages() if case == "messages" else (p.list(), p.uidl())
wall = time.perf_counter() - started
print(wall, hwm_mib() - base, hwm_mib())
p.quit()
"""

LISTING_CASES = {"poplib list()+uidl()": "poplib", "fastpoplib list()+uidl()": "fast", "fastpoplib messages()": "messages"}


def listing(dove: Dovecot, runs: int) -> Dict[str, Dict[str, float]]:
    """Medians per case of (wall s, added peak MiB, absolute peak MiB), cases alternating."""
    got: Dict[str, List[List[float]]] = {case: [] for case in LISTING_CASES}
    for _ in range(runs):
        for case, arg in LISTING_CASES.items():
            out = subprocess.run([sys.executable, "-c", LISTING_CHILD, arg, dove.host, str(dove.plain_port), PASSWORD],
                                 capture_output=True, text=True, timeout=600, check=True)
            got[case].append([float(v) for v in out.stdout.split()])
    medians = {case: {key: statistics.median(v[i] for v in values) for i, key in enumerate(("wall", "added", "absolute"))}
               for case, values in got.items()}
    poplib_, ours, merged = (medians[case] for case in LISTING_CASES)
    print(f"\nLIST+UIDL of 20,000 messages, the calls alone ({runs} runs, medians)")
    for case, m in medians.items():
        print(f"  {case:<26} wall {m['wall']:.4f} s  peak added {m['added']:6.2f} MiB  process peak {m['absolute']:6.1f} MiB")
    print(f"  messages() wall / poplib list()+uidl():      {merged['wall'] / poplib_['wall']:.2f}x (target <= 0.8x)")
    print(f"  messages() wall / our list()+uidl():         {merged['wall'] / ours['wall']:.2f}x (target <= 1.0x)")
    print(f"  messages() peak added / poplib's:            {merged['added'] / poplib_['added']:.2f}x (target <= 1.5x)")
    print(f"  messages() process peak / poplib's:          {merged['absolute'] / poplib_['absolute']:.2f}x")
    return medians


def login_quit(lib: Any, dove: Dovecot) -> int:
    p = lib.POP3(dove.host, dove.plain_port, timeout=60)
    p.user("small")
    p.pass_(PASSWORD)
    p.quit()
    return 1


STREAM_CHILD = """
import sys, fastpoplib, poplib

def hwm_mib():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

lib, call, host, port, user, pw = sys.argv[1:7]
p = (fastpoplib if lib == "fast" else poplib).POP3(host, int(port), timeout=120)
p.user(user); p.pass_(pw)
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak-RSS mark: measure the retrieval alone
base = hwm_mib()
if call == "retr_to":
    with open("/dev/null", "wb") as f:
        p.retr_to(1, f)
else:
    result = p.retr(1)  # held while the peak is read, as a caller holds it
print(hwm_mib() - base)
p.quit()
"""


MEMORY_CASES = {"stdlib poplib retr()": ("stdlib", "retr"), "fastpoplib retr()": ("fast", "retr"), "fastpoplib retr_to()": ("fast", "retr_to")}


def peak_memory(dove: Dovecot, user: str, case: str) -> float:
    lib, call = MEMORY_CASES[case]
    out = subprocess.run([sys.executable, "-c", STREAM_CHILD, lib, call, dove.host, str(dove.plain_port), user, PASSWORD],
                         capture_output=True, text=True, timeout=600, check=True)
    return float(out.stdout.strip())


def main() -> None:
    require_release_build()
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--huge", action="store_true", help="also stream a 500 MB message")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    runs = max(1, min(args.runs, 20))
    root = Path(tempfile.mkdtemp(prefix="fastpoplib-bench-"))
    dove = Dovecot(root)
    dove.add_user("small", [message(i, 4096) for i in range(1000)])
    dove.add_user("large", [message(i, 20 * MB) for i in range(10)])
    dove.add_user("many", [message(i, 1100) for i in range(20000)])
    dove.add_user("one20", [message(0, 20 * MB)])
    if args.huge:
        dove.add_user("one500", [message(0, 500 * MB)])
    rows: List[Dict[str, Any]] = []
    try:
        with dove:
            for user, label, large in (("small", "1,000 x 4 KB", False), ("large", "10 x 20 MB", True)):
                for tls in (False, True):
                    cases = {
                        "poplib retr()": lambda: retr_loop(poplib, dove, user, tls),
                        "fastpoplib retr()": lambda: retr_loop(fastpoplib, dove, user, tls),
                        f"fastpoplib {'retr_iter' if large else 'retr_many'}()": lambda: fast_path(dove, user, tls, large),
                        "raw socket reader (ceiling)": lambda: raw_reader(dove, user, tls),
                    }
                    rows.append(run_cases(f"{label} {'TLS' if tls else 'plain'}", cases, runs))
            rows.append(run_cases("LIST+UIDL, 20,000 msgs", {
                "poplib list()+uidl()": lambda: list_uidl(poplib, dove),
                "fastpoplib list()+uidl()": lambda: list_uidl(fastpoplib, dove),
                "fastpoplib messages()": lambda: list_uidl(fastpoplib, dove, merged=True),
            }, runs))
            listed = listing(dove, runs)
            rows.append(run_cases("connect+login+quit", {
                "poplib": lambda: login_quit(poplib, dove),
                "fastpoplib": lambda: login_quit(fastpoplib, dove),
            }, runs * 4))
            memory = {"20 MB": {case: statistics.median(peak_memory(dove, "one20", case) for _ in range(3)) for case in MEMORY_CASES}}
            if args.huge:
                memory["500 MB"] = {"fastpoplib retr_to()": peak_memory(dove, "one500", "fastpoplib retr_to()")}
    finally:
        shutil.rmtree(root, ignore_errors=True)
    report(rows, memory, listed, runs, Path(args.out))


def run_cases(title: str, cases: Dict[str, Callable[[], int]], runs: int) -> Dict[str, Any]:
    results: Dict[str, List[Tuple[float, float, int]]] = {name: [] for name in cases}
    for _ in range(runs):
        for name, fn in cases.items():  # alternating clients in the same run
            results[name].append(measure(fn))
    summary = {}
    for name, values in results.items():
        summary[name] = {
            "wall": statistics.median(v[0] for v in values),
            "cpu": statistics.median(v[1] for v in values),
            "bytes": values[0][2],
        }
    print(f"\n{title} ({runs} runs, medians)")
    base = next(iter(summary.values()))
    for name, s in summary.items():
        print(f"  {name:<30} wall {s['wall']:8.3f} s  cpu {s['cpu']:8.3f} s  "
              f"wall x{base['wall'] / s['wall']:6.2f}  cpu x{base['cpu'] / max(s['cpu'], 1e-9):6.2f} vs first row")
    return {"title": title, "summary": summary}


def report(rows: List[Dict[str, Any]], memory: Dict[str, Dict[str, float]], listed: Dict[str, Dict[str, float]], runs: int, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    lines = [f"Medians of {runs} runs, clients alternating in the same run; ratios against the first row of each group.", "",
             "| case | client | wall s | client CPU s | wall ratio | CPU ratio |", "|---|---|---:|---:|---:|---:|"]
    for row in rows:
        base = next(iter(row["summary"].values()))
        for name, s in row["summary"].items():
            lines.append(f"| {row['title']} | {name} | {s['wall']:.3f} | {s['cpu']:.3f} | "
                         f"{base['wall'] / s['wall']:.2f}x | {base['cpu'] / max(s['cpu'], 1e-9):.2f}x |")
    lines += ["", "| peak memory while retrieving one message (median of 3) | " + " | ".join(MEMORY_CASES) + " |",
              "|---|" + "---:|" * len(MEMORY_CASES)]
    for size, m in memory.items():
        cells = [f"{m[case]:.1f} MiB" if case in m else "not run (holds the whole message)" for case in MEMORY_CASES]
        lines.append(f"| {size} | " + " | ".join(cells) + " |")
    first = next(iter(listed.values()))
    lines += ["", "| LIST+UIDL of 20,000 messages, the calls alone (median) | wall s | wall ratio | peak added | ratio | process peak |",
              "|---|---:|---:|---:|---:|---:|"]
    for case, m in listed.items():
        lines.append(f"| {case} | {m['wall']:.4f} | {m['wall'] / first['wall']:.2f}x | {m['added']:.2f} MiB | "
                     f"{m['added'] / first['added']:.2f}x | {m['absolute']:.1f} MiB |")
    text = "\n".join(lines) + "\n"
    (out / "dovecot.md").write_text(text)
    (out / "dovecot.json").write_text(json.dumps({"rows": rows, "memory": memory, "listing": listed}, indent=1))
    print("\n" + text)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no chart")
        return
    fig, ax = plt.subplots(figsize=(10, 0.45 * sum(len(r["summary"]) for r in rows) + 1))
    labels, values = [], []
    for row in rows:
        base = next(iter(row["summary"].values()))["wall"]
        for name, s in row["summary"].items():
            labels.append(f"{row['title']}: {name}")
            values.append(base / s["wall"])
    ax.barh(labels[::-1], values[::-1])
    ax.set_xlabel("speed relative to the first client of each group (higher is faster)")
    fig.tight_layout()
    fig.savefig(out / "dovecot.png", dpi=100)
    print(f"chart: {out / 'dovecot.png'}")


if __name__ == "__main__":
    main()
