"""Where fastpoplib is deliberately safer than poplib, and how it fails: CRLF injection,
secrets in traces, timeouts, Ctrl-C, limits, and connections closed (not desynchronised)
after a broken reply. Sync and async alike. (Certificates and STARTTLS injection:
tests/tls/test_tls_safety.py.)"""

from __future__ import annotations

import io
import logging
import os
import signal
import threading
import time
from contextlib import redirect_stdout
from typing import Any

import pytest

import fastpoplib
from support.clients import connect, iterate
from fastpoplib.testing import Fault

USER, PASSWORD = "user", "password"


@pytest.mark.parametrize("bad", ["a\r\nDELE 1", "a\nDELE 1", "a\rDELE 1", "a\0b"])
def test_crlf_injection_is_refused_before_sending(kind: str, bad: str, pop3_server: Any) -> None:
    p = connect(kind, pop3_server.host, pop3_server.port)
    p.user(USER)
    p.pass_(PASSWORD)
    for call in (lambda: p.user(bad), lambda: p.retr(bad), lambda: p.top(1, bad), lambda: p._shortcmd(bad)):
        with pytest.raises(ValueError) as info:
            call()
        assert isinstance(info.value, fastpoplib.InvalidArgumentError)
    assert p.noop().startswith(b"+OK")  # the session is intact
    p.quit()
    (session,) = pop3_server.sessions
    assert all(b"DELE" not in line for line in session.commands)


def test_secrets_never_reach_debug_output_or_logs(kind: str, pop3_server: Any, caplog: Any) -> None:
    secret = "s3cr3t-Pa55"
    pop3_server.users["user"] = secret
    caplog.set_level(logging.DEBUG, logger="fastpoplib")
    out = io.StringIO()
    with redirect_stdout(out):
        p = connect(kind, pop3_server.host, pop3_server.port)
        p.set_debuglevel(2)
        p.user(USER)
        p.pass_(secret)
        p.quit()
        q = connect(kind, pop3_server.host, pop3_server.port)
        q.set_debuglevel(2)
        q.apop(USER, secret)
        q.quit()
        r = connect(kind, pop3_server.host, pop3_server.port)
        r.set_debuglevel(2)
        r.auth("PLAIN", lambda challenge: f"\0{USER}\0{secret}")
        r.quit()
    text = out.getvalue() + caplog.text
    assert "PASS ****" in text and "*cmd*" in text and "C: USER user" in caplog.text
    assert secret not in text
    import base64

    assert base64.b64encode(f"\0{USER}\0{secret}".encode()).decode() not in text
    assert secret not in repr(p)


def test_timeout_raises_and_closes(kind: str, pop3_server: Any) -> None:
    pop3_server.add_fault(Fault.stall(5, on="RETR"))
    p = connect(kind, pop3_server.host, pop3_server.port, timeout=0.3)
    p.user(USER)
    p.pass_(PASSWORD)
    started = time.monotonic()
    with pytest.raises(TimeoutError) as info:
        p.retr(1)
    assert isinstance(info.value, fastpoplib.POP3TimeoutError)
    assert time.monotonic() - started < 2
    with pytest.raises(fastpoplib.POP3Error, match="closed"):
        p.noop()
    p.close()
    p.close()


def test_timeout_zero_and_sock_timeout(pop3_server: Any) -> None:
    with pytest.raises(ValueError):
        fastpoplib.POP3(pop3_server.host, pop3_server.port, timeout=0)
    p = fastpoplib.POP3(pop3_server.host, pop3_server.port, timeout=7.5)
    assert p.sock.gettimeout() == 7.5
    assert p.sock.getpeername() == (pop3_server.host, pop3_server.port)
    assert p.sock.fileno() > 0
    p.quit()
    assert p.sock is None and p.file is None


def test_ctrl_c_interrupts_a_stalled_read(pop3_server: Any) -> None:
    pop3_server.add_fault(Fault.stall(10, on="RETR"))
    p = fastpoplib.POP3(pop3_server.host, pop3_server.port)  # no timeout: would wait forever
    p.user(USER)
    p.pass_(PASSWORD)
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        p.retr(1)
    elapsed = time.monotonic() - started
    assert 0.25 < elapsed < 0.3 + 0.5
    p.close()


