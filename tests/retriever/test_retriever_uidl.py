"""UIDL in `fastpoplib fetch`: a UIDL that fails is a temporary error, not a server without
UIDL (whose advice, --delete, would store everything again); and a message stored under its
UID is recognised when the server later lists it without one."""

from __future__ import annotations

from fastpoplib.testing import Fault, POP3TestServer
from support.cli import _message, account, cli, crlf, maildir_messages, no_traceback


def test_a_failing_uidl_is_a_temporary_error_not_no_uidl(tmp_path):
    box = [_message(i, 500) for i in range(1, 4)]
    md = tmp_path / "md"
    with POP3TestServer(mailbox=box) as srv:
        assert cli("fetch", *account(srv), "--maildir", str(md)).returncode == 0
        srv.add_fault(Fault.reply(b"-ERR [SYS/TEMP] index being rebuilt\r\n", on="UIDL", times=None))
        r = cli("fetch", *account(srv), "--maildir", str(md))
        no_traceback(r.stdout, r.stderr)
        assert r.returncode == 1, r.stderr
        assert "-ERR [SYS/TEMP] index being rebuilt" in r.stderr and "try again later" in r.stderr
        assert "--delete" not in r.stderr and "no UIDL" not in r.stderr
        # And with --delete, nothing is stored twice and nothing is deleted.
        r = cli("fetch", *account(srv), "--maildir", str(md), "--delete")
        assert r.returncode == 1, r.stderr
        assert maildir_messages(md) == sorted(crlf(m) for m in box)
        assert len(srv.mailbox_for("user")) == 3


def test_a_message_stored_under_its_uid_is_recognised_without_one(tmp_path):
    box = [_message(i, 500) for i in range(1, 4)]
    md = tmp_path / "md"
    with POP3TestServer(mailbox=box) as srv:
        assert cli("fetch", *account(srv), "--maildir", str(md)).returncode == 0
    # The same mailbox, now from a server without UIDL (CAPA does not list it).
    with POP3TestServer(mailbox=box + [_message(4, 500)], uidl=False) as srv:
        r = cli("fetch", *account(srv), "--maildir", str(md), "--delete")
        assert r.returncode == 0, r.stderr
        assert "the server has no UIDL" in r.stderr
        assert maildir_messages(md) == sorted(crlf(m) for m in box + [_message(4, 500)])
        assert len(srv.mailbox_for("user")) == 0  # all four were held by the store: deleted


def test_without_capa_a_plain_err_to_uidl_means_no_uidl(tmp_path):
    # RFC 1939 makes UIDL optional; an old server without CAPA answers it with a plain -ERR.
    box = [_message(i, 500) for i in range(1, 3)]
    with POP3TestServer(mailbox=box, uidl=False, capabilities=[]) as srv:
        srv.add_fault(Fault.reply(b"-ERR unknown command\r\n", on="CAPA", times=None))
        r = cli("fetch", *account(srv), "--maildir", str(tmp_path / "md"))
        assert r.returncode == 2, r.stderr
        assert "the server has no UIDL" in r.stderr and "--delete" in r.stderr
