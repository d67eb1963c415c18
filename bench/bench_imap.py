"""The retriever into IMAP against the same retriever into a Maildir, same run, alternating,
medians of N runs, ratio printed (issue 20: IMAP at most 2x the Maildir time).

    python bench/bench_imap.py [--runs 5] [--messages 1000]

A private Dovecot on loopback serves POP3 (the source: 1,000 x 4 KB over POP3S) and IMAP
(the destination: another user's mailbox over IMAPS; a second Dovecot without MULTIAPPEND and
LITERAL+, as Gmail's and Outlook's IMAP are, for a third row). Each run is one `fastpoplib fetch`
pass of the whole mailbox through the retriever's engine (`_watch.fetch_all`, in
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
from fastpoplib import _retriever, _watch  # noqa: E402
from fastpoplib.testing.dovecot import PASSWORD, Dovecot  # noqa: E402


def message(index: int, size: int = 4096) -> bytes:
    head = (
        f"From: Sender {index} <s{index}@example.com>\r\nTo: me@example.com\r\nSubject: benchmark {index}\r\n"
        f"Date: Mon, 07 Dec 2026 10:00:00 +0000\r\nMessage-ID: <{index}@bench>\r\n\r\n"
    ).encode()
    line = b"QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVphYmNkZWZnaGlqa2xtbm9wcXJzdHV2d3h5ejAxMjM0NTY3"[:76] + b"\r\n"
    return head + line * max(1, (size - len(head)) // len(line))


def one_pass(dove: Dovecot, plain: Dovecot, work: Path, run: int, into: str, count: int) -> float:
    os.environ["XDG_STATE_HOME"] = str(work / f"state-{into}-{run}")
    common = dict(host=dove.host, port=dove.tls_port, cafile=dove.cafile, user="src", password_env="BENCH_PW", timeout=60)
    if into != "maildir":
        imap = dove if into == "imap" else plain
        acct = _retriever.Account(
            **common,  # type: ignore[arg-type]
            imap=f"imaps://dest@{imap.host}:{imap.imaps_port}/run{run}",
            imap_password_env="BENCH_PW",
            imap_cafile=imap.cafile,
        )
    else:
        acct = _retriever.Account(**common, maildir=str(work / f"Maildir-{run}"))  # type: ignore[arg-type]
    started = time.perf_counter()
    [report] = asyncio.run(_watch.fetch_all([acct], work / "unused", _retriever.Progress()))
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
    roots = [Path(tempfile.mkdtemp(prefix="fastpoplib-bench-imap-")) for _ in range(3)]
    work = roots[2]
    try:
        dove = Dovecot(roots[0], protocols=("pop3", "imap"))
        dove.add_user("src", [message(i) for i in range(args.messages)])
        dove.add_user("dest", [])
        # The IMAP of Gmail and Outlook offers neither MULTIAPPEND nor LITERAL+: a second
        # Dovecot without them shows that case (one APPEND, two round trips, per message).
        plain = Dovecot(roots[1], protocols=("pop3", "imap"))
        plain.add_user("dest", [])
        for server in (dove, plain):
            # Dovecot's defaults as a server would run them: the harness turns fsync off for
            # its POP3 tests; a destination must write durably, as the Maildir side does.
            with open(server.conf, "a") as conf:
                conf.write("mail_fsync = optimized\n")
        with open(plain.conf, "a") as conf:
            conf.write("protocol imap {\n  imap_capability = IMAP4rev1 UIDPLUS IDLE\n}\n")
        cases = ("maildir", "imap", "plain")
        times: dict[str, list[float]] = {case: [] for case in cases}
        with dove, plain:
            for case in cases[1:]:  # warm-up: Dovecot's caches and indexes
                one_pass(dove, plain, work, -1, case, args.messages)
            for run in range(args.runs):
                for into in cases if run % 2 == 0 else cases[::-1]:
                    times[into].append(one_pass(dove, plain, work, run, into, args.messages))
        medians = {case: statistics.median(values) for case, values in times.items()}
        names = {
            "maildir": "Maildir (fsync each message)",
            "imap": "Dovecot IMAPS, MULTIAPPEND + LITERAL+",
            "plain": "Dovecot IMAPS without them (as Gmail, Outlook)",
        }
        print(f"{args.messages} x 4 KB from Dovecot POP3S, median of {args.runs} runs, alternating (seconds)")
        print("| destination | median s | runs | ratio to Maildir |")
        print("|---|---:|---|---:|")
        for case in cases:
            runs = " ".join(f"{v:.2f}" for v in times[case])
            print(f"| {names[case]} | {medians[case]:.3f} | {runs} | {medians[case] / medians['maildir']:.2f}x |")
        print(f"IMAP / Maildir: {medians['imap'] / medians['maildir']:.2f}x (issue 20 asks at most 2x)")
    finally:
        for root in roots:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
