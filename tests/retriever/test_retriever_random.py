"""Randomized retriever test: random server behaviours (UID reuse, duplicate UIDs, no UIDL,
-ERR on RETR, disconnects, new mail arriving) times random SIGKILL points, checked against the
invariant: every message the server ever had is still on the server or whole in the store,
exactly once. Seeded and reproducible (FASTPOPLIB_RANDOM_SEED), bounded in rounds and time."""

from __future__ import annotations

import hashlib
import mailbox
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from fastpoplib.testing import Fault, Mailbox, POP3TestServer
from support.cli import ENV, account, lf, maildir_messages

SEED = int(os.environ.get("FASTPOPLIB_RANDOM_SEED", "20261129"))
ROUNDS = 8
TIME_BUDGET = 120.0  # seconds for all rounds; the rounds left are skipped (and say so)
RUN_TIMEOUT = 60.0


def digest(message: bytes) -> str:
    return hashlib.sha256(lf(message).rstrip(b"\n")).hexdigest()


def whole_in_store(store: str, dest: Path) -> list[str]:
    """Digests of the messages in the store; a partial one matches no original."""
    if store == "maildir":
        return [digest(m) for m in maildir_messages(dest)]
    if not dest.exists():
        return []
    box = mailbox.mbox(dest, create=False)
    try:
        return [digest(box.get_bytes(key)) for key in box.iterkeys()]
    finally:
        box.close()


def check(ever: dict[str, bytes], srv: POP3TestServer, store: str, dest: Path, where: str) -> None:
    held = whole_in_store(store, dest)
    on_server = {digest(m) for m in srv.mailbox.messages}
    for d in ever:
        assert held.count(d) <= 1, f"{where}: a message is stored twice"
        assert held.count(d) == 1 or d in on_server, f"{where}: a message was lost"


def fetch(srv: POP3TestServer, store: str, dest: Path) -> list[str]:
    where = ["--maildir", str(dest)] if store == "maildir" else ["--mbox", str(dest)]
    return [sys.executable, "-m", "fastpoplib", "fetch", *account(srv), *where, "--delete", "-q", "--timeout", "10"]


def one_round(rng: random.Random, tmp: Path, where: str) -> None:
    store = rng.choice(["maildir", "mbox"])
    dest = tmp / ("md" if store == "maildir" else "inbox")
    uidl = rng.random() > 0.2
    ever: dict[str, bytes] = {}
    last_size: dict[str, int] = {}
    serial = 0

    def new_message(box: Mailbox, reuse: bool) -> None:
        nonlocal serial
        serial += 1
        current = set(box.uids)
        gone = [u for u in last_size if u not in current]
        uid = rng.choice(gone) if reuse and gone else f"m{serial}"
        if rng.random() < 0.15 and current:
            uid = rng.choice(sorted(current))  # a duplicate UID
        while True:
            pad = b"p" * rng.randint(0, 3000)
            raw = b"Subject: message %d\nX-Round: %s\n\nbody of %d\n%s\n" % (serial, where.encode(), serial, pad)
            size = len(raw.replace(b"\n", b"\r\n"))
            if last_size.get(uid) != size:  # a reused UID with the same size would be the same message to us
                break
        last_size[uid] = size
        box.add(raw, uid=uid)
        ever[digest(raw)] = raw

    box = Mailbox(any_uids=True)
    for _ in range(rng.randint(3, 10)):
        new_message(box, reuse=False)
    faults = [Fault.stall(0.01, on="RETR", times=None)]
    for _ in range(rng.randint(0, 3)):
        kind = rng.choice(["err", "disconnect", "disconnect"])
        if kind == "err":
            faults.append(
                Fault.reply(
                    b"-ERR [SYS/TEMP] try later\r\n", on="RETR", skip=rng.randint(0, 6), times=rng.randint(1, 2)
                )
            )
        else:
            faults.append(Fault.disconnect(on=rng.choice(["RETR", "DELE", "QUIT", "UIDL"]), skip=rng.randint(0, 8)))
    with POP3TestServer(mailbox=box, stls=False, uidl=uidl, allow_concurrent=True, faults=faults) as srv:
        for step in range(rng.randint(2, 4)):
            if step and rng.random() < 0.6:
                for _ in range(rng.randint(1, 3)):
                    new_message(box, reuse=rng.random() < 0.5)
            before = sum(len(s.raw_lines) for s in srv.sessions)
            kill_after = rng.randint(1, 30) if rng.random() < 0.75 else None
            proc = subprocess.Popen(
                fetch(srv, store, dest), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
            )
            try:
                deadline = time.monotonic() + RUN_TIMEOUT
                while proc.poll() is None and time.monotonic() < deadline:
                    if kill_after is not None and sum(len(s.raw_lines) for s in srv.sessions) - before >= kill_after:
                        proc.send_signal(signal.SIGKILL)
                        break
                    time.sleep(0.005)
                _, err = proc.communicate(timeout=RUN_TIMEOUT)
            finally:
                proc.kill()
            assert "Traceback" not in err, f"{where}: {err}"
            srv.wait_for_sessions_closed()
            check(ever, srv, store, dest, f"{where} step {step}")
        srv.clear_faults()
        for _ in range(4):  # faults are gone: a few runs finish the job
            final = subprocess.run(
                fetch(srv, store, dest), env=ENV, capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False
            )
            srv.wait_for_sessions_closed()
            if final.returncode == 0 and len(srv.mailbox) == 0:
                break
        assert final.returncode == 0 and len(srv.mailbox) == 0, f"{where}: {final.stderr}"
    assert sorted(whole_in_store(store, dest)) == sorted(ever), f"{where}: the store does not hold every message once"


