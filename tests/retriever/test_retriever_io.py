"""Store I/O runs off the event loop: one account on a stalled disk does not hold up another."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import pytest
from fastpoplib import _retriever, _watch
from fastpoplib.testing import POP3TestServer, sample_mailbox
from support.cli import maildir_messages, wait_for


def test_a_stalled_fsync_does_not_stall_the_other_accounts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POP_PW", "password")
    slow_dir, fast_dir = tmp_path / "slow", tmp_path / "fast"
    release = threading.Event()
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            target = ""
        if target.startswith(str(slow_dir)):
            release.wait(60)  # a disk that does not answer until the test says so
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with POP3TestServer(mailbox=sample_mailbox(5), stls=False, allow_concurrent=True) as srv:

        def acct(name: str, maildir: Path) -> _retriever.Account:
            return _retriever.Account(
                host=srv.host,
                port=srv.port,
                user="user",
                name=name,
                tls="none",
                insecure=True,
                password_env="POP_PW",
                maildir=str(maildir),
                timeout=30,
            )

        reports: list[_retriever.Report] = []
        run = threading.Thread(
            target=lambda: reports.extend(
                asyncio.run(
                    _watch.fetch_all(
                        [acct("slow", slow_dir), acct("fast", fast_dir)], tmp_path, _retriever.Progress()
                    )
                )
            )
        )
        run.start()
        try:
            wait_for(lambda: len(maildir_messages(fast_dir)) == 5, "the other account to finish", deadline=20)
            assert run.is_alive() and not maildir_messages(slow_dir)
        finally:
            release.set()
            run.join(60)
    assert [(r.account, r.code, r.fetched) for r in reports] == [("slow", 0, 5), ("fast", 0, 5)]
