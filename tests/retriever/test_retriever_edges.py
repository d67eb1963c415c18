"""Edges of the retriever's promises (run for real in subprocesses, as a
person runs `fastpoplib`): the state under $XDG_STATE_HOME is checked up from its parents, a
status record that is not a file is said so, an mbox the user edited keeps its blank line
between messages, interrupted polls count in the status totals, and the CLI gives CLI advice
when the connection is lost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fastpoplib.testing import Fault, POP3TestServer, sample_mailbox
from support.cli import ENV, _message, account, lf, mbox_messages, no_traceback, wait_for


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fastpoplib", *args],
        capture_output=True,
        text=True,
        env=env or ENV,
        timeout=120,
        check=False,
    )


# --- the state's parents under $XDG_STATE_HOME -------------------------------------------------


@pytest.mark.parametrize("writable", ["fastpoplib", "fastpoplib/mda"])
def test_a_writable_parent_of_the_state_under_xdg_state_home_is_refused(tmp_path: Path, writable: str) -> None:
    # An MDA's state (its journal of what it delivered) lives in $XDG_STATE_HOME/fastpoplib/mda/<hash>:
    # another user who may write a directory above it can swap the whole state for theirs.
    home = tmp_path / "state"
    (home / "fastpoplib" / "mda").mkdir(parents=True, mode=0o700)
    os.chmod(home / writable, 0o777 if writable == "fastpoplib" else 0o770)
    delivered = tmp_path / "delivered"
    mda = f"{sys.executable} -c \"import sys; open('{delivered}', 'ab').write(sys.stdin.buffer.read())\""
    env = dict(ENV, XDG_STATE_HOME=str(home))
    with POP3TestServer(mailbox=[_message(1, 500)], stls=False) as srv:
        r = run("fetch", *account(srv), "--mda", mda, "--delete", env=env)
        assert len(srv.mailbox_for("user").messages) == 1, "a message was deleted on the server"
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert f"{home / writable} is writable by other users" in r.stderr, r.stderr
    assert "chmod go-w" in r.stderr
    assert not delivered.exists(), "the MDA ran although the state could not be trusted"
    no_traceback(r.stderr)


def test_private_parents_under_xdg_state_home_are_accepted(tmp_path: Path) -> None:
    home = tmp_path / "state"
    delivered = tmp_path / "delivered"
    mda = f"{sys.executable} -c \"import sys; open('{delivered}', 'ab').write(sys.stdin.buffer.read())\""
    with POP3TestServer(mailbox=[_message(1, 500)], stls=False) as srv:
        r = run("fetch", *account(srv), "--mda", mda, env=dict(ENV, XDG_STATE_HOME=str(home)))
    assert r.returncode == 0, r.stderr
    assert delivered.read_bytes().replace(b"\r\n", b"\n") == lf(_message(1, 500))


# --- a status record that is a directory -------------------------------------------------------


def _config(tmp_path: Path, srv: Any) -> str:
    config = tmp_path / "c.toml"
    config.write_text(
        f"[[account]]\nname = 'x'\nhost = '{srv.host}'\nport = {srv.port}\nuser = 'user'\ntls = 'none'\n"
        f"insecure = true\npassword_env = 'POP_PW'\nmaildir = '{tmp_path / 'x'}'\n"
    )
    return str(config)


def test_a_status_record_that_is_a_directory_is_said_so(tmp_path: Path) -> None:
    with POP3TestServer(mailbox=[_message(1, 500)], stls=False) as srv:
        config = _config(tmp_path, srv)
        assert run("fetch", "--config", config).returncode == 0
        (record,) = (tmp_path / "x" / ".fastpoplib").glob("*.status")
        record.unlink()
        record.mkdir()
        srv.mailbox_for("user").add(_message(2, 500))
        fetched = run("fetch", "--config", config)
        status = run("status", "--config", config)
    # The fetch itself went well; the record it could not write is a warning, not silence.
    assert fetched.returncode == 0, fetched.stderr
    assert f"cannot write the status record: the state file {record} is not a regular file" in fetched.stderr
    assert status.returncode == 0, status.stderr
    assert f"the state file {record} is not a regular file; move it away" in status.stdout, status.stdout
    assert "last poll   never" in status.stdout
    no_traceback(fetched.stderr, status.stderr, status.stdout)


# --- an mbox whose last newline the user removed -----------------------------------------------


@pytest.mark.parametrize("cut", [1, 2], ids=["blank-line-removed", "last-newline-too"])
def test_an_edited_mbox_keeps_a_blank_line_before_the_next_message(tmp_path: Path, cut: int) -> None:
    mbox = tmp_path / "inbox"
    with POP3TestServer(mailbox=[_message(1, 500)], stls=False) as srv:
        assert run("fetch", *account(srv), "--mbox", str(mbox), "--delete").returncode == 0
        # The user's mail reader drops the separating blank line (and with cut=2 the last
        # message's final newline as well).
        edited = mbox.read_bytes()[:-cut]
        mbox.write_bytes(edited)
        srv.mailbox_for("user").add(_message(2, 500))
        r = run("fetch", *account(srv), "--mbox", str(mbox), "--delete")
    assert r.returncode == 0, r.stderr
    data = mbox.read_bytes()
    assert data.startswith(edited), "the user's edit was changed"
    second = data.index(b"\nFrom fpl-")
    assert data[second - 1 : second + 1] == b"\n\n", "no blank line before the next From_ line (mboxrd)"
    assert data[len(edited) : second + 1] == b"\n" * (second + 1 - len(edited))  # only newlines were added
    assert lf(_message(2, 500)) in mbox_messages(mbox)[1] or lf(_message(2, 500)) in data


def test_an_append_cut_after_its_separator_is_rolled_back_with_it(tmp_path: Path) -> None:
    # The separator is part of the append (journalled): a run killed after writing it and part
    # of the message leaves the file exactly as the user left it.
    mbox = tmp_path / "inbox"
    with POP3TestServer(mailbox=[_message(1, 500)], stls=False) as srv:
        assert run("fetch", *account(srv), "--mbox", str(mbox)).returncode == 0
    edited = mbox.read_bytes()[:-2]  # no final newline at all
    mbox.write_bytes(edited)
    journal = Path(f"{mbox}.fastpoplib") / "append.json"
    from_line = b"From fpl-u" + b"0" * 24 + b"-9000-L9000 Mon Dec  7 20:00:00 2026\n"
    journal.write_text(json.dumps({"start": len(edited), "at": len(edited) + 2, "from": from_line.decode()}))
    os.chmod(journal, 0o600)
    with open(mbox, "ab") as f:
        f.write(b"\n\n" + from_line + b"Subject: cut\n\npartial")
    with POP3TestServer(mailbox=[_message(1, 500)], stls=False) as srv:
        r = run("fetch", *account(srv), "--mbox", str(mbox))
    assert r.returncode == 0, r.stderr
    assert mbox.read_bytes() == edited
    assert not journal.exists()


# --- interrupted polls in the status totals ----------------------------------------------------


def test_an_interrupted_fetch_counts_in_the_status_totals(tmp_path: Path) -> None:
    slow = Fault.stall(0.05, on="RETR", times=None)
    with POP3TestServer(mailbox=sample_mailbox(40), stls=False, faults=[slow]) as srv:
        config = _config(tmp_path, srv)
        proc = subprocess.Popen(
            [sys.executable, "-m", "fastpoplib", "fetch", "--config", config],
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        new = tmp_path / "x" / "new"
        wait_for(lambda: new.exists() and len(os.listdir(new)) >= 3, "some messages to be stored")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 130, err
        stored = len(os.listdir(new))
        assert 0 < stored < 40
        (as_json,) = json.loads(run("status", "--config", config, "--json").stdout)
    assert as_json["total"] == stored and as_json["fetched"] == stored, as_json
    assert "interrupted" in as_json["last_error"]


# --- CLI advice, not library advice ------------------------------------------------------------


@pytest.mark.parametrize("verb", ["UIDL", "QUIT"])
def test_a_lost_connection_gets_cli_advice(tmp_path: Path, verb: str) -> None:
    with POP3TestServer(mailbox=sample_mailbox(2), stls=False, faults=[Fault.disconnect(on=verb)]) as srv:
        r = run("fetch", *account(srv), "--maildir", str(tmp_path / "md"))
    assert r.returncode == 4, r.stderr
    assert "the server closed the connection" in r.stderr
    assert "open a new" not in r.stderr, r.stderr
    assert "run the command again" in r.stderr
    no_traceback(r.stderr)


# --- storing in batches (the fetch benchmark's changes) ----------------------------------------


def test_every_maildir_file_is_fsynced_before_its_rename_when_stored_in_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A batch's files are written and fsynced by several threads, then renamed by one: no file
    # may reach new/ before its own bytes are on disk.
    from fastpoplib import _retriever

    monkeypatch.setenv("POP_PW", "password")
    md = tmp_path / "md"
    fsynced: set[str] = set()
    early: list[str] = []
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd: int) -> None:
        real_fsync(fd)
        fsynced.add(os.readlink(f"/proc/self/fd/{fd}"))

    def rename(src: Any, dst: Any) -> None:
        if str(dst).startswith(str(md / "new")) and str(src) not in fsynced:
            early.append(str(src))
        real_rename(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)
    with POP3TestServer(mailbox=sample_mailbox(300), stls=False) as srv:
        acct = _retriever.Account(host=srv.host, port=srv.port, user="user", tls="none", insecure=True,
                                  password_env="POP_PW", maildir=str(md), timeout=30)  # fmt: skip
        import asyncio

        report = asyncio.run(_retriever.fetch_account(acct, md, _retriever.Progress()))
    assert report.code == 0 and report.fetched == 300, report
    assert len(os.listdir(md / "new")) == 300
    assert early == [], f"{len(early)} file(s) renamed into new/ before their fsync"


def test_the_same_bytes_listed_twice_in_one_batch_are_stored_once(tmp_path: Path) -> None:
    # Three messages with identical bytes (different UIDs) arrive together: the storing of the
    # first decides that the others are already held.
    same = _message(7, 800)
    box = [_message(1, 800), same, same, same, _message(2, 800)]
    md = tmp_path / "md"
    with POP3TestServer(mailbox=box, stls=False) as srv:
        r = run("fetch", *account(srv), "--maildir", str(md), "--delete")
        assert r.returncode == 0, r.stderr
        assert len(srv.mailbox_for("user").messages) == 0, "a message held in the store was not deleted"
    stored = sorted(p.read_bytes().replace(b"\r\n", b"\n") for p in (md / "new").iterdir())
    assert stored == sorted([lf(_message(1, 800)), lf(same), lf(_message(2, 800))])


def test_a_batch_of_many_small_messages_keeps_few_files_open(tmp_path: Path) -> None:
    # Hundreds of small messages fit in one batch: their files must not all be open at once,
    # or a run under a modest descriptor limit (or many accounts at once) fails with EMFILE.
    import resource

    def low_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (110, 110))  # enough for --concurrency 1

    box = [b"From: a@example.org\nSubject: tiny %d\n\nbody %d\n" % (i, i) for i in range(600)]
    md = tmp_path / "md"
    with POP3TestServer(mailbox=box, stls=False) as srv:
        r = subprocess.run(
            [sys.executable, "-m", "fastpoplib", "fetch", *account(srv), "--maildir", str(md), "--concurrency", "1"],
            capture_output=True, text=True, env=ENV, timeout=120, check=False, preexec_fn=low_limit,
        )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert len(os.listdir(md / "new")) == 600
    assert not os.listdir(md / "tmp")