def test_random_server_behaviours_and_kills_lose_and_duplicate_nothing(tmp_path: Path) -> None:
    master = random.Random(SEED)
    started = time.monotonic()
    for n in range(ROUNDS):
        seed = master.getrandbits(32)
        if time.monotonic() - started > TIME_BUDGET:
            print(f"time budget spent: {n} of {ROUNDS} rounds run")
            break
        one_round(random.Random(seed), tmp_path / f"round{n}", f"FASTPOPLIB_RANDOM_SEED={SEED} round {n} (seed {seed})")


def test_sigkill_during_large_mbox_appends(tmp_path: Path) -> None:
    """Messages of 12 MB: kills land in the middle of appends; the partial message is never
    trusted (nor deleted on the server) and is cut off by the next run."""
    rng = random.Random(SEED)
    big = [
        b"Subject: big %d\n\n" % i + b"".join(b"%07d %d %s\n" % (n, i, b"b" * 100) for n in range(110_000))
        for i in range(3)
    ]
    ever = {digest(m): m for m in big}
    dest = tmp_path / "inbox"
    with POP3TestServer(mailbox=Mailbox(big), stls=False, allow_concurrent=True) as srv:
        for kill in range(4):
            threshold = rng.randint(1 << 20, 30 << 20)
            proc = subprocess.Popen(
                fetch(srv, "mbox", dest), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            try:
                deadline = time.monotonic() + RUN_TIMEOUT
                while proc.poll() is None and time.monotonic() < deadline:
                    if dest.exists() and dest.stat().st_size >= threshold:
                        proc.send_signal(signal.SIGKILL)
                        break
                    time.sleep(0.001)
                proc.wait(RUN_TIMEOUT)
            finally:
                proc.kill()
            srv.wait_for_sessions_closed()
            check(ever, srv, "mbox", dest, f"large mbox, kill {kill} at {threshold} bytes")
        final = subprocess.run(
            fetch(srv, "mbox", dest), env=ENV, capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False
        )
        assert final.returncode == 0 and len(srv.mailbox) == 0, final.stderr
    assert sorted(whole_in_store("mbox", dest)) == sorted(ever)
    assert not Path(f"{dest}.lock").exists()
