"""What poplib lacks, on both clients: login() and SASL, pipelined batch calls, streaming,
parsed messages, typed exceptions for RESP-CODES."""

from __future__ import annotations

import base64
import email.message
import hashlib
import socket
import threading
from typing import Any

import pytest

import fastpoplib
from support.clients import connect, iterate, logged_in
from fastpoplib.testing import Fault

USER, PASSWORD = "user", "password"


def open_session(kind: str, server: Any, **kw: Any) -> Any:
    return logged_in(kind, server.host, server.port, USER, PASSWORD, **kw)


@pytest.mark.parametrize("pipelining", [True, False])
def test_batch_calls_match_one_by_one(kind: str, pipelining: bool, pop3_server_factory: Any) -> None:
    srv = pop3_server_factory(pipelining=pipelining)
    p = open_session(kind, srv)
    count = p.stat()[0]
    numbers = list(range(1, count + 1))
    one_by_one = [(n, p.retr(n)) for n in numbers]
    assert list(iterate(kind, p, p.retr_many(numbers))) == one_by_one
    assert list(iterate(kind, p, p.top_many(numbers, 2))) == [(n, p.top(n, 2)) for n in numbers]
    infos = p.messages()
    assert [(i.number, i.size, i.uid) for i in infos] == [
        (n, int(p.list(n).split()[2]), p.uidl(n).split()[2].decode()) for n in numbers
    ]
    assert p.dele_many([1, 2]) == [b"+OK message 1 deleted", b"+OK message 2 deleted"]
    p.quit()
    sent = srv.sessions[-1].commands
    assert sum(1 for c in sent if c.upper().startswith(b"RETR")) == 2 * count


