"""`fastpoplib fetch` and `ls` under faults (a full disk, a damaged mbox or state file, UIDs
reused or duplicated, -ERR or an over-long line in RETR, lost sessions, locks held by others,
Ctrl-C), run for real in subprocesses against the shipped test server."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import resource
import signal
import stat
import struct
import subprocess
import sys
import termios
import threading
from pathlib import Path

import pytest
from fastpoplib.testing import Fault, Mailbox, POP3TestServer, sample_mailbox

from support.cli import ENV, _message, account, cli, crlf, lf, maildir_messages, mbox_messages, no_traceback, screen, spawn, wait_for


def has_open(pid: int, path: Path) -> bool:
    """Whether process ``pid`` has ``path`` open (Linux /proc)."""
    try:
        return any(os.readlink(f"/proc/{pid}/fd/{fd}") == str(path) for fd in os.listdir(f"/proc/{pid}/fd"))
    except OSError:  # the process or one of its descriptors went away meanwhile
        return False


# --- 1. disk full in the middle of a message ------------------------------------------------


@pytest.mark.parametrize("store", ["mbox", "maildir"])
def test_disk_full_mid_message_stores_nothing_partial_and_deletes_only_whole(tmp_path: Path, store: str) -> None:
    dest = tmp_path / ("box.mbox" if store == "mbox" else "md")
    where = ["--mbox", str(dest)] if store == "mbox" else ["--maildir", str(dest)]
    if store == "mbox":  # the spool of message 2 fits, appending it after message 1 does not
        originals, limit = [_message(1, 300_000), _message(2, 200_000), _message(3, 1000)], 400_000
    else:  # each message is its own file: message 2's does not fit
        originals, limit = [_message(1, 100_000), _message(2, 300_000), _message(3, 1000)], 200_000

    def small_disk() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    with POP3TestServer(mailbox=Mailbox(originals), stls=False) as srv:
        full = cli("fetch", *account(srv), *where, "--delete", preexec_fn=small_disk)
        assert full.returncode == 1, full.stderr
        assert "cannot write" in full.stderr and "free some space" in full.stderr
        no_traceback(full.stderr)
        held = mbox_messages(dest) if store == "mbox" else maildir_messages(dest)
        assert held == [lf(originals[0]) if store == "mbox" else crlf(originals[0])]
        if store == "mbox":
            assert b"message 2" not in dest.read_bytes(), "the partial append was not cut off"
        # Only the stored message was deleted; message 2 is still on the server.
        assert srv.mailbox.messages == [Mailbox([m]).messages[0] for m in originals[1:]]
        again = cli("fetch", *account(srv), *where, "--delete")
        assert again.returncode == 0, again.stderr
        assert len(srv.mailbox) == 0
    held = mbox_messages(dest) if store == "mbox" else [lf(m) for m in maildir_messages(dest)]
    assert held == sorted(lf(m) for m in originals)


def test_truncated_mbox_tail_is_not_trusted_and_is_cut(tmp_path: Path) -> None:
    """A run killed mid-append leaves a message shorter than its From_ line says, and the
    journal recorded before its first byte: the next run cuts it off and fetches it again
    instead of deleting it on the strength of its tag."""
    originals = [_message(1, 5000), _message(2, 5000)]
    dest = tmp_path / "box.mbox"
    with POP3TestServer(mailbox=Mailbox(originals), stls=False) as srv:
        assert cli("fetch", *account(srv), "--mbox", str(dest)).returncode == 0
        whole = dest.read_bytes()
        state = tmp_path / "box.mbox.fastpoplib"
        for f in state.glob("*.json"):
            f.unlink()  # as if killed before the state was saved
        start = whole.rindex(b"\nFrom fpl-") + 1
        from_line = whole[start : whole.index(b"\n", start) + 1]
        journal = state / "append.json"  # what the killed append wrote before its first byte
        journal.write_text(json.dumps({"start": start, "from": from_line.decode()}))
        journal.chmod(0o600)
        os.truncate(dest, len(whole) - 3000)  # message 2 is cut in its middle
        out = cli("fetch", *account(srv), "--mbox", str(dest), "--delete")
        assert out.returncode == 0, out.stderr
        assert "1 new message(s)" in out.stdout and "2 deleted" in out.stdout
    assert mbox_messages(dest) == sorted(lf(m) for m in originals)


# --- 2, 3. UIDs: reuse by the server, non-ASCII bytes ---------------------------------------


def test_uid_reused_by_the_server_is_a_new_message(tmp_path: Path) -> None:
    box = Mailbox([_message(1, 100), _message(2, 100)], uids=["1", "2"])
    md = tmp_path / "md"
    with POP3TestServer(mailbox=box, stls=False) as srv:
        first = cli("fetch", *account(srv), "--maildir", str(md), "--delete")
        assert first.returncode == 0 and "2 new message(s)" in first.stdout, first.stderr
        assert len(srv.mailbox) == 0
        box.add(_message(3, 400), uid="1")  # the server hands out UID 1 again
        second = cli("fetch", *account(srv), "--maildir", str(md), "--delete")
        assert second.returncode == 0, second.stderr
        assert "1 new message(s)" in second.stdout and "1 deleted" in second.stdout
    assert [lf(m) for m in maildir_messages(md)] == sorted(
        lf(_message(i, s)) for i, s in ((1, 100), (2, 100), (3, 400))
    )


def test_uids_differing_only_in_non_ascii_bytes(tmp_path: Path) -> None:
    uids = [b"msg-\xe9".decode("utf-8", "surrogateescape"), b"msg-\xe8".decode("utf-8", "surrogateescape")]
    box = Mailbox([_message(1, 100), _message(2, 100)], uids=uids, any_uids=True)
    md = tmp_path / "md"
    with POP3TestServer(mailbox=box, stls=False) as srv:
        out = cli("fetch", *account(srv), "--maildir", str(md), "--delete")
        assert out.returncode == 0, out.stderr
        assert "2 new message(s)" in out.stdout and "2 deleted" in out.stdout
    assert len(maildir_messages(md)) == 2


def test_duplicate_uids_are_told_apart_by_content(tmp_path: Path) -> None:
    box = Mailbox([_message(1, 100), _message(2, 100)], uids=["same", "same"], any_uids=True)
    md = tmp_path / "md"
    with POP3TestServer(mailbox=box, stls=False) as srv:
        first = cli("fetch", *account(srv), "--maildir", str(md))
        assert first.returncode == 0 and "2 new message(s)" in first.stdout, first.stderr
        again = cli("fetch", *account(srv), "--maildir", str(md), "--delete")
        assert again.returncode == 0 and "0 new message(s)" in again.stdout and "2 deleted" in again.stdout
    assert len(maildir_messages(md)) == 2


# --- 4. one bad message ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault",
    [b"-ERR Message 3 expunged.\r\n", b"-ERR [SYS/PERM] cannot read message 3\r\n"],
    ids=["expunged", "sys-perm"],
)
def test_err_on_one_retr_skips_it_fetches_the_rest(tmp_path: Path, fault: bytes) -> None:
    md = tmp_path / "md"
    with POP3TestServer(mailbox=sample_mailbox(5), stls=False, faults=[Fault.reply(fault, on="RETR", skip=2)]) as srv:
        originals = srv.mailbox.messages
        out = cli("fetch", *account(srv), "--maildir", str(md), "--delete")
        assert out.returncode == 1, out.stderr
        assert "message 3" in out.stderr and "tried again next run" in out.stderr
        no_traceback(out.stderr)
        assert "4 new message(s)" in out.stdout and "4 deleted" in out.stdout
        assert srv.mailbox.messages == [originals[2]]
        again = cli("fetch", *account(srv), "--maildir", str(md), "--delete")
        assert again.returncode == 0 and "1 new message(s)" in again.stdout, again.stderr
    assert maildir_messages(md) == sorted(originals)


def test_line_over_the_limit_skips_that_message_in_a_new_session(tmp_path: Path) -> None:
    messages = [_message(i, 200) for i in range(1, 6)]
    messages[2] = b"Subject: long line\n\n" + b"y" * (2 << 20) + b"\n"
    md = tmp_path / "md"
    with POP3TestServer(mailbox=Mailbox(messages), stls=False) as srv:
        out = cli("fetch", *account(srv), "--maildir", str(md), "--delete")
        assert out.returncode == 1, out.stderr
        assert "message 3" in out.stderr and "line" in out.stderr
        assert "4 new message(s)" in out.stdout
        assert len(srv.mailbox) == 1 and srv.mailbox[0].data.startswith(b"Subject: long line")
    assert len(maildir_messages(md)) == 4


def test_a_resumed_session_waits_for_the_lock_of_the_lost_one(tmp_path: Path) -> None:
    """The server answers [IN-USE] to the session that resumes after a broken message, as a
    real server does until it notices the lost session's close: the login is tried again."""
    messages = [_message(i, 200) for i in range(1, 6)]
    messages[2] = b"Subject: long line\n\n" + b"y" * (2 << 20) + b"\n"
    still_locked = Fault.reply(b"-ERR [IN-USE] maildrop locked\r\n", on="PASS", skip=1, times=2)
    md = tmp_path / "md"
    with POP3TestServer(mailbox=Mailbox(messages), stls=False, sasl=(), faults=[still_locked]) as srv:
        out = cli("fetch", *account(srv), "--maildir", str(md), "--delete")
        assert out.returncode == 1, out.stderr
        assert "message 3" in out.stderr and "IN-USE" not in out.stderr
        assert "4 new message(s)" in out.stdout
    assert len(maildir_messages(md)) == 4


