"""`fastpoplib fetch` side by side with mpop and getmail6: each tool, as a person runs it (its
own process, start-up included), fetches the same private Dovecot mailbox of 1,000 x 4 KB over
implicit TLS into a fresh Maildir, keeping the messages on the server, then with deletion. Runs
alternate between the tools; medians and ratios to mpop are printed, and a Markdown table is
written.

    python bench/bench_fetch_tools.py [--runs 5] [--messages 1000] [--out bench/results]

Every tool runs with its default durability: fastpoplib fsyncs each message, its directory and
its state before any DELE; getmail6 fsyncs each message and its oldmail file; mpop (1.4)
fsyncs each message file. `--strace` counts the fsync/fdatasync calls each tool makes, to
check that. After each run the Maildir must hold every message (and, with deletion, the server
none). Needs root, Dovecot (.ci/install-dovecot.sh), `apt-get install mpop` and getmail6 in
its own venv (`python -m venv .venv-getmail && .venv-getmail/bin/pip install getmail6`; or
--getmail PATH). Not a test."""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List

sys.path.insert(0, str(Path(__file__).parent))

from _guard import require_release_build  # noqa: E402
from fastpoplib.testing.dovecot import PASSWORD, Dovecot  # noqa: E402

HERE = Path(__file__).resolve().parent
_users = itertools.count()
PYCACHE = Path(tempfile.gettempdir()) / "fastpoplib-bench-pycache"


