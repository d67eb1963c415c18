"""The store's paths, locks and state: locks and state follow the resolved file, not the
spelling of its path; the state is a private cache of the store, never the authority; every
path problem is a sentence with exit code 2."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support.dovecot import PASSWORD
from fastpoplib.testing import Fault, POP3TestServer
from support.cli import _message, account, cli, lf, maildir_messages, mbox_messages, no_traceback, spawn, wait_for


def test_overlapping_runs_through_a_symlink_share_one_lock_and_state(tmp_path):
    box = [_message(i, 2000) for i in range(1, 7)]
    mbox = tmp_path / "inbox"
    link = tmp_path / "link-to-inbox"
    mbox.touch(mode=0o600)
    link.symlink_to(mbox)
    # The first run is held in its first RETR, so the runs overlap; the server lets both in.
    with POP3TestServer(mailbox=box, allow_concurrent=True, faults=[Fault.stall(5, on="RETR")]) as srv:
        first = spawn("fetch", *account(srv), "--mbox", str(mbox))
        wait_for(lambda: any(c.startswith(b"RETR") for s in srv.sessions for c in s.commands), "the first RETR")
        second = spawn("fetch", *account(srv), "--mbox", str(link), "--wait", "60")
        out1, err1 = first.communicate(timeout=60)
        out2, err2 = second.communicate(timeout=60)
    assert first.returncode == 0, err1
    assert second.returncode == 0, err2
    assert "0 new message(s)" in out2
    assert mbox_messages(mbox) == sorted(lf(m) for m in box)
    assert link.is_symlink()  # the link is kept, the file behind it written


def _state_file(md: Path) -> Path:
    (found,) = [p for p in (md / ".fastpoplib").iterdir() if p.suffix == ".json"]
    return found


def test_a_planted_world_writable_state_is_refused(tmp_path):
    box = [_message(i, 500) for i in range(1, 5)]
    with POP3TestServer(mailbox=box) as srv:
        elsewhere = tmp_path / "elsewhere"
        assert cli("fetch", *account(srv), "--maildir", str(elsewhere)).returncode == 0
        # Someone plants, in an empty Maildir, a state saying all four messages are stored.
        md = tmp_path / "md"
        (md / ".fastpoplib").mkdir(parents=True)
        shutil.copy(_state_file(elsewhere), md / ".fastpoplib")
        os.chmod(md / ".fastpoplib", 0o777)
        r = cli("fetch", *account(srv), "--maildir", str(md), "--delete")
        no_traceback(r.stdout, r.stderr)
        assert r.returncode == 2, r.stderr
        assert f"the state directory {md.resolve() / '.fastpoplib'} is writable by other users (mode 0777)" in r.stderr
        assert len(srv.mailbox_for("user")) == 4

        # Private now, but still lying: the store does not hold the messages, nothing is deleted.
        os.chmod(md / ".fastpoplib", 0o700)
        r = cli("fetch", *account(srv), "--maildir", str(md), "--delete")
        assert len(srv.mailbox_for("user")) == 4, r.stderr
        assert "4 message(s) recorded as fetched are not in the store" in r.stderr


def test_a_group_writable_state_file_is_refused(tmp_path):
    with POP3TestServer(mailbox=[_message(1, 500)]) as srv:
        md = tmp_path / "md"
        assert cli("fetch", *account(srv), "--maildir", str(md)).returncode == 0
        state = _state_file(md)
        os.chmod(state, 0o664)
        r = cli("fetch", *account(srv), "--maildir", str(md))
        assert r.returncode == 2, r.stderr
        assert f"the state file {state} is writable by other users (mode 0664); run chmod go-w {state}" in r.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
def test_a_state_directory_of_another_user_is_refused(tmp_path):
    with POP3TestServer(mailbox=[_message(1, 500)]) as srv:
        md = tmp_path / "md"
        (md / ".fastpoplib").mkdir(parents=True, mode=0o700)
        os.chown(md / ".fastpoplib", 65534, 65534)
        r = cli("fetch", *account(srv), "--maildir", str(md))
        assert r.returncode == 2, r.stderr
        assert "belongs to another user (uid 65534)" in r.stderr


def _break_state_file(md: Path) -> Path:
    state = _state_file(md)
    state.unlink()
    state.mkdir()
    return state


def _break_lock_file(md: Path) -> Path:
    (lock,) = [p for p in (md / ".fastpoplib").iterdir() if p.suffix == ".lock"]
    lock.unlink()
    lock.mkdir()
    return lock


def _break_state_dir(md: Path) -> Path:
    shutil.rmtree(md / ".fastpoplib")
    (md / ".fastpoplib").write_bytes(b"")
    return md / ".fastpoplib"


def _break_new(md: Path) -> Path:
    shutil.rmtree(md / "new")
    (md / "new").write_bytes(b"")
    return md / "new"


def _break_symlink_loop(md: Path) -> Path:
    shutil.rmtree(md)
    md.symlink_to(md)
    return md


@pytest.mark.parametrize("breakage", [_break_state_file, _break_lock_file, _break_state_dir, _break_new, _break_symlink_loop])
def test_every_store_or_state_path_problem_is_a_sentence_with_exit_2(tmp_path, breakage):
    with POP3TestServer(mailbox=[_message(1, 500)]) as srv:
        md = tmp_path / "md"
        assert cli("fetch", *account(srv), "--maildir", str(md)).returncode == 0
        broken = breakage(md)
        r = cli("fetch", *account(srv), "--maildir", str(md), "--delete")
        no_traceback(r.stdout, r.stderr)
        assert r.returncode == 2, r.stderr
        assert str(broken.name) in r.stderr
        assert "fastpoplib: exit code 2" in r.stderr
        assert "new message(s)" not in r.stdout
        assert len(srv.mailbox_for("user")) == 1


def test_a_state_problem_in_an_mbox_store_is_a_sentence_with_exit_2(tmp_path):
    with POP3TestServer(mailbox=[_message(1, 500)]) as srv:
        mbox = tmp_path / "inbox"
        Path(f"{mbox}.fastpoplib").write_bytes(b"")  # where the state directory goes
        r = cli("fetch", *account(srv), "--mbox", str(mbox))
        no_traceback(r.stdout, r.stderr)
        assert r.returncode == 2, r.stderr
        assert f"the state directory {mbox}.fastpoplib is not a directory" in r.stderr
    assert maildir_messages(tmp_path) == []


def test_dovecot_deletes_only_what_the_store_holds(dovecot_server, fresh_user, tmp_path):
    # A real server: a state listing every message, in a store holding none, deletes nothing.
    env = dict(os.environ, DOVE_PW=PASSWORD)
    base = [sys.executable, "-m", "fastpoplib", "fetch", "--host", dovecot_server.host, "--port",
            str(dovecot_server.tls_port), "--user", fresh_user, "--password-env", "DOVE_PW", "--cafile",
            dovecot_server.cafile]  # fmt: skip
    elsewhere, md = tmp_path / "elsewhere", tmp_path / "md"
    assert subprocess.run([*base, "--maildir", str(elsewhere)], env=env, capture_output=True, timeout=120).returncode == 0
    (md / ".fastpoplib").mkdir(parents=True, mode=0o700)
    shutil.copy(_state_file(elsewhere), md / ".fastpoplib")
    r = subprocess.run([*base, "--maildir", str(md), "--delete"], env=env, capture_output=True, text=True, timeout=120)
    assert "5 message(s) recorded as fetched are not in the store" in r.stderr, r.stderr
    # Still all five on the server: the first store fetches nothing new and deletes all five.
    r = subprocess.run([*base, "--maildir", str(elsewhere), "--delete"], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "0 new message(s)" in r.stdout and "5 deleted on server" in r.stdout