def test_large_message_is_streamed_and_stored_whole(tmp_path: Path) -> None:
    big = b"Subject: big\n\n" + b"".join(b"%08d %s\n" % (i, b"z" * 90) for i in range(60_000))  # ~6 MB
    with POP3TestServer(mailbox=Mailbox([big, _message(2, 100)]), stls=False) as srv:
        for store in (["--maildir", str(tmp_path / "md")], ["--mbox", str(tmp_path / "box")]):
            out = cli("fetch", *account(srv), *store)
            assert out.returncode == 0 and "2 new message(s)" in out.stdout, out.stderr
    assert sorted(lf(m) for m in maildir_messages(tmp_path / "md")) == sorted([big, _message(2, 100)])
    assert mbox_messages(tmp_path / "box") == sorted([big, _message(2, 100)])


# --- 5. overlapping runs ----------------------------------------------------------------------


def test_overlapping_runs_of_one_account_never_fetch_twice(tmp_path: Path) -> None:
    md = tmp_path / "md"
    slow = Fault.stall(0.05, on="RETR", times=None)
    # allow_concurrent: the server would let both runs in; only our lock keeps them apart.
    with POP3TestServer(mailbox=sample_mailbox(20), stls=False, allow_concurrent=True, faults=[slow]) as srv:
        first = spawn("fetch", *account(srv), "--maildir", str(md))
        wait_for(lambda: bool(srv.sessions) and srv.sessions[0].user is not None, "the first run to log in")
        busy = cli("fetch", *account(srv), "--maildir", str(md))
        assert busy.returncode == 5, busy.stderr
        assert "another fastpoplib fetch" in busy.stderr and "--wait" in busy.stderr
        waiting = spawn("fetch", *account(srv), "--maildir", str(md), "--wait", "60")
        out, err = first.communicate(timeout=60)
        assert first.returncode == 0, err
        out, err = waiting.communicate(timeout=60)
        assert waiting.returncode == 0 and "0 new message(s)" in out, err
        assert maildir_messages(md) == sorted(srv.mailbox.messages)