def message(index: int, size: int) -> bytes:
    head = (f"From: Sender {index} <s{index}@example.com>\r\nTo: me@example.com\r\n"
            f"Subject: benchmark message {index}\r\nMessage-ID: <{index}@bench>\r\n\r\n").encode()
    line = (b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0NTY3" * 2)[:76] + b"\r\n"
    return head + line * max(1, (size - len(head)) // len(line))


def make_users(dove: Dovecot, count: int, messages: int) -> List[str]:
    """New mailboxes holding the same messages, one per run: every run starts from the same
    state. Made before Dovecot starts: it notices a passwd-file change only a second later."""
    names = []
    for _ in range(count):
        names.append(f"u{next(_users)}")
        dove.add_user(names[-1], (message(i, 4096) for i in range(messages)))
    return names


def server_count(dove: Dovecot, user: str) -> int:
    box = dove.root / "mail" / user / "Maildir"
    return sum(1 for sub in ("cur", "new") for _ in (box / sub).iterdir())


def maildir(path: Path) -> Path:
    for sub in ("cur", "new", "tmp"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    return path


def stored(path: Path) -> int:
    return sum(1 for sub in ("cur", "new") for _ in (path / sub).iterdir())


# Each tool: a function (dove, user, destination, work dir, delete) -> argv, env.
def fastpoplib_cmd(dove: Dovecot, user: str, dest: Path, work: Path, delete: bool) -> List[str]:
    return [sys.executable, "-m", "fastpoplib", "fetch", "-q", "--host", dove.host, "--port", str(dove.tls_port),
            "--user", user, "--password-env", "BENCH_PW", "--cafile", dove.cafile, "--maildir", str(dest)] + (
        ["--delete"] if delete else [])  # fmt: skip


def mpop_cmd(dove: Dovecot, user: str, dest: Path, work: Path, delete: bool) -> List[str]:
    return ["mpop", "-q", f"--host={dove.host}", f"--port={dove.tls_port}", "--tls=on", "--tls-starttls=off",
            f"--tls-trust-file={dove.cafile}", "--auth=on", f"--user={user}", "--passwordeval=echo $BENCH_PW",
            f"--delivery=maildir,{dest}", f"--keep={'off' if delete else 'on'}", "--only-new=on",
            f"--uidls-file={work / 'uidls'}"]  # fmt: skip


def getmail_cmd(getmail: str) -> Callable[[Dovecot, str, Path, Path, bool], List[str]]:
    def cmd(dove: Dovecot, user: str, dest: Path, work: Path, delete: bool) -> List[str]:
        rc = work / "getmailrc"
        # getmail refuses to deliver as root (this harness runs as root for Dovecot): it
        # delivers as nobody, in the child it forks for every message anyway.
        os.chmod(work, 0o755)
        for path in [dest, *dest.iterdir()]:
            os.chown(path, 65534, 65534)
        rc.write_text(
            f"[retriever]\ntype = SimplePOP3SSLRetriever\nserver = {dove.host}\nport = {dove.tls_port}\n"
            f"username = {user}\npassword = {PASSWORD}\nca_certs = {dove.cafile}\n"
            f"[destination]\ntype = Maildir\npath = {dest}/\nuser = nobody\n"
            f"[options]\nverbose = 0\nread_all = false\ndelete = {'true' if delete else 'false'}\n"
        )
        return [getmail, f"--getmaildir={work}", f"--rcfile={rc}"]

    return cmd


def run_once(name: str, cmd: Callable[..., List[str]], dove: Dovecot, user: str, messages: int, delete: bool,
             strace: bool) -> float:  # fmt: skip
    work = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
    try:
        dest = maildir(work / "Maildir")
        argv = cmd(dove, user, dest, work, delete)
        if strace:
            argv = ["strace", "-f", "-c", "-e", "trace=fsync,fdatasync", "-o", str(work / "strace"), *argv]
        # Python's byte-code cache as after `pip install` (which compiles it), kept out of the
        # source tree; a PYTHONDONTWRITEBYTECODE in the environment would make the Python tools
        # compile every module on every run.
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env.update(BENCH_PW=PASSWORD, PYTHONPYCACHEPREFIX=str(PYCACHE))
        start = time.perf_counter()
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600, check=False)
        elapsed = time.perf_counter() - start
        if done.returncode != 0:
            sys.exit(f"{name} failed ({done.returncode}): {done.stderr[-2000:]}")
        if stored(dest) != messages:
            sys.exit(f"{name} stored {stored(dest)} of {messages} messages")
        if delete and server_count(dove, user):
            sys.exit(f"{name} left {server_count(dove, user)} messages on the server with deletion")
        if strace:
            print(f"  {name}: {(work / 'strace').read_text().strip().splitlines()[-1]}")
        return elapsed
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--getmail", default=str(HERE.parent / ".venv-getmail" / "bin" / "getmail"))
    parser.add_argument("--strace", action="store_true", help="count each tool's fsync calls (one run each)")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    require_release_build()
    tools: Dict[str, Callable[..., List[str]]] = {"fastpoplib fetch": fastpoplib_cmd}
    if shutil.which("mpop"):
        tools["mpop"] = mpop_cmd
    else:
        print("mpop not installed (apt-get install mpop): skipped", file=sys.stderr)
    if os.access(args.getmail, os.X_OK):
        tools["getmail6"] = getmail_cmd(args.getmail)
    else:
        print(f"no getmail at {args.getmail}: skipped", file=sys.stderr)
    root = Path(tempfile.mkdtemp(prefix="fastpoplib-bench-tools-"))
    results: Dict[tuple, List[float]] = {}
    try:
        dove = Dovecot(root)
        small = iter(make_users(dove, len(tools), 10))
        full = iter(make_users(dove, len(tools) * (2 * args.runs + args.strace), args.messages))
        with dove:
            for name, cmd in tools.items():  # warm-up: page cache, Dovecot's processes, Python's imports
                run_once(name, cmd, dove, next(small), 10, False, False)
            if args.strace:
                for name, cmd in tools.items():
                    run_once(name, cmd, dove, next(full), args.messages, True, True)
            for _ in range(args.runs):
                for delete in (False, True):
                    for name, cmd in tools.items():
                        elapsed = run_once(name, cmd, dove, next(full), args.messages, delete, False)
                        results.setdefault((delete, name), []).append(elapsed)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    lines = [f"| mode | tool | median s ({args.runs} runs) | min s | vs mpop |", "|---|---|---|---|---|"]
    for delete in (False, True):
        base = statistics.median(results[(delete, "mpop")]) if (delete, "mpop") in results else None
        for name in tools:
            times = results[(delete, name)]
            med = statistics.median(times)
            ratio = f"{med / base:.2f}x" if base else "-"
            mode = "--delete" if delete else "keep"
            lines.append(f"| {mode} | {name} | {med:.2f} | {min(times):.2f} | {ratio} |")
    table = "\n".join(lines)
    print(f"{args.messages} x 4 KB over implicit TLS from Dovecot into a Maildir, whole process:\n{table}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fetch_tools.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
