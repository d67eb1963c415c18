"""`fastpoplib fetch` when the server goes silent in the middle of one message, every time
(seen with real providers): that message is skipped like a broken one, the rest of the mailbox
keeps flowing, and after a few runs it is reported as failing persistently."""

from __future__ import annotations

from fastpoplib.testing import Fault, POP3TestServer
from support.cli import _message, account, cli, crlf, maildir_messages, no_traceback

STALLED = b"+OK here it comes\r\nFrom: sender3@example.org\r\nSubject: message 3\r\n\r\nthe first line\r\n"


def test_a_message_the_server_stalls_in_is_skipped_and_the_rest_is_fetched(tmp_path):
    box = [_message(i, 2000) for i in range(1, 6)]
    stall = Fault.stall_after(STALLED, 30, on="RETR", arg=b"3", times=None)
    with POP3TestServer(mailbox=box, faults=[stall]) as srv:
        md = tmp_path / "md"
        args = ("fetch", *account(srv), "--maildir", str(md), "--timeout", "1")
        first = cli(*args)
        no_traceback(first.stdout, first.stderr)
        assert first.returncode == 1, first.stderr
        # Messages 4 and 5 came after the stalled one: a new session fetched them.
        assert maildir_messages(md) == sorted(crlf(box[i]) for i in (0, 1, 3, 4))
        assert "message 3 (UID" in first.stderr and "sent nothing for 1 s in the middle of it" in first.stderr
        assert "tried again next run" in first.stderr
        assert stall.fired == 1

        second = cli(*args)
        assert second.returncode == 1
        assert stall.fired == 2  # retried on the next run
        assert "tried again next run" in second.stderr and "runs in a row" not in second.stderr

        third = cli(*args)
        assert third.returncode == 1
        assert stall.fired == 3
        assert "message 3 (UID" in third.stderr and "has failed in 3 runs in a row" in third.stderr
        assert "read or delete it with another client" in third.stderr
        assert len(maildir_messages(md)) == 4

        # The server recovers: the message arrives, and no longer counts as failing.
        srv.clear_faults()
        fourth = cli(*args)
        assert fourth.returncode == 0, fourth.stderr
        assert maildir_messages(md) == sorted(crlf(m) for m in box)


def test_a_stall_with_delete_deletes_only_what_was_stored(tmp_path):
    box = [_message(i, 2000) for i in range(1, 6)]
    stall = Fault.stall_after(STALLED, 30, on="RETR", arg=b"3", times=None)
    with POP3TestServer(mailbox=box, faults=[stall]) as srv:
        md = tmp_path / "md"
        r = cli("fetch", *account(srv), "--maildir", str(md), "--timeout", "1", "--delete")
        assert r.returncode == 1, r.stderr
        assert len(maildir_messages(md)) == 4
        left = srv.mailbox_for("user").messages
        assert left == [crlf(box[2])]


def test_messages_that_stall_every_run_do_not_hold_up_the_rest(tmp_path):
    box = [_message(i, 2000) for i in range(1, 6)]
    stalls = [Fault.stall_after(b"+OK\r\nSubject: x\r\n", 30, on="RETR", arg=b"%d" % n, times=None) for n in (1, 2, 3)]
    with POP3TestServer(mailbox=box, faults=stalls) as srv:
        md = tmp_path / "md"
        args = ("fetch", *account(srv), "--maildir", str(md), "--timeout", "1")
        first = cli(*args)
        assert first.returncode == 1, first.stderr
        assert "the connection was lost 3 times in this run" in first.stderr
        assert maildir_messages(md) == []
        # The next run tries the messages that failed before last: 4 and 5 arrive.
        second = cli(*args)
        assert second.returncode == 1, second.stderr
        assert maildir_messages(md) == sorted(crlf(box[i]) for i in (3, 4))
