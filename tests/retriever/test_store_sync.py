"""One fsync of the Maildir's ``new/`` per batch instead of one per message (the fetch
benchmark's largest cost after the messages' own fsyncs): the batching must never let the
state record a message whose rename is not yet on disk (the state is saved before any DELE)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from fastpoplib import _retriever, _store
from fastpoplib.testing import POP3TestServer, sample_mailbox


def test_renames_are_on_disk_before_the_state_records_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POP_PW", "password")
    md = tmp_path / "md"
    events: list[tuple[str, str]] = []
    real_rename, real_replace, real_fsync_dir = os.rename, os.replace, _store._fsync_dir

    def rename(src: str, dst: str) -> None:
        real_rename(src, dst)
        events.append(("rename", str(dst)))

    def replace(src: str, dst: str) -> None:
        real_replace(src, dst)
        events.append(("replace", str(dst)))

    def fsync_dir(path: Path) -> None:
        real_fsync_dir(path)
        events.append(("fsync dir", str(path)))

    monkeypatch.setattr(os, "rename", rename)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(_store, "_fsync_dir", fsync_dir)
    box = sample_mailbox(120)  # more than SAVE_EVERY: state saved during the run too
    with POP3TestServer(mailbox=box, stls=False) as srv:
        acct = _retriever.Account(host=srv.host, port=srv.port, user="user", tls="none", insecure=True,
                                  password_env="POP_PW", maildir=str(md), delete=True, timeout=30)  # fmt: skip

        reports = [asyncio.run(_retriever.fetch_account(acct, md, _retriever.Progress()))]
        assert reports[0].code == 0 and reports[0].fetched == 120, reports[0]
    new = str(md / "new")
    pending = 0  # renames into new/ not yet followed by an fsync of new/
    saves = 0
    for kind, path in events:
        if kind == "rename" and path.startswith(new):
            pending += 1
        elif kind == "fsync dir" and path == new:
            pending = 0
        elif kind == "replace" and path.endswith(".json"):  # the state file
            saves += 1
            assert pending == 0, f"the state was saved with {pending} rename(s) not yet on disk"
    assert saves >= 3
    fsyncs_of_new = sum(1 for kind, path in events if kind == "fsync dir" and path == new)
    assert fsyncs_of_new < 120 / 10  # batched, not one per message
