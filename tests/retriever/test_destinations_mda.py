"""`fastpoplib fetch --mda CMD` against the shipped test server, and the one-destination rule.
Each run is a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from fastpoplib.testing import Mailbox, POP3TestServer, sample_mailbox

pytestmark = pytest.mark.timeout(120)

SECRET = "pop-secret-4711"


def run(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, POP_PW=SECRET, XDG_STATE_HOME=str(tmp_path / "state"))
    return subprocess.run([sys.executable, "-m", "fastpoplib", *args], capture_output=True, text=True, env=env, timeout=60, check=False)


def account(srv: POP3TestServer) -> list[str]:
    return ["--host", srv.host, "--port", str(srv.port), "--user", "user", "--tls", "none", "--insecure", "--password-env", "POP_PW"]


def server(box: Mailbox) -> POP3TestServer:
    return POP3TestServer(mailbox=box, users={"user": SECRET}, stls=False)


def saving_mda(directory: Path, fail_on: str = "", status: int = 3) -> str:
    """An MDA that saves its standard input as a file, and refuses (exit ``status``) a message
    holding ``fail_on``."""
    directory.mkdir(exist_ok=True)
    script = 'f="$0/$$.eml"; cat > "$f"'
    if fail_on:
        script += f'; if grep -q "{fail_on}" "$f"; then rm "$f"; echo "no such mailbox" >&2; exit {status}; fi'
    return f"sh -c '{script}' {directory}"


def saved(directory: Path) -> list[bytes]:
    return sorted(p.read_bytes() for p in directory.glob("*.eml"))


def test_mda_gets_each_message_byte_for_byte_and_a_rerun_delivers_nothing(tmp_path: Path) -> None:
    box = sample_mailbox(6, seed=2)
    with server(box) as srv:
        expected = sorted(srv.mailbox.messages)  # CRLF, as RETR sends them
        first = run("fetch", *account(srv), "--mda", saving_mda(tmp_path / "out"), tmp_path=tmp_path)
        assert first.returncode == 0, first.stderr
        assert saved(tmp_path / "out") == expected
        second = run("fetch", *account(srv), "--mda", saving_mda(tmp_path / "out"), tmp_path=tmp_path)
        assert second.returncode == 0, second.stderr
        assert "0 new message(s)" in second.stdout
        assert len(saved(tmp_path / "out")) == 6


def test_mda_exit_75_keeps_every_message_for_a_later_run(tmp_path: Path) -> None:
    with server(sample_mailbox(4)) as srv:
        out = run("fetch", "--delete", *account(srv), "--mda", "sh -c 'cat >/dev/null; exit 75'", tmp_path=tmp_path)
        assert out.returncode == 1, out.stderr
        assert "try again later (exit 75)" in out.stderr and "stays on the POP server" in out.stderr
        assert len(srv.mailbox) == 4  # nothing deleted
        later = run("fetch", "--delete", *account(srv), "--mda", saving_mda(tmp_path / "out"), tmp_path=tmp_path)
        assert later.returncode == 0, later.stderr
        assert len(saved(tmp_path / "out")) == 4
        assert len(srv.mailbox) == 0


@pytest.mark.parametrize(
    "status, sentence",
    [(3, "the MDA failed (exit status 3) (no such mailbox)"), (75, "the MDA asked to try again later (exit 75) (no such mailbox)")],
)
def test_mda_failure_is_that_message_only_and_it_stays_on_the_server(tmp_path: Path, status: int, sentence: str) -> None:
    with server(sample_mailbox(6)) as srv:
        bad = [m for m in srv.mailbox.messages if b"Subject: Dots at line starts" in m]
        assert len(bad) == 1
        mda = saving_mda(tmp_path / "out", "^Subject: Dots", status)
        out = run("fetch", "--delete", *account(srv), "--mda", mda, tmp_path=tmp_path)
        assert out.returncode == 1, out.stderr
        assert sentence in out.stderr
        assert len(saved(tmp_path / "out")) == 5
        assert srv.mailbox.messages == bad  # the others were deleted


def test_the_mda_environment_holds_no_secret(tmp_path: Path) -> None:
    (tmp_path / "env").mkdir()
    with server(sample_mailbox(1)) as srv:
        out = run("fetch", *account(srv), "--mda", f"""sh -c 'env > "$0/env"; cat >/dev/null' {tmp_path / "env"}""", tmp_path=tmp_path)
        assert out.returncode == 0, out.stderr
    environment = (tmp_path / "env" / "env").read_text()
    assert "PATH=" in environment
    assert SECRET not in environment and "POP_PW" not in environment


def test_an_mda_that_cannot_run_is_a_sentence(tmp_path: Path) -> None:
    with server(sample_mailbox(2)) as srv:
        out = run("fetch", "--delete", *account(srv), "--mda", "/nonexistent/deliver -d me", tmp_path=tmp_path)
        assert out.returncode == 1
        assert "the MDA could not be run" in out.stderr and "Traceback" not in out.stderr
        assert len(srv.mailbox) == 2


@pytest.mark.parametrize(
    "options, sentence",
    [
        (["--maildir", "M", "--mda", "cat"], "an account has one destination; choose one of --maildir and --mda"),
        (["--mbox", "M", "--imap", "imaps://a@b/INBOX", "--imap-password-env", "X"], "choose one of --mbox and --imap"),
        (["--lmtp", "127.0.0.1:24"], "--lmtp needs --lmtp-recipient"),
        (["--imap", "imaps://a@b/INBOX"], "--imap needs exactly one of --imap-password-env"),
        (["--imap-cafile", "ca.pem"], "--imap-cafile is for the --imap destination"),
    ],
)
def test_destination_options_that_do_not_fit_are_usage_errors(options: list[str], sentence: str, tmp_path: Path) -> None:
    out = run("fetch", "--host", "127.0.0.1", "--port", "1", "--user", "u", "--password-env", "POP_PW", *options, tmp_path=tmp_path)
    assert out.returncode == 2, out.stderr
    assert sentence in out.stderr


def test_a_config_account_with_two_destinations_is_a_usage_error(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[defaults]\nmaildir = "~/Mail"\n\n[[account]]\nname = "work"\nhost = "h"\nuser = "u"\nmda = "cat"\n')
    out = run("fetch", "--config", str(config), tmp_path=tmp_path)
    assert out.returncode == 2
    assert "account 'work'" in out.stderr and "one destination" in out.stderr


def test_a_server_without_uidl_is_delivered_once_and_emptied(tmp_path: Path) -> None:
    """Messages told apart by content digest reach the destination's receipt the same way."""
    box = sample_mailbox(5, seed=8)
    with POP3TestServer(mailbox=box, users={"user": SECRET}, stls=False, uidl=False) as srv:
        expected = sorted(srv.mailbox.messages)
        out = run("fetch", "--delete", *account(srv), "--mda", saving_mda(tmp_path / "out"), tmp_path=tmp_path)
        assert out.returncode == 0, out.stderr
        assert len(srv.mailbox) == 0
    assert saved(tmp_path / "out") == expected