def test_pipelining_sends_commands_before_reading() -> None:
    """A server that answers nothing until all 12 RETRs have arrived: only a client that
    really pipelines gets its messages (a one-by-one client would time out)."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        with conn, conn.makefile("rb") as f:
            conn.sendall(b"+OK ready\r\n")
            assert f.readline() == b"CAPA\r\n"
            conn.sendall(b"+OK\r\nPIPELINING\r\n.\r\n")
            retrs = [f.readline() for _ in range(12)]
            conn.sendall(b"".join(b"+OK\r\nmessage " + r.split()[1] + b"\r\n.\r\n" for r in retrs))
            f.readline()
            conn.sendall(b"+OK bye\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    with listener:
        p = fastpoplib.POP3("127.0.0.1", listener.getsockname()[1], timeout=5)
        got = [(n, lines) for n, (_, lines, _) in p.retr_many(range(1, 13))]
        assert got == [(n, [b"message %d" % n]) for n in range(1, 13)]
        p.quit()
    thread.join(5)


def test_batch_error_drains_and_keeps_session(kind: str, pop3_server: Any) -> None:
    p = open_session(kind, pop3_server)
    got = []
    with pytest.raises(fastpoplib.ServerError):
        for number, _reply in iterate(kind, p, p.retr_many([1, 2, 99, 3, 4])):
            got.append(number)
    assert got == [1, 2]
    assert p.stat()[0] == 12  # the replies in flight were read: the session is in sync
    p.quit()


def test_leaving_a_batch_early_keeps_session(kind: str, pop3_server: Any) -> None:
    p = open_session(kind, pop3_server)
    it = p.retr_many(range(1, 13))
    for number, _ in iterate(kind, p, it):
        if number == 2:
            break
    if kind == "sync":
        it.close()
    else:
        p._loop.run_until_complete(it.aclose())
    assert p.stat()[0] == 12
    p.quit()


def test_streaming_matches_retr(kind: str, pop3_server: Any, tmp_path: Any) -> None:
    p = open_session(kind, pop3_server)
    for n in range(1, 13):
        _, lines, _ = p.retr(n)
        whole = b"".join(line + b"\r\n" for line in lines)
        assert p.retr_bytes(n) == whole
        chunks = list(iterate(kind, p, p.retr_iter(n, chunk_size=100)))
        assert b"".join(chunks) == whole and (len(chunks) > 1 or len(whole) < 200)
        seen: list = []
        written = p.retr_to(n, tmp_path / f"{n}.eml", progress=lambda done, total, seen=seen: seen.append((done, total)))
        assert (tmp_path / f"{n}.eml").read_bytes() == whole and written == len(whole)
        assert seen[-1] == (len(whole), len(whole))
    msg = p.retr_message(1)
    assert isinstance(msg, email.message.EmailMessage) and msg["Subject"]
    headers = p.top_headers(1)
    assert headers["Message-ID"] == msg["Message-ID"]
    p.quit()


def test_large_message_streams_with_dot_lines_across_chunks(kind: str, pop3_server_factory: Any, tmp_path: Any) -> None:
    body = b"".join((b"." * (i % 5) + b"line %d\r\n" % i) for i in range(200_000))
    raw = b"Subject: big\r\n\r\n" + body
    srv = pop3_server_factory(mailbox=[raw])
    p = open_session(kind, srv)
    digest = hashlib.sha256()
    for chunk in iterate(kind, p, p.retr_iter(1, chunk_size=4096)):
        assert len(chunk) < 4096 + 100
        digest.update(chunk)
    assert digest.hexdigest() == hashlib.sha256(raw).hexdigest()
    p.quit()


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "CRAM-MD5"])
def test_login_with_each_sasl_mechanism(kind: str, mechanism: str, pop3_server: Any) -> None:
    p = connect(kind, pop3_server.host, pop3_server.port)
    p.login(USER, PASSWORD, mechanisms=[mechanism], allow_insecure=True)
    assert p.auth_mechanism == mechanism
    assert p.stat()[0] == 12
    p.quit()


def test_login_picks_strongest_and_refuses_cleartext(kind: str, pop3_server: Any) -> None:
    p = connect(kind, pop3_server.host, pop3_server.port)
    with pytest.raises(fastpoplib.LocalProtocolError, match="unencrypted"):
        p.login(USER, PASSWORD)
    p.stls(context=pop3_server.client_context())
    p.login(USER, PASSWORD)
    assert p.auth_mechanism == "PLAIN"  # over TLS PLAIN comes before CRAM-MD5
    p.quit()
    q = connect(kind, pop3_server.host, pop3_server.port)
    q.login(USER, PASSWORD, allow_insecure=True)
    assert q.auth_mechanism == "CRAM-MD5"  # without TLS the password stays off the wire
    q.quit()
    r = connect(kind, pop3_server.host, pop3_server.port)
    with pytest.raises(fastpoplib.AuthenticationError):
        r.login(USER, "wrong", allow_insecure=True)
    r.quit()


@pytest.mark.parametrize("initial_response_ok", [True, False])
def test_xoauth2_long_token_and_error_details(kind: str, initial_response_ok: bool, pop3_server_factory: Any) -> None:
    token = "ya29." + "t" * 5000
    srv = pop3_server_factory(oauth2_tokens={USER: token})
    p = connect(kind, srv.host, srv.port)
    p.login(USER, oauth2_token=token, allow_insecure=True)
    assert p.auth_mechanism == "XOAUTH2" and p.stat()[0] == 12
    p.quit()
    q = connect(kind, srv.host, srv.port)
    with pytest.raises(fastpoplib.AuthenticationError) as info:
        q.login(USER, oauth2_token="expired", allow_insecure=True)
    assert isinstance(info.value.details, dict) and info.value.details.get("status") == "401"
    q.quit()
    r = connect(kind, srv.host, srv.port)
    xoauth = f"user={USER}\x01auth=Bearer {token}\x01\x01"
    assert r.auth("XOAUTH2", lambda challenge: xoauth, initial_response_ok=initial_response_ok).startswith(b"+OK")
    r.quit()
    # The long token never fits an AUTH line: it went in the two-step form.
    assert all(len(line) <= 257 for line in srv.sessions[-1].commands if line.upper().startswith(b"AUTH"))


@pytest.mark.parametrize("code,exc", [
    (b"IN-USE", fastpoplib.InUseError),
    (b"LOGIN-DELAY", fastpoplib.LoginDelayError),
    (b"SYS/TEMP", fastpoplib.SysTempError),
    (b"SYS/PERM", fastpoplib.SysPermError),
    (b"AUTH", fastpoplib.AuthenticationError),
])
def test_resp_codes_are_typed(code: bytes, exc: type, pop3_server: Any) -> None:
    pop3_server.add_fault(Fault.reply(b"-ERR [" + code + b"] nope\r\n", on="PASS"))
    p = fastpoplib.POP3(pop3_server.host, pop3_server.port)
    p.user(USER)
    with pytest.raises(exc) as info:
        p.pass_(PASSWORD)
    assert isinstance(info.value, fastpoplib.error_proto)
    assert info.value.args == (b"-ERR [" + code + b"] nope",)
    p.quit()


def test_plain_initial_response_is_base64(pop3_server: Any) -> None:
    p = fastpoplib.POP3(pop3_server.host, pop3_server.port)
    p.auth("PLAIN", lambda challenge: f"\0{USER}\0{PASSWORD}")
    p.quit()
    auth_line = next(c for c in pop3_server.sessions[-1].commands if c.upper().startswith(b"AUTH"))
    assert base64.b64decode(auth_line.split()[2]) == f"\0{USER}\0{PASSWORD}".encode()


def test_scram_sha256(kind: str, pop3_server_factory: Any) -> None:
    srv = pop3_server_factory(sasl=("SCRAM-SHA-256", "PLAIN"))
    p = connect(kind, srv.host, srv.port)
    p.stls(context=srv.client_context())
    p.login(USER, PASSWORD)
    assert p.auth_mechanism == "SCRAM-SHA-256" and p.stat()[0] == 12
    p.quit()
    q = connect(kind, srv.host, srv.port)
    with pytest.raises(fastpoplib.AuthenticationError):
        q.login(USER, "wrong", mechanisms=["SCRAM-SHA-256"], allow_insecure=True)
    q.quit()


def test_typed_capabilities(kind: str, pop3_server: Any) -> None:
    p = connect(kind, pop3_server.host, pop3_server.port)
    caps = p.capa()
    assert isinstance(caps, fastpoplib.Capabilities) and isinstance(caps, dict)
    assert caps.pipelining and caps.stls and caps.utf8
    assert "PLAIN" in caps.sasl and caps.expire is None
    p.quit()
