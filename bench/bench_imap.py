"""The retriever into IMAP against the same retriever into a Maildir, same run, alternating,
medians of N runs, ratio printed (issue 20: IMAP at most 2x the Maildir time).

    python bench/bench_imap.py [--runs 5] [--messages 1000]

A private Dovecot on loopback serves POP3 (the source: 1,000 x 4 KB over POP3S) and IMAP
(the destination: another user's mailbox over IMAPS). Each run is one `fastpoplib fetch`
pass of the whole mailbox through the retriever's engine (`_retriever.fetch_all`, in
process: the interpreter's start-up is not measured), into a fresh Maildir or into a fresh
IMAP folder with fresh state. Needs root, Dovecot with dovecot-imapd
(.ci/install-dovecot.sh) and imapclient (`pip install 'fastpoplib[imap]'`). Not a test."""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _guard import require_release_build  # noqa: E402
from fastpoplib import _retriever  # noqa: E402
from fastpoplib.testing.dovecot import PASSWORD, Dovecot  # noqa: E402


def message(index: int, size: int = 4096) -> bytes:
    head = (
        f"From: Sender {index} <s{index}@example.com>\r\nTo: me@example.com\r\nSubject: benchmark {index}\r\n"
        f"Date: Mon, 07 Dec 2026 10:00:00 +0000\r\nMessage-ID: <{index}@bench>\r\n\r\n"
    ).encode()
    line = b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0NTY3"[:76] + b"\r\n"
    return head + line * max(1, (size - len(head)) // len(line))


def one_pass(dove: Dovecot, work: Path, run: int, into: str, count: int) -> float:
    os.environ["XDG_STATE_HOME"] = str(work / f"state-{into}-{run}")
    common = dict(host=dove.host, port=dove.tls_port, cafile=dove.cafile, user="src", password_env="BENCH_PW", timeout=60)
    if into == "imap":
        acct = _retriever.Account(
            **common,  # type: ignore[arg-type]
            imap=f"imaps://dest@{dove.host}:{dove.imaps_port}/run{run}",
            imap_password_env="BENCH_PW",
            imap_cafile=dove.cafile,
        )
    else:
        acct = _retriever.Account(**common, maildir=str(work / f"Maildir-{run}"))  # type: ignore[arg-type]
    started = time.perf_counter()
    [report] = asyncio.run(_retriever.fetch_all([acct], work / "unused", _retriever.Progress()))
    elapsed = time.perf_counter() - started
    if report.error or report.problems or report.fetched != count:
        sys.exit(f"{into} run {run} failed: {report.error or report.problems or report.fetched}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--messages", type=int, default=1000)
    args = parser.parse_args()
    require_release_build()
    os.environ["BENCH_PW"] = PASSWORD
    root = Path(tempfile.mkdtemp(prefix="fastpoplib-bench-imap-"))
    work = Path(tempfile.mkdtemp(prefix="fastpoplib-bench-imap-work-"))
    try:
        dove = Dovecot(root, protocols=("pop3", "imap"))
        dove.add_user("src", [message(i) for i in range(args.messages)])
        dove.add_user("dest", [])
        # Dovecot's defaults as a server would run them: the harness turns fsync off for its
        # POP3 tests; a destination must write durably, as the Maildir side does.
        with open(dove.conf, "a") as conf:
            conf.write("mail_fsync = optimized\n")
        times: dict[str, list[float]] = {"maildir": [], "imap": []}
        with dove:
            one_pass(dove, work, -1, "imap", args.messages)  # warm-up: Dovecot's caches and indexes
            for run in range(args.runs):
                for into in ("maildir", "imap") if run % 2 == 0 else ("imap", "maildir"):
                    times[into].append(one_pass(dove, work, run, into, args.messages))
        maildir, imap = statistics.median(times["maildir"]), statistics.median(times["imap"])
        print(f"{args.messages} x 4 KB from Dovecot POP3S, median of {args.runs} runs (seconds)")
        print("| destination | median s | runs | ratio to Maildir |")
        print("|---|---:|---|---:|")
        for name, values, median in (("Maildir (fsync each)", times["maildir"], maildir), ("Dovecot IMAPS (MULTIAPPEND)", times["imap"], imap)):
            print(f"| {name} | {median:.3f} | {' '.join(f'{v:.2f}' for v in values)} | {median / maildir:.2f}x |")
        print(f"IMAP / Maildir: {imap / maildir:.2f}x (issue 20 asks at most 2x)")
    finally:
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