def test_status_of_imap_lmtp_and_mda_accounts_logs_in_nowhere(tmp_path: Path) -> None:
    """``fastpoplib status`` reads each account's record where its state lives, without
    connecting to the destination or running its password command."""
    marker = tmp_path / "password-command-ran"
    config = tmp_path / "c.toml"
    config.write_text(
        f"""[[account]]
name = "into-imap"
host = "127.0.0.1"
user = "u"
password_env = "POP_PW"
imap = "imaps://me@127.0.0.1:1/INBOX"
imap_password_command = "touch {marker}"

[[account]]
name = "into-lmtp"
host = "127.0.0.1"
user = "u"
password_env = "POP_PW"
lmtp = "127.0.0.1:1"
lmtp_recipient = "me"

[[account]]
name = "into-mda"
host = "127.0.0.1"
user = "u"
password_env = "POP_PW"
mda = "cat"
"""
    )
    out = run("status", "--config", str(config), tmp_path=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("last poll   never") == 3, out.stdout
    assert "cannot be opened" not in out.stdout
    assert not marker.exists()


def _alive(pid: int) -> bool:
    """Running (a zombie waiting to be reaped counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_an_mda_that_hangs_on_one_message_is_killed_with_its_children_and_the_rest_delivered(tmp_path: Path) -> None:
    out, pids = tmp_path / "out", tmp_path / "pids"
    out.mkdir()
    # On the message holding "Quarterly" the MDA starts a child that would outlive it, then hangs.
    script = f'f="$0/$$.eml"; cat > "$f"; if grep -q Quarterly "$f"; then rm "$f"; sleep 60 & echo $! > {pids}; wait; fi'
    box = Mailbox([b"Subject: one\r\n\r\na\r\n", b"Subject: Quarterly\r\n\r\nb\r\n", b"Subject: three\r\n\r\nc\r\n"])
    with server(box) as srv:
        done = run("fetch", *account(srv), "--timeout", "2", "--mda", f"sh -c '{script}' {out}", tmp_path=tmp_path)
    assert done.returncode == 1, done.stderr
    assert "did not finish within 2 s" in done.stderr and "message 2" in done.stderr
    assert "the rest" not in done.stderr
    assert [p.read_bytes() for p in sorted(out.glob("*.eml"), key=lambda p: p.read_bytes())] == [
        b"Subject: one\r\n\r\na\r\n",
        b"Subject: three\r\n\r\nc\r\n",
    ]
    assert not _alive(int(pids.read_text()))


def test_a_message_the_destination_refuses_run_after_run_points_at_the_destination(tmp_path: Path) -> None:
    """The message is fine on the POP server: after three refused runs the advice is about the
    destination (a full mailbox, a wrong recipient), not to delete it from the server."""
    with server(sample_mailbox(3)) as srv:
        for _ in range(3):
            out = run("fetch", *account(srv), "--mda", "sh -c 'cat >/dev/null; exit 75'", tmp_path=tmp_path)
            assert out.returncode == 1, out.stderr
        assert "runs in a row" in out.stderr and "make room at the destination" in out.stderr, out.stderr
        assert "webmail" not in out.stderr