def test_ctrl_c_clears_the_progress_bar(tmp_path: Path) -> None:
    md = tmp_path / "md"
    slow = Fault.stall(0.05, on="RETR", times=None)
    with POP3TestServer(mailbox=sample_mailbox(40), stls=False, faults=[slow]) as srv:
        terminal, stderr_end = pty.openpty()  # stderr is a terminal: the bar is drawn
        fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a new pty is 0 wide
        proc = subprocess.Popen(
            [sys.executable, "-m", "fastpoplib", "fetch", *account(srv), "--maildir", str(md)],
            env=ENV,
            stdout=subprocess.DEVNULL,
            stderr=stderr_end,
        )
        os.close(stderr_end)
        seen = bytearray()

        def read_terminal() -> None:
            while True:
                try:
                    data = os.read(terminal, 4096)
                except OSError:  # EIO: the child closed its end
                    return
                if not data:
                    return
                seen.extend(data)

        reader = threading.Thread(target=read_terminal, daemon=True)
        reader.start()
        try:
            wait_for(lambda: len(maildir_messages(md)) >= 3 if md.exists() else False, "some messages to be stored")
            proc.send_signal(signal.SIGINT)
            assert proc.wait(30) == 130
            reader.join(30)
        finally:
            proc.kill()
            os.close(terminal)
    text = seen.decode("utf-8", "replace")
    assert "fetching" in text and "Traceback" not in text
    before, _, after = text.partition("fastpoplib: interrupted")
    assert after, text
    assert not any("fetching" in line for line in screen(before)), f"the bar was left drawn: {before[-200:]!r}"