def test_oversized_status_line_closes_connection(kind: str, pop3_server: Any) -> None:
    pop3_server.add_fault(Fault.reply(b"+OK " + b"x" * 5000 + b"\r\n", on="NOOP"))
    p = connect(kind, pop3_server.host, pop3_server.port)
    with pytest.raises(fastpoplib.RemoteProtocolError, match="line too long"):
        p.noop()
    with pytest.raises(fastpoplib.POP3Error):
        p.stat()
    p.close()


def test_maxline_assignment_is_honoured(pop3_server: Any) -> None:
    pop3_server.add_fault(Fault.reply(b"+OK " + b"x" * 3000 + b"\r\n", on="NOOP"))
    old = fastpoplib._MAXLINE
    fastpoplib._MAXLINE = 8192
    try:
        p = fastpoplib.POP3(pop3_server.host, pop3_server.port)
        assert len(p.noop()) == 3004
        p.quit()
    finally:
        fastpoplib._MAXLINE = old


def test_long_message_lines_pass_and_limits_hold(kind: str, pop3_server_factory: Any) -> None:
    long_line = b"L" * 100_000
    srv = pop3_server_factory(mailbox=[b"Subject: long\r\n\r\n" + long_line + b"\r\n.." + long_line + b"\r\n"])
    p = connect(kind, srv.host, srv.port)
    p.user(USER)
    p.pass_(PASSWORD)
    _, lines, _ = p.retr(1)
    assert lines[2] == long_line and lines[3] == b".." + long_line
    p.quit()
    q = connect(kind, srv.host, srv.port, max_line_length=50_000)
    q.user(USER)
    q.pass_(PASSWORD)
    with pytest.raises(fastpoplib.RemoteProtocolError, match="line too long"):
        q.retr(1)
    q.close()
    # close() sends no QUIT: the server drops the maildrop lock only once it sees the EOF.
    assert srv.wait_for_sessions_closed(), "the server still holds the closed session"
    r = connect(kind, srv.host, srv.port, max_response_size=1000)
    r.user(USER)
    r.pass_(PASSWORD)
    with pytest.raises(fastpoplib.RemoteProtocolError, match="too large"):
        r.retr(1)
    r.close()


def test_endless_response_is_bounded(kind: str, pop3_server: Any) -> None:
    pop3_server.add_fault(Fault.endless_lines(on="RETR", max_seconds=20))
    p = connect(kind, pop3_server.host, pop3_server.port, max_response_size=2 << 20)
    p.user(USER)
    p.pass_(PASSWORD)
    started = time.monotonic()
    with pytest.raises(fastpoplib.RemoteProtocolError, match="too large"):
        p.retr(1)
    assert time.monotonic() - started < 10
    p.close()


def test_disconnect_mid_response(kind: str, pop3_server: Any) -> None:
    pop3_server.add_fault(Fault.disconnect_after(b"+OK\r\nline 1\r\n", on="RETR"))
    p = connect(kind, pop3_server.host, pop3_server.port)
    p.user(USER)
    p.pass_(PASSWORD)
    with pytest.raises(fastpoplib.ConnectionClosedError) as info:
        p.retr(1)
    assert isinstance(info.value, ConnectionError)
    p.close()


def test_malformed_stat(kind: str, pop3_server: Any) -> None:
    pop3_server.add_fault(Fault.reply(b"+OK lots\r\n", on="STAT"))
    p = connect(kind, pop3_server.host, pop3_server.port)
    with pytest.raises(fastpoplib.RemoteProtocolError, match="STAT"):
        p.stat()
    p.quit()


def test_two_threads_on_one_connection_get_a_clear_error(pop3_server: Any) -> None:
    pop3_server.add_fault(Fault.stall(1.0, on="NOOP"))
    p = fastpoplib.POP3(pop3_server.host, pop3_server.port, timeout=5)
    p.user(USER)
    p.pass_(PASSWORD)
    worker = threading.Thread(target=p.noop)
    worker.start()
    # The second call must come while the first is in I/O: wait until the server has NOOP.
    deadline = time.monotonic() + 5
    while b"NOOP" not in pop3_server.sessions[-1].commands:
        assert time.monotonic() < deadline, "the server never received NOOP"
        time.sleep(0.01)
    with pytest.raises(fastpoplib.LocalProtocolError, match="busy with another call"):
        p.stat()
    worker.join()
    assert p.noop().startswith(b"+OK")
    p.quit()


