"""A server that echoes the password or token back, in clear or in base64, shows it nowhere:
not in set_debuglevel(2) output, DEBUG logs, `fastpoplib fetch -vv`, nor in the exceptions
login() and pass_() raise, their chained __context__/__cause__ included."""

from __future__ import annotations

import base64
import logging
import os
import subprocess
import sys
import traceback
from typing import Any, List

import pytest

import fastpoplib
from support.clients import connect
from fastpoplib.testing import Fault, POP3TestServer

SECRET = "hunter2-Sekr1t"
TOKEN = "ya29.tok3n-Sekr1t"


def chain(exc: BaseException) -> List[BaseException]:
    seen: List[BaseException] = []
    todo: List[Any] = [exc]
    while todo:
        err = todo.pop()
        if err is not None and all(err is not s for s in seen):
            seen.append(err)
            todo += [err.__context__, err.__cause__]
    return seen


def assert_hidden(text: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in text
        assert base64.b64encode(secret.encode()).decode() not in text


def assert_exception_hidden(exc: BaseException, *secrets: str) -> None:
    printed = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    assert_hidden(printed, *secrets)
    for err in chain(exc):
        assert_hidden(repr(err.args) + str(err) + repr(vars(err)), *secrets)


@pytest.fixture
def shown(capsys: Any, caplog: Any) -> Any:
    """Everything printed or logged at DEBUG so far."""
    caplog.set_level(logging.DEBUG, logger="fastpoplib")

    def collect() -> str:
        out = capsys.readouterr()
        return out.out + out.err + caplog.text

    return collect


def server(factory: Any, reply: bytes, on: str) -> Any:
    return factory(users={"user": SECRET}, faults=[Fault.reply(reply, on=on)])


@pytest.mark.parametrize(
    "reply",
    [b"-ERR [AUTH] password " + SECRET.encode() + b" is wrong\r\n", b"-ERR [SYS/TEMP] cannot check " + SECRET.encode() + b"\r\n"],
    ids=["auth", "sys-temp"],
)
def test_login_refused_with_the_password_echoed(kind: str, reply: bytes, pop3_server_factory: Any, shown: Any) -> None:
    srv = server(pop3_server_factory, reply, "PASS")
    p = connect(kind, srv.host, srv.port)
    p.set_debuglevel(2)
    with pytest.raises(fastpoplib.ServerError) as info:
        p.login("user", SECRET, mechanisms=["USER"], allow_insecure=True)
    assert_exception_hidden(info.value, SECRET)
    assert "****" in str(info.value) or "****" in repr(info.value.args)
    output = shown()
    assert "*get*" in output and "S: -ERR" in output  # the reply was shown, masked
    assert_hidden(output, SECRET)
    p.close()


def test_login_accepted_with_the_password_echoed(kind: str, pop3_server_factory: Any, shown: Any) -> None:
    srv = server(pop3_server_factory, b"+OK welcome, your password is " + SECRET.encode() + b"\r\n", "PASS")
    p = connect(kind, srv.host, srv.port)
    p.set_debuglevel(2)
    assert p.login("user", SECRET, mechanisms=["USER"], allow_insecure=True) == b"+OK welcome, your password is ****"
    output = shown()
    assert "welcome" in output
    assert_hidden(output, SECRET)
    p.quit()


def test_sasl_plain_response_echoed_in_base64(kind: str, pop3_server_factory: Any, shown: Any) -> None:
    echoed = base64.b64encode(b"\0user\0" + SECRET.encode())
    srv = server(pop3_server_factory, b"-ERR bad response " + echoed + b"\r\n", "AUTH")
    p = connect(kind, srv.host, srv.port)
    p.set_debuglevel(2)
    with pytest.raises(fastpoplib.AuthenticationError) as info:
        p.login("user", SECRET, mechanisms=["PLAIN"], allow_insecure=True)
    assert_exception_hidden(info.value, SECRET)
    assert echoed.decode() not in "".join(traceback.format_exception(info.value)) + shown()
    p.close()


def test_oauth2_token_echoed(kind: str, pop3_server_factory: Any, shown: Any) -> None:
    srv = pop3_server_factory(faults=[Fault.reply(b"-ERR token " + TOKEN.encode() + b" expired\r\n", on="AUTH")], sasl=["XOAUTH2"])
    p = connect(kind, srv.host, srv.port)
    p.set_debuglevel(2)
    with pytest.raises(fastpoplib.AuthenticationError) as info:
        p.login("user", oauth2_token=TOKEN, allow_insecure=True)
    assert_exception_hidden(info.value, TOKEN)
    assert_hidden(shown(), TOKEN)
    p.close()


def test_pass_refused_with_the_password_echoed(kind: str, pop3_server_factory: Any, shown: Any) -> None:
    srv = server(pop3_server_factory, b"-ERR wrong password " + SECRET.encode() + b"\r\n", "PASS")
    p = connect(kind, srv.host, srv.port)
    p.set_debuglevel(2)
    p.user("user")
    with pytest.raises(fastpoplib.AuthenticationError) as info:
        p.pass_(SECRET)
    assert_exception_hidden(info.value, SECRET)
    assert_hidden(shown(), SECRET)
    p.close()


@pytest.mark.parametrize("reply", [b"+OK hello " + SECRET.encode() + b"\r\n", b"-ERR no, " + SECRET.encode() + b"\r\n"], ids=["accepted", "refused"])
def test_cli_fetch_vv(reply: bytes, tmp_path: Any) -> None:
    with POP3TestServer(users={"user": SECRET}, stls=False, sasl=(), faults=[Fault.reply(reply, on="PASS")]) as srv:
        out = subprocess.run(
            [sys.executable, "-m", "fastpoplib", "fetch", "-vv", "--host", srv.host, "--port", str(srv.port), "--user", "user",
             "--tls", "none", "--insecure", "--password-env", "POP_PW", "--maildir", str(tmp_path / "md")],
            capture_output=True, text=True, timeout=120, check=False, env=dict(os.environ, POP_PW=SECRET),
        )
    assert "C: PASS ****" in out.stderr, out.stderr  # DEBUG lines of the login were logged
    assert_hidden(out.stdout + out.stderr, SECRET)


def test_a_password_that_is_an_ordinary_word_does_not_garble_our_sentences(pop3_server: Any) -> None:
    """Masking applies to what the server said: our own sentence keeps its words even when
    the password is one of them, and a very short password masks nothing (every 'e' of
    every message would otherwise become '****' and show which letter it is)."""
    with fastpoplib.POP3(pop3_server.host, pop3_server.port) as pop:
        with pytest.raises(fastpoplib.LocalProtocolError) as info:
            pop.login("user", "password")
        assert "refusing to send a password over an unencrypted connection" in str(info.value)
        with pytest.raises(fastpoplib.AuthenticationError) as refused:
            pop.login("user", "e", allow_insecure=True)
        assert "****" not in str(refused.value)


@pytest.mark.parametrize("line", ["PASS {}", b"PASS {}"])
def test_a_password_sent_with_shortcmd_is_masked_in_the_error(line: Any) -> None:
    """poplib's pass_() is `_shortcmd("PASS " + pswd)`: code that calls it directly gets the
    same masking as pass_()."""
    secret = "S3cr3t-Pw!x"
    echo = Fault.reply(b"-ERR bad password " + secret.encode() + b"\r\n", on="PASS")
    with POP3TestServer(stls=False, faults=[echo]) as srv:
        p = fastpoplib.POP3(srv.host, srv.port, timeout=5)
        try:
            p.user("user")
            sent = line.format(secret) if isinstance(line, str) else line.replace(b"{}", secret.encode())
            with pytest.raises(fastpoplib.error_proto) as info:
                p._shortcmd(sent)
            assert all(secret not in str(e) for e in chain(info.value))
            assert "****" in str(info.value)
        finally:
            p.close()