def test_ctrl_c_while_waiting_for_a_lock_exits_at_once(tmp_path: Path) -> None:
    md = tmp_path / "md"
    slow = Fault.stall(0.5, on="RETR", times=None)  # the first run holds the lock for 15 s
    with POP3TestServer(mailbox=sample_mailbox(30), stls=False, allow_concurrent=True, faults=[slow]) as srv:
        first = spawn("fetch", *account(srv), "--maildir", str(md))
        try:
            wait_for(lambda: bool(srv.sessions) and srv.sessions[0].user is not None, "the first run to log in")
            waiting = spawn("fetch", *account(srv), "--maildir", str(md), "--wait", "600")
            locks = list((md / ".fastpoplib").glob("*.lock"))
            wait_for(lambda: any(has_open(waiting.pid, lock) for lock in locks), "the second run to wait for the lock")
            waiting.send_signal(signal.SIGINT)
            _, err = waiting.communicate(timeout=10)  # not after --wait's 600 s
            assert waiting.returncode == 130 and "Traceback" not in err, err
        finally:
            first.kill()
            first.communicate()


# --- 6. no UIDL, session lost before QUIT -----------------------------------------------------


def test_no_uidl_and_a_lost_session_duplicates_nothing(tmp_path: Path) -> None:
    md = tmp_path / "md"
    with POP3TestServer(mailbox=sample_mailbox(4), stls=False, uidl=False, faults=[Fault.disconnect(on="QUIT")]) as srv:
        originals = srv.mailbox.messages
        lost = cli("fetch", *account(srv), "--maildir", str(md), "--delete")
        assert lost.returncode == 4 and "quitting" in lost.stderr, lost.stderr
        assert len(srv.mailbox) == 4 and len(maildir_messages(md)) == 4
        again = cli("fetch", *account(srv), "--maildir", str(md), "--delete")
        assert again.returncode == 0, again.stderr
        assert "0 new message(s)" in again.stdout and "4 deleted" in again.stdout
        assert len(srv.mailbox) == 0
    assert maildir_messages(md) == sorted(originals)


def test_no_uidl_without_delete_is_refused_with_a_reason(tmp_path: Path) -> None:
    with POP3TestServer(mailbox=sample_mailbox(2), stls=False, uidl=False) as srv:
        out = cli("fetch", *account(srv), "--maildir", str(tmp_path / "md"))
    assert out.returncode == 2 and "no UIDL" in out.stderr and "--delete" in out.stderr


# --- 7. mbox locked by another program ------------------------------------------------------

_HOLDER = """
import mailbox, os, sys
path = sys.argv[1]
box = mailbox.mbox(path)
box.lock()  # lockf + dotlock, as mail programs do
fd = os.open(path, os.O_WRONLY | os.O_APPEND)
os.write(fd, b"From someone@example.org Sat Jan  1 00:00:00 2000\\nSubject: theirs\\n\\nfirst half\\n")
print("locked", flush=True)
sys.stdin.readline()
os.write(fd, b"second half\\n\\n")
box.unlock()
box.close()
os.close(fd)
"""


