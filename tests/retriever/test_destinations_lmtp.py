"""`fastpoplib fetch --lmtp`: Dovecot's POP3 as the source, Dovecot's LMTP server delivering
to another user's mailbox (read back over IMAP), the CLI run in subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.dovecot import PASSWORD, InteropDovecot, add_users
from fastpoplib.testing import sample_mailbox
from test_destinations_imap import bodies, four_kb, retr_all, source_args

pytestmark = pytest.mark.timeout(120)


def run(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, POP_PW=PASSWORD, XDG_STATE_HOME=str(tmp_path / "state"))
    return subprocess.run([sys.executable, "-m", "fastpoplib", *args], capture_output=True, text=True, env=env, timeout=90, check=False)


def test_lmtp_delivers_each_message_whole_and_a_rerun_delivers_nothing(dovecot_mail: InteropDovecot, tmp_path: Path) -> None:
    users = add_users(dovecot_mail, src=sample_mailbox(6, seed=5).messages, dest=[])
    expected = retr_all(dovecot_mail, users["src"])
    target = ["--lmtp", f"{dovecot_mail.host}:{dovecot_mail.lmtp_port}", "--lmtp-recipient", users["dest"]]
    first = run("fetch", *source_args(dovecot_mail, users["src"]), *target, tmp_path=tmp_path)
    assert first.returncode == 0, first.stderr
    delivered = list(bodies(dovecot_mail, users["dest"]).elements())
    # The LMTP server prepends its trace headers (Return-Path, Delivered-To, Received): the
    # message itself follows byte for byte.
    assert sorted(next(m for m in expected if body.endswith(m)) for body in delivered) == sorted(expected)
    second = run("fetch", *source_args(dovecot_mail, users["src"]), *target, tmp_path=tmp_path)
    assert second.returncode == 0, second.stderr
    assert "0 new message(s)" in second.stdout
    assert sum(bodies(dovecot_mail, users["dest"]).values()) == 6


def test_lmtp_over_a_unix_socket_with_delete(dovecot_mail: InteropDovecot, tmp_path: Path) -> None:
    users = add_users(dovecot_mail, src=four_kb(5, "unix"), dest=[])
    socket_path = dovecot_mail.root / "run" / "lmtp"
    out = run(
        "fetch", "--delete", *source_args(dovecot_mail, users["src"]), "--lmtp", f"unix:{socket_path}", "--lmtp-recipient", users["dest"], tmp_path=tmp_path
    )
    assert out.returncode == 0, out.stderr
    assert retr_all(dovecot_mail, users["src"]) == []
    assert sum(bodies(dovecot_mail, users["dest"]).values()) == 5


def test_lmtp_4xx_keeps_the_message_for_a_later_run(dovecot_mail: InteropDovecot, tmp_path: Path) -> None:
    """The recipient's mailbox is over quota and Dovecot answers 4xx (quota_full_tempfail)."""
    users = add_users(dovecot_mail, src=four_kb(8, "tempfail"), quota_dest=[])
    expected = retr_all(dovecot_mail, users["src"])
    target = ["--lmtp", f"{dovecot_mail.host}:{dovecot_mail.lmtp_port}", "--lmtp-recipient", users["quota_dest"]]
    out = run("fetch", "--delete", *source_args(dovecot_mail, users["src"]), *target, tmp_path=tmp_path)
    assert out.returncode == 1, out.stderr
    delivered = sum(bodies(dovecot_mail, users["quota_dest"]).values())
    assert 0 < delivered < 8  # the quota (20 KB) holds a few of the 4 KB messages
    # Each of the others was tried, and kept: a temporary failure may be one message's.
    assert out.stderr.count("the LMTP server answered 452") == 8 - delivered, out.stderr
    assert "(a temporary failure); it stays on the POP server; it is tried again next run" in out.stderr
    assert retr_all(dovecot_mail, users["src"]) == expected[delivered:]  # only the delivered ones were deleted


