"""Many accounts at once, the helpdesk pattern: 200 accounts of 10 x 4 KB messages on the
shipped test server, behind a delay proxy (25 ms each way = 50 ms round trip), each fetched
once into its own Maildir by:

  fastpoplib fetch --config   --concurrency 50, and --concurrency 1 (one after another)
  mpop --all-accounts          (one account after another)            if `mpop` is installed
  getmail --rcfile ... x 200   (one account after another)            if --getmail BIN is given

    python bench/bench_accounts.py [--accounts 200] [--messages 10] [--delay-ms 25]
        [--runs 1] [--getmail /path/to/venv/bin/getmail]

Every client runs in a fresh subprocess with fresh Maildirs and state; wall time, peak RSS of
that process and its CPU time (GNU time), and the most connections open at the same moment (counted by the
server) are printed, with the median over --runs and the ratio to fastpoplib --concurrency 50.
Every run is checked: each Maildir must hold exactly its account's messages. Not a test."""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Tuple

sys.path.insert(0, str(Path(__file__).parent))

from _guard import require_release_build  # noqa: E402
from delay_proxy import DelayProxy  # noqa: E402
from fastpoplib.testing import POP3TestServer  # noqa: E402

PASSWORD = "password"


def message(account: int, i: int) -> bytes:
    head = f"From: a{account}@example.org\r\nSubject: message {i} of account {account}\r\n\r\n".encode()
    body = b"".join(b"line %04d of a 4 KB message body, padded to 64 bytes......\r\n" % n for n in range(62))
    return head + body


def maildir(path: Path) -> Path:
    for sub in ("tmp", "new", "cur"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    return path


def stored(path: Path) -> int:
    return sum(1 for sub in ("new", "cur") for _ in (path / sub).iterdir())


def fastpoplib_cmd(concurrency: int) -> Callable[[Path, int, int], Tuple[List[str], Dict[str, str]]]:
    def build(work: Path, port: int, accounts: int) -> Tuple[List[str], Dict[str, str]]:
        lines = ["[defaults]", "host = '127.0.0.1'", f"port = {port}", "tls = 'none'", "insecure = true"]
        lines += ["password_env = 'BENCH_PW'", "timeout = 60"]
        for a in range(accounts):
            lines += ["[[account]]", f"name = 'u{a}'", f"user = 'u{a}'", f"maildir = '{work / f'u{a}'}'"]
        (work / "fastpoplib.toml").write_text("\n".join(lines) + "\n")
        cmd = [sys.executable, "-m", "fastpoplib", "fetch", "--config", str(work / "fastpoplib.toml"), "-q"]
        return cmd + ["--concurrency", str(concurrency)], dict(os.environ, BENCH_PW=PASSWORD)

    return build


def mpop_cmd(work: Path, port: int, accounts: int) -> Tuple[List[str], Dict[str, str]]:
    lines = ["defaults", "host 127.0.0.1", f"port {port}", "tls off", "auth user", f"password {PASSWORD}"]
    lines += ["keep on", "only_new on", "pipelining auto", "timeout 60"]
    for a in range(accounts):
        lines += [f"account u{a}", f"user u{a}", f"delivery maildir {maildir(work / f'u{a}')}"]
        lines += [f"uidls_file {work / f'u{a}.uidls'}"]
    config = work / "mpoprc"
    config.write_text("\n".join(lines) + "\n")
    config.chmod(0o600)  # mpop refuses a password in a file others can read
    return ["mpop", "--quiet", "--all-accounts", f"--file={config}"], dict(os.environ)


def getmail_cmd(binary: str) -> Callable[[Path, int, int], Tuple[List[str], Dict[str, str]]]:
    def build(work: Path, port: int, accounts: int) -> Tuple[List[str], Dict[str, str]]:
        rcfiles = []
        for a in range(accounts):
            rc = work / f"getmailrc.u{a}"
            rc.write_text(
                "[retriever]\ntype = SimplePOP3Retriever\nserver = 127.0.0.1\n"
                f"port = {port}\nusername = u{a}\npassword = {PASSWORD}\n"
                f"[destination]\ntype = Maildir\npath = {maildir(work / f'u{a}')}/\n"
                "[options]\nread_all = false\ndelete = false\nverbose = 0\nmessage_log_syslog = false\n"
            )
            rcfiles += ["--rcfile", str(rc)]
        cmd = [binary, "--getmaildir", str(work), *rcfiles]
        if os.geteuid() == 0:  # getmail refuses to deliver as root: run it as nobody
            shutil.chown(work, "nobody", "nogroup")
            for path in work.rglob("*"):
                shutil.chown(path, "nobody", "nogroup")
            cmd = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *cmd]
        return cmd, dict(os.environ)

    return build


