"""The mbox store rolls back only bytes it wrote itself in an append it did not complete; the
user's own edits (a mail reader shortening or removing a message) are never touched."""

from __future__ import annotations

import json
import os
from pathlib import Path

from fastpoplib.testing import POP3TestServer
from support.cli import _message, account, cli, lf, mbox_messages


def test_a_message_the_user_shortened_is_never_truncated(tmp_path):
    box = [_message(i, 3000) for i in range(1, 4)]
    mbox = tmp_path / "inbox"
    with POP3TestServer(mailbox=box) as srv:
        assert cli("fetch", *account(srv), "--mbox", str(mbox), "--delete").returncode == 0
        # The user's mail reader removes the last lines of the last message (an attachment).
        text = mbox.read_bytes()
        edited = text[: len(text) - 1000] + b"\n"
        mbox.write_bytes(edited)
        srv.mailbox_for("user").add(_message(4, 3000))
        r = cli("fetch", *account(srv), "--mbox", str(mbox), "--delete")
        assert r.returncode == 0, r.stderr
    data = mbox.read_bytes()
    assert data.startswith(edited), "the user's edit was changed"
    assert len(mbox_messages(mbox)) == 4
    assert lf(_message(4, 3000)) in data


def test_an_append_cut_by_a_killed_run_is_rolled_back_to_where_it_began(tmp_path):
    box = [_message(1, 3000), _message(2, 400_000)]
    mbox = tmp_path / "inbox"
    with POP3TestServer(mailbox=box[:1]) as srv:
        assert cli("fetch", *account(srv), "--mbox", str(mbox)).returncode == 0
    before = mbox.read_bytes()
    journal = Path(f"{mbox}.fastpoplib") / "append.json"
    # A run killed in the middle of the append: simulated by what it leaves, the journal
    # recorded before the first byte, then part of the message.
    from_line = b"From fpl-u" + b"0" * 24 + b"-400000-L400000 Mon Dec  7 20:00:00 2026\n"
    journal.write_text(json.dumps({"start": len(before), "from": from_line.decode()}))
    os.chmod(journal, 0o600)
    with open(mbox, "ab") as f:
        f.write(from_line + b"From: x\nSubject: cut\n\npartial body\n")
    with POP3TestServer(mailbox=box[:1]) as srv:
        r = cli("fetch", *account(srv), "--mbox", str(mbox))
        assert r.returncode == 0, r.stderr
    assert mbox.read_bytes() == before
    assert not journal.exists()


def test_an_incomplete_message_without_a_journal_is_the_users(tmp_path):
    # Not written by this store (no journal names it): never truncated, even if cut short.
    box = [_message(1, 3000)]
    mbox = tmp_path / "inbox"
    with POP3TestServer(mailbox=box) as srv:
        assert cli("fetch", *account(srv), "--mbox", str(mbox)).returncode == 0
        tail = b"From fpl-u" + b"1" * 24 + b"-9000-L9000 Mon Dec  7 20:00:00 2026\nSubject: mine\n\nshort\n"
        with open(mbox, "ab") as f:
            f.write(tail)
        edited = mbox.read_bytes()
        assert cli("fetch", *account(srv), "--mbox", str(mbox)).returncode == 0
    assert mbox.read_bytes() == edited