def test_an_unreachable_lmtp_server_is_a_connection_failure(tmp_path: Path, dovecot_mail: InteropDovecot) -> None:
    users = add_users(dovecot_mail, src=sample_mailbox(1).messages)
    out = run("fetch", *source_args(dovecot_mail, users["src"]), "--lmtp", "127.0.0.1:1", "--lmtp-recipient", "x", tmp_path=tmp_path)
    assert out.returncode == 4, out.stderr
    assert "the LMTP server 127.0.0.1:1 cannot be reached" in out.stderr


def test_lmtp_5xx_is_a_failed_message_kept_on_the_server(dovecot_mail: InteropDovecot, tmp_path: Path) -> None:
    users = add_users(dovecot_mail, src=sample_mailbox(3).messages)
    expected = retr_all(dovecot_mail, users["src"])
    target = ["--lmtp", f"{dovecot_mail.host}:{dovecot_mail.lmtp_port}", "--lmtp-recipient", "nobody-here"]
    out = run("fetch", "--delete", *source_args(dovecot_mail, users["src"]), *target, tmp_path=tmp_path)
    assert out.returncode == 1, out.stderr
    # An unknown recipient refuses every message: the first refusal stops the run
    # (test_destinations_edges has the 5xx that concern one message only).
    assert out.stderr.count("the LMTP server refused the recipient nobody-here: 550") == 1, out.stderr
    assert retr_all(dovecot_mail, users["src"]) == expected


def test_an_lmtp_connection_lost_while_idle_is_opened_again(dovecot_mail: InteropDovecot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    from fastpoplib._destinations import LmtpDestination, lmtp
    from fastpoplib._store import Receipt

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    monkeypatch.setattr(lmtp, "IDLE_CHECK", 0.0)  # check before every message
    users = add_users(dovecot_mail, dest=[])
    dest = LmtpDestination(f"{dovecot_mail.host}:{dovecot_mail.lmtp_port}", users["dest"], "acct", timeout=10)
    try:
        assert dest.smtp is not None
        dest.smtp.sock.shutdown(socket.SHUT_RDWR)  # the connection is gone, as after a server's idle timeout
        delivery = dest.begin()
        delivery.write(four_kb(1, "idle")[0])
        [outcome] = delivery.commit("u1-1")
        assert isinstance(outcome, Receipt), outcome
    finally:
        dest.close()
    assert sum(bodies(dovecot_mail, users["dest"]).values()) == 1


def test_an_lmtp_server_stalled_on_one_message_costs_that_message_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A server silent after one message's DATA: that message is refused for this run (kept on
    the POP server) and the next one is delivered over a new connection."""
    import socketserver
    import threading

    from fastpoplib._destinations.lmtp import LmtpDestination
    from fastpoplib._store import Receipt, Refusal

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    release = threading.Event()

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            send = self.wfile.write
            send(b"220 test LMTP\r\n")
            for line in self.rfile:
                verb = line[:4].upper()
                if verb == b"LHLO":
                    send(b"250-test\r\n250 8BITMIME\r\n")
                elif verb == b"DATA":
                    send(b"354 go on\r\n")
                    data = b"".join(iter(self.rfile.readline, b".\r\n"))
                    if b"stall" in data:
                        release.wait(30)
                        return
                    send(b"250 2.0.0 stored\r\n")
                elif verb == b"QUIT":
                    send(b"221 bye\r\n")
                    return
                else:
                    send(b"250 ok\r\n")

    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler) as lmtp:
        lmtp.daemon_threads = True
        threading.Thread(target=lmtp.serve_forever, daemon=True).start()
        dest = LmtpDestination(f"127.0.0.1:{lmtp.server_address[1]}", "someone@example.org", "user@pop", timeout=1.0)
        try:
            stalled = dest.deliver("k1", b"Subject: stall\r\n\r\nx\r\n")
            after = dest.deliver("k2", b"Subject: fine\r\n\r\ny\r\n")
        finally:
            release.set()
            dest.close()
            lmtp.shutdown()
    assert isinstance(stalled[0], Refusal) and not stalled[0].stop
    assert "did not answer within 1 s" in stalled[0].reason
    assert isinstance(after[0], Receipt) and after[0].key == "k2"
