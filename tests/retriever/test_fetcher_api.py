"""The exactly-once API (`Fetcher`, `AsyncFetcher`): an application stores each message and its key in
its own sqlite3 transaction, then acknowledges it; only acknowledged (or already stored)
messages are deleted on the server. Run against the shipped test server, including a process
killed between the application's commit and ``ack()``."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import fastpoplib
import pytest
from fastpoplib import AsyncFetcher, Fetcher
from fastpoplib.testing import Fault, POP3TestServer

MESSAGES = [f"Subject: ticket {i}\r\nMessage-ID: <t{i}@test>\r\n\r\nbody {i}\r\n".encode() for i in range(10)]

# What an application does; the docs show the same code (docs/fetcher.md).
APP = textwrap.dedent(
    """
    import os, sqlite3, sys
    import fastpoplib

    port, db_path, crash_after = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    db = sqlite3.connect(db_path)
    db.execute("CREATE TABLE IF NOT EXISTS mail (key TEXT PRIMARY KEY, body BLOB)")

    def stored(key):
        return db.execute("SELECT 1 FROM mail WHERE key = ?", (key,)).fetchone() is not None

    with fastpoplib.POP3("127.0.0.1", port, timeout=10) as pop:
        pop.login("user", "password", allow_insecure=True)
        for n, msg in enumerate(fastpoplib.Fetcher(pop, stored=stored, delete=True).new_messages(), 1):
            with db:  # one transaction: the message and its key
                db.execute("INSERT INTO mail (key, body) VALUES (?, ?)", (msg.key, msg.data))
            if n == crash_after:
                os._exit(1)  # killed after the commit, before ack()
            msg.ack()
    """
)


def rows(db_path: Path) -> list[bytes]:
    with contextlib.closing(sqlite3.connect(db_path)) as db:
        return sorted(body for (body,) in db.execute("SELECT body FROM mail"))


def run_app(tmp_path: Path, port: int, crash_after: int = 0) -> subprocess.CompletedProcess:
    script = tmp_path / "app.py"
    script.write_text(APP)
    return subprocess.run(
        [sys.executable, str(script), str(port), str(tmp_path / "app.db"), str(crash_after)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("crash_after", [1, 4, 10])
def test_crash_between_commit_and_ack_neither_loses_nor_duplicates(tmp_path: Path, crash_after: int) -> None:
    with POP3TestServer(MESSAGES, stls=False) as srv:
        crashed = run_app(tmp_path, srv.port, crash_after)
        assert crashed.returncode == 1, crashed.stderr
        assert len(rows(tmp_path / "app.db")) == crash_after
        assert len(srv.mailbox) == 10, "deleted although the session never reached QUIT"
        done = run_app(tmp_path, srv.port)
        assert done.returncode == 0, done.stderr
        assert len(srv.mailbox) == 0, "stored messages were left on the server"
        # The second run offered only what the first had not committed.
        retrs = [c for c in srv.sessions[-1].commands if c.startswith(b"RETR")]
        assert len(retrs) == 10 - crash_after
    assert rows(tmp_path / "app.db") == sorted(MESSAGES)


def stored_in(keys: set[str]):  # noqa: ANN201 - a predicate
    return lambda key: key in keys


def test_only_acknowledged_messages_are_deleted(tmp_path: Path) -> None:
    saved: dict[str, bytes] = {}
    with POP3TestServer(MESSAGES, stls=False) as srv:
        with fastpoplib.POP3(srv.host, srv.port, timeout=10) as pop:
            pop.login("user", "password", allow_insecure=True)
            for msg in Fetcher(pop, stored=stored_in(set(saved)), delete=True).new_messages():
                if msg.number % 2:  # the application keeps the odd ones only
                    saved[msg.key] = msg.data
                    msg.ack()
        assert len(srv.mailbox) == 5
        assert sorted(srv.mailbox.messages) == sorted(m for i, m in enumerate(MESSAGES) if i % 2)
    assert sorted(saved.values()) == sorted(m for i, m in enumerate(MESSAGES) if not i % 2)


def test_break_and_an_exception_leave_nothing_half_done(tmp_path: Path) -> None:
    saved: dict[str, bytes] = {}
    with POP3TestServer(MESSAGES, stls=False) as srv:
        with fastpoplib.POP3(srv.host, srv.port, timeout=10) as pop:
            pop.login("user", "password", allow_insecure=True)
            for msg in Fetcher(pop, stored=saved.__contains__, delete=True).new_messages():
                saved[msg.key] = msg.data
                msg.ack()
                if len(saved) == 3:
                    break  # before the batch ended: no DELE was sent, the next run sends them
        assert len(srv.mailbox) == 10
        with pytest.raises(OSError):
            with fastpoplib.POP3(srv.host, srv.port, timeout=10) as pop:
                pop.login("user", "password", allow_insecure=True)
                for msg in Fetcher(pop, stored=saved.__contains__, delete=True).new_messages():
                    saved[msg.key] = msg.data
                    msg.ack()
                    raise OSError("the application's disk is full")  # after one more was saved
        assert len(srv.mailbox) == 10, "an exception must close without QUIT: nothing deleted"
        with fastpoplib.POP3(srv.host, srv.port, timeout=10) as pop:
            pop.login("user", "password", allow_insecure=True)
            offered = [m.number for m in Fetcher(pop, stored=saved.__contains__, delete=True).new_messages()]
            late = next(iter(Fetcher(pop, stored=saved.__contains__).new_messages()), None)
        assert len(offered) == 6 and late is not None
        with pytest.raises(fastpoplib.LocalProtocolError, match="ack"):
            late.ack()  # its iteration has ended
        assert len(srv.mailbox) == 6  # the 4 stored earlier are deleted now; the 6 offered were not acked
    assert len(saved) == 4


def test_async_twin_with_a_server_error_mid_way(tmp_path: Path) -> None:
    saved: dict[str, bytes] = {}

    async def run() -> list[int]:
        got = []
        async with fastpoplib.AsyncPOP3.connect(srv.host, srv.port, 10) as pop:
            await pop.login("user", "password", allow_insecure=True)
            fetcher = AsyncFetcher(pop, stored=saved.__contains__, delete=True)
            messages = fetcher.new_messages()
            try:  # contextlib.aclosing, before Python 3.10
                async for msg in messages:
                    saved[msg.key] = msg.data
                    msg.ack()
                    got.append(msg.number)
            finally:
                await messages.aclose()
        return got

    with POP3TestServer(MESSAGES, stls=False) as srv:
        srv.add_fault(Fault.reply(b"-ERR [SYS/TEMP] message 7 is unavailable\r\n", on="RETR", skip=6))
        with pytest.raises(fastpoplib.SysTempError):
            asyncio.run(run())
        assert len(srv.mailbox) == 10, "the error left the block: closed without QUIT"
        assert asyncio.run(run()) == [7, 8, 9, 10]
        assert len(srv.mailbox) == 0
    assert sorted(saved.values()) == sorted(MESSAGES)


def test_server_without_uidl_is_refused_with_a_reason() -> None:
    with POP3TestServer(MESSAGES, stls=False, uidl=False) as srv:
        with fastpoplib.POP3(srv.host, srv.port, timeout=10) as pop:
            pop.login("user", "password", allow_insecure=True)
            with pytest.raises(fastpoplib.POP3Error, match="no UIDL"):
                next(Fetcher(pop, stored=lambda key: False).new_messages())


def test_deletions_go_out_between_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each message its own batch: a DELE is sent before each next batch (never while RETR
    replies are in flight, which the session would have to hold in memory)."""
    monkeypatch.setattr(fastpoplib._fetcher, "BATCH_BYTES", 1)
    saved: dict[str, bytes] = {}
    with POP3TestServer(MESSAGES, stls=False) as srv:
        with fastpoplib.POP3(srv.host, srv.port, timeout=10) as pop:
            pop.login("user", "password", allow_insecure=True)
            for msg in Fetcher(pop, stored=saved.__contains__, delete=True).new_messages():
                saved[msg.key] = msg.data
                msg.ack()
                if len(saved) == 3:
                    break
        assert len(srv.mailbox) == 8  # the first two; the third's DELE was not sent yet
        commands = [c.split()[0] for c in srv.sessions[0].commands if c.split()[0] in (b"RETR", b"DELE")]
        assert commands == [b"RETR", b"DELE", b"RETR", b"DELE", b"RETR"]