def test_context_manager_quits_or_closes(pop3_server: Any) -> None:
    with fastpoplib.POP3(pop3_server.host, pop3_server.port) as p:
        p.user(USER)
        p.pass_(PASSWORD)
        p.dele(1)
        assert "plaintext" in repr(p)
    assert "closed" in repr(p)
    assert len(pop3_server.mailbox) == 11
    with pytest.raises(RuntimeError):
        with fastpoplib.POP3(pop3_server.host, pop3_server.port) as q:
            q.user(USER)
            q.pass_(PASSWORD)
            q.dele(2)
            raise RuntimeError("boom")
    pop3_server.wait_for_sessions_closed()
    assert pop3_server.sessions[-1].commands[-1].upper().startswith(b"DELE")


def test_greeting_error_closes_socket(pop3_server: Any) -> None:
    pop3_server.add_fault(Fault.reply(b"-ERR [SYS/TEMP] go away\r\n", on="greeting"))
    with pytest.raises(fastpoplib.SysTempError) as info:
        fastpoplib.POP3(pop3_server.host, pop3_server.port)
    assert info.value.response == b"-ERR [SYS/TEMP] go away"
    assert pop3_server.wait_for_sessions_closed()


def test_in_use_is_typed(pop3_server: Any) -> None:
    first = fastpoplib.POP3(pop3_server.host, pop3_server.port)
    first.user(USER)
    first.pass_(PASSWORD)
    second = fastpoplib.POP3(pop3_server.host, pop3_server.port)
    second.user(USER)
    with pytest.raises(fastpoplib.InUseError):
        second.pass_(PASSWORD)
    second.quit()
    first.quit()


def test_apop_refuses_malformed_and_cve_2018_1060_challenges(pop3_server_factory: Any) -> None:
    srv = pop3_server_factory(greeting=b"+OK" + b"<" * 2000)
    p = fastpoplib.POP3(srv.host, srv.port)
    started = time.monotonic()
    with pytest.raises(fastpoplib.RemoteProtocolError, match="APOP timestamp refused"):
        p.apop(USER, PASSWORD)
    assert time.monotonic() - started < 1
    p.quit()


def test_ipv6_and_source_address(kind: str, pop3_server_factory: Any) -> None:
    v6 = pop3_server_factory(host="::1")
    p = connect(kind, "::1", v6.port)
    assert p.getwelcome().startswith(b"+OK")
    p.quit()
    v4 = pop3_server_factory()
    q = connect(kind, v4.host, v4.port, source_address=("127.0.0.3", 0))
    q.quit()
    assert v4.sessions[-1].peer[0] == "127.0.0.3"


def test_rpop_is_sent_as_poplib_sends_it(pop3_server: Any) -> None:
    p = fastpoplib.POP3(pop3_server.host, pop3_server.port)
    with pytest.raises(fastpoplib.error_proto):
        p.rpop("user")
    p.quit()
    assert pop3_server.sessions[-1].commands[0] == b"RPOP user"


def test_crlf_refused_in_every_argument(kind: str, pop3_server: Any) -> None:
    bad = "1\r\nDELE 2"
    p = connect(kind, pop3_server.host, pop3_server.port)
    calls = [
        lambda: p.user(bad), lambda: p.pass_(bad), lambda: p.apop(bad, "x"), lambda: p.rpop(bad),
        lambda: p.list(bad), lambda: p.uidl(bad), lambda: p.retr(bad), lambda: p.top(bad, 0), lambda: p.top(1, bad),
        lambda: p.dele(bad), lambda: p.lang(bad), lambda: p._shortcmd(bad), lambda: p._longcmd(bad),
        lambda: p.retr_bytes(bad), lambda: p.dele_many([1, bad]),
    ]  # (SASL responses are base64: a CR/LF there cannot reach the wire as a line break)
    for call in calls:
        with pytest.raises(fastpoplib.InvalidArgumentError):
            result = call()
            if hasattr(result, "__next__") or hasattr(result, "__anext__"):
                list(iterate(kind, p, result))
    p.quit()
    assert all(b"DELE" not in line.upper() for line in pop3_server.sessions[-1].raw_lines)