def run_once(
    name: str,
    build: Callable[[Path, int, int], Tuple[List[str], Dict[str, str]]],
    srv: POP3TestServer,
    port: int,
    accounts: int,
    messages: int,
) -> Tuple[float, float, float, int]:
    work = Path(tempfile.mkdtemp(prefix="bench-accounts-"))
    try:
        cmd, env = build(work, port, accounts)
        # GNU time measures the peak: a child of this process would report this process's
        # memory at fork as its own peak (Linux keeps the high-water mark across exec).
        cmd = ["/usr/bin/time", "-f", "%M %U %S", "-o", str(work / "usage"), *cmd]
        srv.peak_sessions = 0
        started = time.perf_counter()
        proc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
        wall = time.perf_counter() - started
        if proc.returncode != 0:
            sys.exit(f"{name} failed ({proc.returncode}): {proc.stderr.decode('utf-8', 'replace')[-2000:]}")
        wrong = [a for a in range(accounts) if stored(work / f"u{a}") != messages]
        if wrong:
            sys.exit(f"{name}: {len(wrong)} account(s) did not get exactly {messages} messages, e.g. u{wrong[0]}")
        maxrss_kb, user, system = (work / "usage").read_text().split()[-3:]
        return wall, int(maxrss_kb) / 1024, float(user) + float(system), srv.peak_sessions
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    require_release_build()
    ap = argparse.ArgumentParser()
    ap.add_argument("--accounts", type=int, default=200)
    ap.add_argument("--messages", type=int, default=10)
    ap.add_argument("--delay-ms", type=float, default=25.0, help="each way (default 25: a 50 ms round trip)")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--getmail", metavar="BIN", help="getmail6's getmail script (install it in its own venv)")
    args = ap.parse_args()

    clients: Dict[str, Callable[[Path, int, int], Tuple[List[str], Dict[str, str]]]] = {
        "fastpoplib fetch --concurrency 50": fastpoplib_cmd(50),
        "fastpoplib fetch --concurrency 1": fastpoplib_cmd(1),
    }
    if shutil.which("mpop"):
        clients["mpop --all-accounts"] = mpop_cmd
    else:
        print("mpop not found (apt-get install mpop): skipped")
    if args.getmail:
        clients["getmail6 (one rcfile per account)"] = getmail_cmd(args.getmail)
    else:
        print("getmail6 not given (--getmail BIN): skipped")

    users = {f"u{a}": PASSWORD for a in range(args.accounts)}
    boxes = {f"u{a}": [message(a, i) for i in range(args.messages)] for a in range(args.accounts)}
    results: Dict[str, List[Tuple[float, float, float, int]]] = {name: [] for name in clients}
    with POP3TestServer(users=users, mailboxes=boxes, stls=False, sasl=()) as srv:
        with DelayProxy(srv.address, args.delay_ms / 1000) as proxy:
            for _ in range(args.runs):
                for name, build in clients.items():  # alternating clients, run after run
                    results[name].append(run_once(name, build, srv, proxy.port, args.accounts, args.messages))

    rtt = 2 * args.delay_ms
    print(f"\n{args.accounts} accounts x {args.messages} x 4 KB, {rtt:g} ms round trip, medians of {args.runs} run(s)")
    print("| client | wall s | client CPU s | peak RSS MB | connections at once | wall vs concurrency 50 |")
    print("|---|---:|---:|---:|---:|---:|")
    base = statistics.median(r[0] for r in results["fastpoplib fetch --concurrency 50"])
    for name, runs in results.items():
        wall = statistics.median(r[0] for r in runs)
        rss = statistics.median(r[1] for r in runs)
        cpu = statistics.median(r[2] for r in runs)
        peak = max(r[3] for r in runs)
        print(f"| {name} | {wall:.2f} | {cpu:.2f} | {rss:.1f} | {peak} | {wall / base:.1f}x |")
    one = statistics.median(r[0] for r in results["fastpoplib fetch --concurrency 1"])
    print(f"\n--concurrency 50 is {one / base:.1f}x faster than --concurrency 1")


if __name__ == "__main__":
    main()
