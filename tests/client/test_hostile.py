"""Hostile and broken servers, built on the test server's fault hooks. Each case ends with a
specific exception within the timeout, bounded memory, and a connection that can still be
closed; never a hang, a crash, or partial data returned as success. Sync and async."""

from __future__ import annotations

import time
from typing import Any

import pytest

import fastpoplib
from support.clients import connect, iterate, logged_in
from fastpoplib.testing import Fault

TIMEOUT = 1.0


def expect(kind: str, srv: Any, exc: type, call: Any, *, login: bool = True, match: Any = None) -> None:
    p = logged_in(kind, srv.host, srv.port, timeout=TIMEOUT) if login else connect(kind, srv.host, srv.port, timeout=TIMEOUT)
    started = time.monotonic()
    with pytest.raises(exc, match=match):
        call(p)
    assert time.monotonic() - started < TIMEOUT + 2
    p.close()


@pytest.mark.parametrize("greeting,exc", [
    (b"", fastpoplib.ConnectionClosedError),                   # closes before greeting
    (b"220 smtp.example.com ESMTP\r\n", fastpoplib.ServerError),  # not POP3 at all
    (b"-ERR [SYS/PERM] go away\r\n", fastpoplib.SysPermError),
    (b"+OK " + b"g" * 5000 + b"\r\n", fastpoplib.RemoteProtocolError),
])
def test_bad_greetings(kind: str, greeting: bytes, exc: type, pop3_server: Any) -> None:
    fault = Fault.disconnect_after(greeting, on="greeting") if greeting else Fault.disconnect(on="greeting")
    pop3_server.add_fault(fault)
    with pytest.raises(exc):
        connect(kind, pop3_server.host, pop3_server.port, timeout=TIMEOUT)
    assert pop3_server.wait_for_sessions_closed()


def test_missing_greeting_times_out(kind: str, pop3_server: Any) -> None:
    pop3_server.add_fault(Fault.stall(10, on="greeting"))
    started = time.monotonic()
    with pytest.raises(fastpoplib.POP3TimeoutError):
        connect(kind, pop3_server.host, pop3_server.port, timeout=0.5)
    assert time.monotonic() - started < 2


def test_drip_feeding_server_hits_the_timeout_per_read(kind: str, pop3_server: Any) -> None:
    # One byte every 1.5 s: every read waits longer than the 1 s timeout.
    pop3_server.add_fault(Fault.drip(b"+OK 1 100\r\n", 1.5, on="STAT"))
    expect(kind, pop3_server, fastpoplib.POP3TimeoutError, lambda p: p.stat())


@pytest.mark.parametrize("reply,call,match", [
    (b"+OK\r\n1 abc\r\n.\r\n", lambda p: p.messages(), "LIST"),
    (b"+OK\r\nnonsense\r\n.\r\n", lambda p: p.messages(), "LIST"),
    (b"+OK 99999999999999999999999999 1\r\n", lambda p: p.stat(), None),
    (b"+OK\r\n", lambda p: p.stat(), "STAT"),
])
def test_malformed_replies(kind: str, reply: bytes, call: Any, match: Any, pop3_server: Any) -> None:
    verb = "STAT" if "stat" in call.__code__.co_names else "LIST"
    pop3_server.add_fault(Fault.reply(reply, on=verb))
    p = logged_in(kind, pop3_server.host, pop3_server.port, timeout=TIMEOUT)
    if match is None:  # a huge number is still a number: Python ints do not overflow
        assert call(p)[0] == 99999999999999999999999999
    else:
        with pytest.raises(fastpoplib.RemoteProtocolError, match=match):
            call(p)
    p.close()


def test_nul_and_8bit_bytes_pass_through(kind: str, pop3_server_factory: Any) -> None:
    body = b"nul\x00byte and \xff\xfe invalid utf-8"
    srv = pop3_server_factory(mailbox=[b"Subject: x\r\n\r\n" + body + b"\r\n"])
    p = logged_in(kind, srv.host, srv.port)
    assert p.retr(1)[1][-1] == body
    p.quit()


def test_disconnect_during_batch(kind: str, pop3_server: Any) -> None:
    pop3_server.add_fault(Fault.disconnect(on="RETR", skip=3))
    p = logged_in(kind, pop3_server.host, pop3_server.port, timeout=TIMEOUT)
    got = []
    with pytest.raises(fastpoplib.ConnectionClosedError):
        for number, _ in iterate(kind, p, p.retr_many(range(1, 13))):
            got.append(number)
    assert got == [1, 2, 3]  # the messages before the cut, never a partial one
    p.close()


def test_sasl_garbage_challenge(kind: str, pop3_server: Any) -> None:
    pop3_server.add_fault(Fault.reply(b"+ !!!not base64!!!\r\n", on="AUTH"))
    p = connect(kind, pop3_server.host, pop3_server.port, timeout=TIMEOUT)
    with pytest.raises(fastpoplib.RemoteProtocolError, match="not base64"):
        p.auth("CRAM-MD5", lambda challenge: "user digest", initial_response_ok=False)
    assert "USER" in p.capa()  # the exchange was cancelled cleanly: the session goes on
    p.quit()