def test_mbox_held_by_another_program_is_not_written_until_released(tmp_path: Path) -> None:
    dest = tmp_path / "inbox"
    dest.write_bytes(b"")
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(dest)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        with POP3TestServer(mailbox=sample_mailbox(3), stls=False) as srv:
            gave_up = cli("fetch", *account(srv), "--mbox", str(dest), "--mbox-lock-wait", "1")
            assert gave_up.returncode == 1 and "locked by another program" in gave_up.stderr, gave_up.stderr
            assert b"fpl-" not in dest.read_bytes()
            waiting = spawn("fetch", *account(srv), "--mbox", str(dest), "--mbox-lock-wait", "60")
            wait_for(lambda: has_open(waiting.pid, dest), "the second run to wait for the locks")
            assert waiting.poll() is None and b"fpl-" not in dest.read_bytes()
            holder.communicate("go\n", timeout=30)
            out, err = waiting.communicate(timeout=60)
            assert waiting.returncode == 0 and "3 new message(s)" in out, err
            originals = srv.mailbox.messages
    finally:
        holder.kill()
        holder.wait()
    held = mbox_messages(dest)
    assert b"Subject: theirs\n\nfirst half\nsecond half\n" in held
    assert sorted(m for m in held if b"theirs" not in m) == sorted(lf(m) for m in originals)
    assert not Path(f"{dest}.lock").exists()


def test_two_accounts_appending_to_one_mbox_do_not_interleave(tmp_path: Path) -> None:
    dest = tmp_path / "inbox"
    with (
        POP3TestServer(mailbox=sample_mailbox(20), stls=False) as a,
        POP3TestServer(mailbox=sample_mailbox(20, seed=7), stls=False) as b,
    ):
        config = tmp_path / "c.toml"
        config.write_text(
            f"[defaults]\ntls = 'none'\ninsecure = true\nuser = 'user'\npassword_env = 'POP_PW'\nmbox = '{dest}'\n"
            f"[[account]]\nname = 'a'\nhost = '{a.host}'\nport = {a.port}\n"
            f"[[account]]\nname = 'b'\nhost = '{b.host}'\nport = {b.port}\n"
        )
        out = cli("fetch", "--config", str(config))
        originals = a.mailbox.messages + b.mailbox.messages
    assert out.returncode == 0, out.stderr
    assert mbox_messages(dest) == sorted(lf(m) for m in originals)


# --- 8, 17. one account's failure is its own; messages say what to do ----------------------


def test_failing_accounts_do_not_sink_the_healthy_one(tmp_path: Path) -> None:
    good = POP3TestServer(mailbox=sample_mailbox(3), stls=False)
    busy = POP3TestServer(stls=False, greeting=b"-ERR [SYS/TEMP] too busy")
    plain = POP3TestServer(stls=False)
    tls = POP3TestServer(tls="implicit")
    with good, busy, plain, tls:
        config = tmp_path / "accounts.toml"
        config.write_text(
            "[defaults]\nuser = 'user'\npassword_env = 'POP_PW'\n"
            f"[[account]]\nname = 'good'\nhost = '{good.host}'\nport = {good.port}\ntls = 'none'\ninsecure = true\nmaildir = '{tmp_path / 'G'}'\n"
            f"[[account]]\nname = 'busy'\nhost = '{busy.host}'\nport = {busy.port}\ntls = 'none'\ninsecure = true\nmaildir = '{tmp_path / 'B'}'\n"
            f"[[account]]\nname = 'nostls'\nhost = '{plain.host}'\nport = {plain.port}\ntls = 'starttls'\nmaildir = '{tmp_path / 'S'}'\n"
            f"[[account]]\nname = 'badca'\nhost = '{tls.host}'\nport = {tls.port}\ncafile = '{tmp_path / 'missing.pem'}'\nmaildir = '{tmp_path / 'C'}'\n"
            f"[[account]]\nname = 'untrusted'\nhost = '{tls.host}'\nport = {tls.port}\nmaildir = '{tmp_path / 'U'}'\n"
        )
        out = cli("fetch", "--config", str(config))
    no_traceback(out.stderr, out.stdout)
    assert out.returncode == 1, out.stderr
    assert len(maildir_messages(tmp_path / "G")) == 3
    lines = {line.split(":", 1)[0]: line for line in out.stderr.splitlines() if "FAILED" in line}
    assert set(lines) == {"busy", "nostls", "badca", "untrusted"}, out.stderr
    assert "too busy" in lines["busy"] and "try again later" in lines["busy"]
    assert "STARTTLS" in lines["nostls"] and "--tls implicit" in lines["nostls"]
    assert "missing.pem" in lines["badca"] and "--cafile" in lines["badca"]
    assert "--cafile" in lines["untrusted"] and "context=" not in lines["untrusted"] and "('" not in lines["untrusted"]


