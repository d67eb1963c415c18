""" "Nothing is stored twice" holds per store whatever the route to the mailbox: another host
name for the same server, STLS on 110 then implicit TLS on 995. Runs by different routes are
different accounts to the state; the store recognises the bytes it already holds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from support.dovecot import PASSWORD
from fastpoplib.testing import POP3TestServer
from support.cli import _message, account, cli, crlf, maildir_messages


def _via(srv: POP3TestServer, host: str) -> list[str]:
    args = account(srv)
    args[args.index("--host") + 1] = host
    return args


def test_two_host_names_for_one_server_store_each_message_once(tmp_path):
    box = [_message(i, 1500) for i in range(1, 8)]
    md = tmp_path / "md"
    with POP3TestServer(mailbox=box) as srv:
        first = cli("fetch", *_via(srv, "127.0.0.1"), "--maildir", str(md))
        assert first.returncode == 0, first.stderr
        assert "7 new message(s)" in first.stdout
        second = cli("fetch", *_via(srv, "localhost"), "--maildir", str(md))
        assert second.returncode == 0, second.stderr
        assert "0 new message(s)" in second.stdout
        assert maildir_messages(md) == sorted(crlf(m) for m in box)
        # And --delete by the second route deletes them: the store holds every one.
        third = cli("fetch", *_via(srv, "localhost"), "--maildir", str(md), "--delete")
        assert third.returncode == 0, third.stderr
        assert "7 deleted on server" in third.stdout
        assert len(srv.mailbox_for("user")) == 0
    assert len(maildir_messages(md)) == 7


def test_stls_then_implicit_tls_to_dovecot_store_each_message_once(dovecot_server, fresh_user, tmp_path: Path) -> None:
    env = dict(os.environ, DOVE_PW=PASSWORD)
    md = tmp_path / "md"
    common = ["--host", dovecot_server.host, "--user", fresh_user, "--password-env", "DOVE_PW",
              "--cafile", dovecot_server.cafile, "--maildir", str(md)]  # fmt: skip
    routes = [
        ["--tls", "starttls", "--port", str(dovecot_server.plain_port)],
        ["--tls", "implicit", "--port", str(dovecot_server.tls_port)],
    ]
    outputs = []
    for route in routes:
        r = subprocess.run([sys.executable, "-m", "fastpoplib", "fetch", *common, *route], env=env,
                           capture_output=True, text=True, timeout=120)  # fmt: skip
        assert r.returncode == 0, r.stderr
        outputs.append(r.stdout)
    assert "5 new message(s)" in outputs[0] and "0 new message(s)" in outputs[1]
    assert len(maildir_messages(md)) == 5
    assert sorted(maildir_messages(md)) == sorted(crlf(m) for m in dovecot_server.users[fresh_user])


def test_two_messages_with_identical_bytes_are_stored_once(tmp_path):
    # Where the promise stops, as the README says: the same bytes and size are one message.
    same = _message(1, 800)
    with POP3TestServer(mailbox=[same, same, _message(2, 800)]) as srv:
        r = cli("fetch", *account(srv), "--maildir", str(tmp_path / "md"), "--delete")
        assert r.returncode == 0, r.stderr
        assert "2 new message(s)" in r.stdout and "3 deleted on server" in r.stdout
    assert maildir_messages(tmp_path / "md") == sorted([crlf(same), crlf(_message(2, 800))])
