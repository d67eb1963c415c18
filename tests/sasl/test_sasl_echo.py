"""A server that echoes the line it received shows no secret the client sent: not the APOP
digest, not a SASL response (CRAM-MD5, SCRAM's client-final message with its proof, PLAIN,
XOAUTH2), in base64 as sent or decoded, not in the reply returned, the exception raised
(chained ones included), debug output or logs."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import socket
import threading
import traceback
from typing import Any, Callable, Dict, List

import pytest

import fastpoplib
from support.clients import connect

PASSWORD = "Tr0ub4dor&3x"
STAMP = b"<1896.697170952@dbc.mailcom.net>"
CHALLENGE = b"<1.2@server.example>"


def echo_server(reply_to: Callable[[bytes, List[bytes]], bytes]) -> Any:
    """A one-connection server on loopback: greets with an APOP timestamp, answers CAPA
    itself and every other line with ``reply_to(line, lines so far)``; closes on QUIT."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)
    received: List[bytes] = []

    def run() -> None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn, conn.makefile("rb") as lines:
            conn.settimeout(10)
            conn.sendall(b"+OK ready " + STAMP + b"\r\n")
            for _ in range(20):  # bounded: a test sends a handful of lines
                line = lines.readline(10_000)
                if not line:
                    break
                received.append(line)
                verb = line.split(b" ")[0].strip().upper()
                if verb == b"CAPA":
                    conn.sendall(b"+OK\r\nUSER\r\nSASL CRAM-MD5 SCRAM-SHA-256 PLAIN XOAUTH2\r\n.\r\n")
                elif verb == b"QUIT":
                    conn.sendall(b"+OK bye\r\n")
                    break
                else:
                    conn.sendall(reply_to(line.rstrip(b"\r\n"), received))
        listener.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    host, port = listener.getsockname()[:2]
    return host, port, received


def echo(prefix: bytes, decoded: bool = False) -> Callable[[bytes, List[bytes]], bytes]:
    """Answers AUTH with a challenge and everything else with ``prefix`` and the line (its
    base64 decoded when ``decoded``)."""

    def reply(line: bytes, _: List[bytes]) -> bytes:
        if line.upper().startswith(b"AUTH ") and len(line.split()) == 2:
            return b"+ " + base64.b64encode(CHALLENGE) + b"\r\n"
        said = base64.b64decode(line) if decoded else line
        return prefix + b" you said " + said + b"\r\n"

    return reply


def printed(exc: BaseException) -> str:
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    todo: List[Any] = [exc]
    while todo:
        err = todo.pop()
        if err is not None:
            text += repr(err.args) + repr(vars(err))
            todo += [err.__context__, err.__cause__]
    return text


def secrets_sent(received: List[bytes]) -> List[bytes]:
    """What an offline dictionary attack could use: each line after the login verb, in
    base64 as sent and decoded."""
    found = []
    for line in received:
        words = line.rstrip(b"\r\n").split(b" ")
        if words[0].upper() == b"APOP":
            found.append(words[2])
        elif words[0].upper() not in (b"CAPA", b"AUTH", b"QUIT", b"USER"):
            found += [words[-1], base64.b64decode(words[-1]).split(b" ")[-1]]
    assert found, received
    return found


def assert_hidden(text: str, secrets: List[bytes]) -> None:
    for secret in secrets:
        assert secret.decode("latin-1") not in text, (secret, text)


@pytest.fixture
def shown(capsys: Any, caplog: Any) -> Callable[[], str]:
    caplog.set_level(logging.DEBUG, logger="fastpoplib")

    def collect() -> str:
        out = capsys.readouterr()
        return out.out + out.err + caplog.text

    return collect


def test_apop_digest_echoed_in_an_error(kind: str, shown: Callable[[], str]) -> None:
    host, port, received = echo_server(echo(b"-ERR"))
    p = connect(kind, host, port)
    p.set_debuglevel(2)
    with pytest.raises(fastpoplib.AuthenticationError) as info:
        p.apop("alice", PASSWORD)
    digest = hashlib.md5(STAMP + PASSWORD.encode()).hexdigest().encode()
    assert secrets_sent(received) == [digest]
    assert "you said APOP alice ****" in str(info.value)
    assert_hidden(printed(info.value) + shown(), [digest])
    p.close()


def test_apop_digest_echoed_in_the_reply_returned(kind: str) -> None:
    host, port, received = echo_server(echo(b"+OK"))
    p = connect(kind, host, port)
    assert p.apop("alice", PASSWORD) == b"+OK you said APOP alice ****"
    assert len(secrets_sent(received)) == 1
    p.quit()


@pytest.mark.parametrize("decoded", [False, True], ids=["base64", "decoded"])
def test_cram_md5_response_echoed(kind: str, decoded: bool, shown: Callable[[], str]) -> None:
    host, port, received = echo_server(echo(b"-ERR", decoded))
    p = connect(kind, host, port)
    p.set_debuglevel(2)
    with pytest.raises(fastpoplib.AuthenticationError) as info:
        p.login("alice", PASSWORD, mechanisms=["CRAM-MD5"], allow_insecure=True)
    digest = hmac.new(PASSWORD.encode(), CHALLENGE, "md5").hexdigest().encode()
    sent = secrets_sent(received)
    assert digest in sent
    assert "tried CRAM-MD5" in str(info.value) and "****" in str(info.value)
    output = shown()
    assert "you said ****" in output  # the echo was shown, masked
    assert_hidden(printed(info.value) + output, sent)


@pytest.mark.parametrize("decoded", [False, True], ids=["base64", "decoded"])
def test_auth_returns_the_echo_masked(kind: str, decoded: bool) -> None:
    host, port, received = echo_server(echo(b"+OK", decoded))
    p = connect(kind, host, port)
    answer = hmac.new(PASSWORD.encode(), CHALLENGE, "md5").hexdigest()
    resp = p.auth("CRAM-MD5", lambda challenge: None if challenge is None else "alice " + answer)
    assert b"****" in resp
    assert_hidden(repr(resp), secrets_sent(received))
    p.quit()


def test_scram_client_final_echoed(kind: str) -> None:
    state: Dict[str, bytes] = {}

    def reply(line: bytes, _: List[bytes]) -> bytes:
        if line.upper().startswith(b"AUTH "):
            first = base64.b64decode(line.split()[2])
            nonce = first.split(b"r=")[1]
            state["first"] = first
            server_first = b"r=" + nonce + b"srv,s=" + base64.b64encode(b"salt") + b",i=4096"
            return b"+ " + base64.b64encode(server_first) + b"\r\n"
        return b"-ERR you said " + line + b"\r\n"

    host, port, received = echo_server(reply)
    p = connect(kind, host, port)
    with pytest.raises(fastpoplib.AuthenticationError) as info:
        p.login("alice", PASSWORD, mechanisms=["SCRAM-SHA-256"], allow_insecure=True)
    final = received[-1].rstrip(b"\r\n")
    assert b"p=" in base64.b64decode(final)
    assert_hidden(printed(info.value), [final])
    p.close()


def test_xoauth2_blob_echoed(kind: str) -> None:
    token = "ya29.tok3n-Sekr1t"
    host, port, received = echo_server(echo(b"-ERR"))
    p = connect(kind, host, port)
    with pytest.raises(fastpoplib.AuthenticationError) as info:
        p.login("alice", oauth2_token=token, mechanisms=["XOAUTH2"], allow_insecure=True)
    blob = received[-1].rstrip(b"\r\n").split(b" ")[-1]
    assert base64.b64decode(blob).find(token.encode()) > 0
    assert_hidden(printed(info.value), [blob, token.encode()])
    p.close()