def test_usage_errors_name_what_to_do(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with POP3TestServer(mailbox=sample_mailbox(1), stls=False) as srv:
        uncreatable = cli("fetch", *account(srv), "--maildir", str(blocker / "Maildir"))
        assert uncreatable.returncode == 2 and "cannot create the Maildir" in uncreatable.stderr, uncreatable.stderr
        failing = cli("fetch", *account(srv)[:-2], "--password-command", "false", "--maildir", str(tmp_path / "m"))
        assert failing.returncode == 2 and "--password-command" in failing.stderr and "exit status 1" in failing.stderr
        config = tmp_path / "c.toml"
        config.write_text(f"[[account]]\nname = 'a'\nhost = '{srv.host}'\nuser = 'u'\n")
        nosuch = cli("fetch", "--config", str(config), "--account", "nosuch")
        assert nosuch.returncode == 2 and "no account named 'nosuch'" in nosuch.stderr and "a" in nosuch.stderr
    for out in (uncreatable, failing, nosuch):
        no_traceback(out.stderr)
        assert "user@" in out.stderr or "fastpoplib:" in out.stderr


# --- 9. QUIT refused ------------------------------------------------------------------------


def test_deletions_are_reported_only_after_quit_ok(tmp_path: Path) -> None:
    md = tmp_path / "md"
    refuse = Fault.reply(b"-ERR cannot commit deletions\r\n", on="QUIT")
    with POP3TestServer(mailbox=sample_mailbox(3), stls=False, faults=[refuse]) as srv:
        out = cli("fetch", *account(srv), "--maildir", str(md), "--delete")
        assert out.returncode == 1, out.stderr
        assert "deleted on server" not in out.stdout and "refused QUIT" in out.stderr
        assert len(srv.mailbox) == 3
        again = cli("fetch", *account(srv), "--maildir", str(md), "--delete")
        assert again.returncode == 0 and "0 new message(s)" in again.stdout and "3 deleted" in again.stdout
        assert len(srv.mailbox) == 0
    assert len(maildir_messages(md)) == 3


# --- 10. damaged state file -----------------------------------------------------------------


@pytest.mark.parametrize("store", ["maildir", "mbox"])
def test_truncated_state_file_is_rebuilt_from_the_store(tmp_path: Path, store: str) -> None:
    where = ["--maildir", str(tmp_path / "md")] if store == "maildir" else ["--mbox", str(tmp_path / "box")]
    state_dir = tmp_path / "md" / ".fastpoplib" if store == "maildir" else tmp_path / "box.fastpoplib"
    with POP3TestServer(mailbox=sample_mailbox(4), stls=False) as srv:
        assert cli("fetch", *account(srv), *where).returncode == 0
        (state,) = state_dir.glob("*.json")
        state.write_bytes(state.read_bytes()[:20])
        out = cli("fetch", *account(srv), *where)
        assert out.returncode == 0 and "0 new message(s)" in out.stdout, out.stderr
        assert "damaged" in out.stderr
    assert len(json.loads(state.read_bytes())["keys"]) == 4


# --- 11, 12, 13. ls ---------------------------------------------------------------------------


def test_ls_without_top_and_on_errors(tmp_path: Path) -> None:
    with POP3TestServer(mailbox=sample_mailbox(3), stls=False, top=False) as srv:
        out = cli("ls", *account(srv), "--json")
        assert out.returncode == 0, out.stderr
        rows = json.loads(out.stdout)
        assert [r["number"] for r in rows] == [1, 2, 3] and all(r["uid"] and r["subject"] == "" for r in rows)
        assert "TOP" in out.stderr
        wrong = cli("ls", *account(srv)[:-2], "--password-command", "echo wrong")
        assert wrong.returncode == 3 and "login refused" in wrong.stderr
    refused = cli(
        "ls",
        "--host",
        "127.0.0.1",
        "--port",
        "1",
        "--user",
        "u",
        "--tls",
        "none",
        "--insecure",
        "--password-env",
        "POP_PW",
    )
    assert refused.returncode == 4 and "connection failed" in refused.stderr
    no_traceback(out.stderr, wrong.stderr, refused.stderr)


def test_ls_lists_every_config_account(tmp_path: Path) -> None:
    with (
        POP3TestServer(mailbox=sample_mailbox(2), stls=False) as a,
        POP3TestServer(mailbox=sample_mailbox(3), stls=False) as b,
    ):
        config = tmp_path / "c.toml"
        config.write_text(
            "[defaults]\ntls = 'none'\ninsecure = true\nuser = 'user'\npassword_env = 'POP_PW'\n"
            f"[[account]]\nname = 'a'\nhost = '{a.host}'\nport = {a.port}\n"
            f"[[account]]\nname = 'b'\nhost = '{b.host}'\nport = {b.port}\n"
        )
        out = cli("ls", "--config", str(config), "--json")
        text = cli("ls", "--config", str(config))
    assert out.returncode == 0, out.stderr
    assert [(r["account"], r["number"]) for r in json.loads(out.stdout)] == [
        ("a", 1),
        ("a", 2),
        ("b", 1),
        ("b", 2),
        ("b", 3),
    ]
    assert "== a" in text.stdout and "== b" in text.stdout


def test_list_lines_with_text_after_the_size(tmp_path: Path) -> None:
    with POP3TestServer(mailbox=sample_mailbox(2), stls=False, list_text="(Subject: hello)") as srv:
        fetched = cli("fetch", *account(srv), "--maildir", str(tmp_path / "md"))
        listed = cli("ls", *account(srv), "--json")
    assert fetched.returncode == 0 and "2 new message(s)" in fetched.stdout, fetched.stderr
    assert listed.returncode == 0 and len(json.loads(listed.stdout)) == 2


def test_control_characters_from_the_server_are_neutralised(tmp_path: Path) -> None:
    hostile = b"From: \x1b]52;c;aGVsbG8=\x07 <evil@example.org>\nSubject: \x1b[2Jcleared\x9b31m\n\nbody\n"
    bad_retr = Fault.reply(b"-ERR no \x1b[2J way\r\n", on="RETR")
    with POP3TestServer(mailbox=Mailbox([hostile]), stls=False) as srv:
        listed = cli("ls", *account(srv))
        srv.add_fault(bad_retr)
        fetched = cli("fetch", *account(srv), "--maildir", str(tmp_path / "md"))
    assert listed.returncode == 0, listed.stderr
    assert fetched.returncode == 1
    for text in (listed.stdout, listed.stderr, fetched.stdout, fetched.stderr):
        assert not any(ch in text for ch in "\x1b\x07\x9b"), repr(text)
    assert "\\x1b[2Jcleared" in listed.stdout and "no \\x1b[2J way" in fetched.stderr


# --- 14. permissions --------------------------------------------------------------------------


def test_store_files_are_private_under_a_permissive_umask(tmp_path: Path) -> None:
    def umask_022() -> None:
        os.umask(0o022)

    existing = tmp_path / "shared"
    existing.mkdir(mode=0o750)
    existing.chmod(0o750)
    with POP3TestServer(mailbox=sample_mailbox(2), stls=False) as srv:
        for where in (
            ["--maildir", str(tmp_path / "a" / "md")],
            ["--mbox", str(tmp_path / "b" / "box")],
            ["--maildir", str(existing)],
        ):
            out = cli("fetch", *account(srv), *where, preexec_fn=umask_022)
            assert out.returncode == 0, out.stderr

    def mode(p: Path) -> int:
        return stat.S_IMODE(p.stat().st_mode)

    md = tmp_path / "a" / "md"
    for d in (
        tmp_path / "a",
        md,
        md / "new",
        md / "cur",
        md / "tmp",
        md / ".fastpoplib",
        tmp_path / "b",
        tmp_path / "b" / "box.fastpoplib",
    ):
        assert mode(d) == 0o700, d
    files = [
        *(md / "new").iterdir(),
        *(md / ".fastpoplib").iterdir(),
        tmp_path / "b" / "box",
        *(tmp_path / "b" / "box.fastpoplib").iterdir(),
    ]
    assert files and all(mode(f) == 0o600 for f in files), {str(f): oct(mode(f)) for f in files}
    assert mode(existing) == 0o750, "an existing directory's mode was changed"


# --- 15. numbers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "value", "named"),
    [
        ("--max-messages", "0", "max_messages"),
        ("--max-messages", "-1", "max_messages"),
        ("--max-size", "0", "max_size"),
        ("--timeout", "0", "timeout"),
        ("--timeout", "-1", "timeout"),
        ("--timeout", "nan", "timeout"),
        ("--port", "99999", "port"),
        ("--port", "0", "port"),
        ("--wait", "-1", "wait"),
    ],
)
def test_bad_numbers_are_usage_errors(tmp_path: Path, option: str, value: str, named: str) -> None:
    out = cli(
        "fetch",
        "--host",
        "127.0.0.1",
        "--user",
        "u",
        "--password-env",
        "POP_PW",
        "--maildir",
        str(tmp_path / "m"),
        option,
        value,
    )
    assert out.returncode == 2, out.stderr
    assert named in out.stderr and option in out.stderr
    no_traceback(out.stderr)


def test_port_as_a_string_in_toml_is_a_usage_error(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[[account]]\nhost = '127.0.0.1'\nuser = 'u'\nport = \"21110\"\n")
    out = cli("fetch", "--config", str(config))
    assert out.returncode == 2 and "port" in out.stderr and "'21110'" in out.stderr
    no_traceback(out.stderr)


# --- 16. Ctrl-C ---------------------------------------------------------------------------------


@pytest.mark.parametrize("store", ["maildir", "mbox"])
def test_ctrl_c_exits_130_quietly_and_saves_the_state(tmp_path: Path, store: str) -> None:
    dest = tmp_path / ("md" if store == "maildir" else "box")
    where = ["--maildir", str(dest)] if store == "maildir" else ["--mbox", str(dest)]
    slow = Fault.stall(0.05, on="RETR", times=None)
    with POP3TestServer(mailbox=sample_mailbox(40), stls=False, faults=[slow]) as srv:
        originals = srv.mailbox.messages
        proc = spawn("fetch", *account(srv), *where, "--delete")

        def stored() -> int:
            if store == "maildir":
                return len(maildir_messages(dest))
            return dest.exists() and dest.read_bytes().count(b"From fpl-") or 0

        wait_for(lambda: stored() >= 3, "some messages to be stored")
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=30)
        assert proc.returncode == 130, err
        assert "interrupted" in err and "Traceback" not in err and "CancelledError" not in err
        assert len(err.splitlines()) == 1, err
        if store == "maildir":
            assert not list((dest / "tmp").iterdir()), "a half-stored message was left in tmp/"
        state_dir = dest / ".fastpoplib" if store == "maildir" else tmp_path / "box.fastpoplib"
        (state,) = state_dir.glob("*.json")
        assert len(json.loads(state.read_bytes())["keys"]) == stored()
        assert not list(state_dir.glob("spool.*"))
        assert len(srv.mailbox) == 40, "nothing is deleted without QUIT"
        srv.clear_faults()
        again = cli("fetch", *account(srv), *where, "--delete")
        assert again.returncode == 0, again.stderr
        assert len(srv.mailbox) == 0
    held = maildir_messages(dest) if store == "maildir" else mbox_messages(dest)
    assert held == sorted(originals if store == "maildir" else [lf(m) for m in originals])
