"""login() and auth() against servers whose SASL is unusable, odd or hostile (the test server's
SASLQuirks), on both clients. After every failure the session must still be in step: the
next command is answered as a command, never read as SASL data."""

from __future__ import annotations

import base64
import io
import logging
import time
from contextlib import redirect_stdout
from typing import Any, List

import pytest

import fastpoplib
from support.clients import connect
from fastpoplib import _sasl
from fastpoplib.testing import Fault, SASLQuirks

USER, PASSWORD = "user", "password"
REFUSED = "-ERR [AUTH] Authentication failed."


def auth_lines(srv: Any) -> List[bytes]:
    return [c for c in srv.sessions[-1].commands if c.upper().startswith(b"AUTH")]


def assert_in_step(p: Any) -> None:
    """The next commands are answered as commands: the AUTH exchange is over."""
    p.user(USER)
    p.pass_(PASSWORD)
    assert p.noop() == b"+OK"
    p.quit()


# 1. fallback ----------------------------------------------------------------------------------


def test_falls_back_when_cram_md5_is_unusable(kind: str, pop3_server_factory: Any) -> None:
    srv = pop3_server_factory(sasl=("CRAM-MD5", "PLAIN"), sasl_quirks=SASLQuirks(cram_md5_unusable=True))
    p = connect(kind, srv.host, srv.port)
    assert p.login(USER, PASSWORD, allow_insecure=True).startswith(b"+OK")
    assert p.auth_mechanism == "PLAIN" and p.stat()[0] == 12
    p.quit()
    assert [line.split()[1] for line in auth_lines(srv)] == [b"CRAM-MD5", b"PLAIN"]


def test_one_scram_refusal_is_enough(kind: str, pop3_server_factory: Any) -> None:
    """A wrong password costs one SCRAM refusal, not one per SCRAM hash offered."""
    srv = pop3_server_factory(sasl=("SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"))
    p = connect(kind, srv.host, srv.port)
    with pytest.raises(fastpoplib.AuthenticationError) as info:
        p.login(USER, "wrong-Secret-1", allow_insecure=True)
    assert [method for method, _ in info.value.attempts] == ["SCRAM-SHA-256", "PLAIN"]
    assert [line.split()[1] for line in auth_lines(srv)] == [b"SCRAM-SHA-256", b"PLAIN"]


def test_every_refusal_is_listed_and_mechanisms_restricts(kind: str, pop3_server_factory: Any) -> None:
    srv = pop3_server_factory(sasl=("SCRAM-SHA-1", "CRAM-MD5", "LOGIN"), sasl_quirks=SASLQuirks(cram_md5_unusable=True))
    p = connect(kind, srv.host, srv.port)
    with pytest.raises(fastpoplib.AuthenticationError) as info:
        p.login(USER, "wrong-Secret-1", allow_insecure=True)
    # LOGIN sent the password itself and the server refused it: USER/PASS would fail the same way.
    assert info.value.attempts == (("SCRAM-SHA-1", REFUSED), ("CRAM-MD5", REFUSED), ("LOGIN", REFUSED))
    assert str(info.value) == f"login refused; tried SCRAM-SHA-1: {REFUSED}; CRAM-MD5: {REFUSED}; LOGIN: {REFUSED}"
    assert info.value.response == REFUSED.encode()  # poplib's args: the last reply
    assert not any(c.startswith(b"USER") for c in srv.sessions[-1].commands)
    assert_in_step(p)
    q = connect(kind, srv.host, srv.port)
    with pytest.raises(fastpoplib.AuthenticationError) as info:
        q.login(USER, "wrong", mechanisms=["login"], allow_insecure=True)
    assert info.value.attempts == (("LOGIN", REFUSED),)
    q.quit()
    assert [line.split()[1] for line in auth_lines(srv)] == [b"LOGIN"]
    assert not any(c.startswith(b"USER") for c in srv.sessions[-1].commands[:-1])


def test_refusals_before_the_password_was_sent_fall_back(kind: str, pop3_server_factory: Any) -> None:
    srv = pop3_server_factory(sasl=("LOGIN",))
    srv.add_fault(Fault.reply(b"-ERR [AUTH] LOGIN disabled\r\n", on="AUTH"))
    srv.add_fault(Fault.reply(b"-ERR [AUTH] no USER here\r\n", on="USER"))
    p = connect(kind, srv.host, srv.port)
    p.login(USER, PASSWORD, allow_insecure=True, allow_apop=True)
    assert p.auth_mechanism == "APOP" and p.stat()[0] == 12
    p.quit()
    assert [c.split()[0] for c in srv.sessions[-1].commands[1:4]] == [b"AUTH", b"USER", b"APOP"]


@pytest.mark.parametrize("code,exc", [
    (b"IN-USE", fastpoplib.InUseError),
    (b"LOGIN-DELAY", fastpoplib.LoginDelayError),
    (b"SYS/TEMP", fastpoplib.SysTempError),
    (b"SYS/PERM", fastpoplib.SysPermError),
])
def test_resp_codes_stop_the_fallback(kind: str, code: bytes, exc: type, pop3_server_factory: Any) -> None:
    srv = pop3_server_factory(sasl=("CRAM-MD5", "PLAIN"))
    srv.add_fault(Fault.reply(b"-ERR [" + code + b"] try later\r\n", on="AUTH"))
    p = connect(kind, srv.host, srv.port)
    with pytest.raises(exc):
        p.login(USER, PASSWORD, allow_insecure=True)
    assert len(auth_lines(srv)) == 1 and not any(c.startswith(b"USER") for c in srv.sessions[-1].commands)
    assert_in_step(p)


def test_in_use_after_a_successful_exchange_stops(kind: str, pop3_server_factory: Any) -> None:
    srv = pop3_server_factory(sasl=("CRAM-MD5", "PLAIN"))
    first = connect(kind, srv.host, srv.port)
    first.login(USER, PASSWORD, allow_insecure=True)
    second = connect(kind, srv.host, srv.port)
    with pytest.raises(fastpoplib.InUseError):
        second.login(USER, PASSWORD, allow_insecure=True)
    assert len(auth_lines(srv)) == 1  # PLAIN and USER were not tried
    second.quit()
    first.quit()


# 2. LOGIN prompts ----------------------------------------------------------------------------


@pytest.mark.parametrize("prompts", [(b"", b""), (b"Benutzername:", b"Kennwort:"), (b"Password:", b"Username:")])
def test_login_mechanism_answers_in_order(kind: str, prompts: Any, pop3_server_factory: Any) -> None:
    srv = pop3_server_factory(sasl=("LOGIN",), sasl_quirks=SASLQuirks(login_prompts=prompts))
    p = connect(kind, srv.host, srv.port)
    p.login(USER, PASSWORD, allow_insecure=True)
    assert p.auth_mechanism == "LOGIN" and p.stat()[0] == 12
    p.quit()
    commands = srv.sessions[-1].commands
    start = commands.index(b"AUTH LOGIN")
    assert [base64.b64decode(c) for c in commands[start + 1 : start + 3]] == [USER.encode(), PASSWORD.encode()]


# 3. text continuation ------------------------------------------------------------------------


def test_text_continuation_for_mechanisms_that_ignore_it(kind: str, pop3_server_factory: Any) -> None:
    srv = pop3_server_factory(sasl=("PLAIN", "XOAUTH2", "SCRAM-SHA-256"), sasl_quirks=SASLQuirks(text_continuation=b"go ahead"))
    p = connect(kind, srv.host, srv.port)
    assert p.auth("PLAIN", lambda challenge: f"\0{USER}\0{PASSWORD}", initial_response_ok=False).startswith(b"+OK")
    p.quit()
    q = connect(kind, srv.host, srv.port)
    xoauth2 = _sasl.OAuth2("XOAUTH2", USER, PASSWORD)
    assert q.auth("XOAUTH2", xoauth2, initial_response_ok=False).startswith(b"+OK")
    q.quit()
    r = connect(kind, srv.host, srv.port)
    scram = _sasl.Scram("SCRAM-SHA-256", USER, PASSWORD)
    assert r.auth("SCRAM-SHA-256", scram, initial_response_ok=False).startswith(b"+OK") and scram.verified
    r.quit()


def test_undecodable_challenge_cancels_cleanly(kind: str, pop3_server_factory: Any) -> None:
    srv = pop3_server_factory(sasl=("CRAM-MD5", "PLAIN"))
    srv.add_fault(Fault.reply(b"+ <1.2@not-base64>\r\n", on="AUTH"))
    p = connect(kind, srv.host, srv.port)
    with pytest.raises(fastpoplib.RemoteProtocolError, match="not base64"):
        p.login(USER, PASSWORD, allow_insecure=True)
    assert srv.sessions[-1].commands[-1] == b"*"
    assert_in_step(p)


def test_a_failing_auth_object_still_ends_the_exchange(kind: str, pop3_server: Any) -> None:
    def broken(challenge: Any) -> str:
        raise KeyError("no credentials")

    p = connect(kind, pop3_server.host, pop3_server.port)
    with pytest.raises(KeyError):
        p.auth("PLAIN", broken, initial_response_ok=False)
    assert pop3_server.sessions[-1].commands[-2:] == [b"AUTH PLAIN", b"*"]
    assert_in_step(p)


# 4. and 5. SCRAM -----------------------------------------------------------------------------


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-1", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_scram_variants(kind: str, mechanism: str, pop3_server_factory: Any) -> None:
    srv = pop3_server_factory(sasl=(mechanism, "PLAIN"))
    p = connect(kind, srv.host, srv.port)
    p.stls(context=srv.client_context())
    p.login(USER, PASSWORD)
    assert p.auth_mechanism == mechanism and p.stat()[0] == 12
    p.quit()


@pytest.mark.parametrize("final", ["missing", "wrong"])
def test_scram_server_must_prove_itself(kind: str, final: str, pop3_server_factory: Any) -> None:
    srv = pop3_server_factory(sasl=("SCRAM-SHA-256", "PLAIN"), sasl_quirks=SASLQuirks(scram_server_final=final))
    p = connect(kind, srv.host, srv.port)
    with pytest.raises(fastpoplib.AuthenticationError, match="prov|signature") as info:
        p.login(USER, PASSWORD, allow_insecure=True)
    assert info.value.attempts[0][0] == "SCRAM-SHA-256" and len(info.value.attempts) == 1
    session = srv.sessions[-1]
    assert session.wait_closed() and session.quit_received
    assert [line.split()[1] for line in auth_lines(srv)] == [b"SCRAM-SHA-256"]  # no fallback to PLAIN
    with pytest.raises(fastpoplib.POP3Error):
        p.noop()
    p.close()
    q = connect(kind, srv.host, srv.port)
    with pytest.raises(fastpoplib.AuthenticationError, match="closed"):
        q.auth("SCRAM-SHA-256", _sasl.Scram("SCRAM-SHA-256", USER, PASSWORD))
    q.close()


@pytest.mark.parametrize("override,reason", [
    ({"i": "2147483647"}, "iteration count 2147483647 outside 4096..600000"),
    ({"i": "abc"}, "iteration count is not a number"),
    ({"i": "1"}, "iteration count 1 outside"),
    ({"s": "!!!"}, "salt is not base64"),
    ({"r": "forged-nonce"}, "nonce does not extend ours"),
])
def test_hostile_scram_server_first(kind: str, override: Any, reason: str, pop3_server_factory: Any) -> None:
    srv = pop3_server_factory(sasl=("SCRAM-SHA-256", "PLAIN"), sasl_quirks=SASLQuirks(scram_server_first=override))
    p = connect(kind, srv.host, srv.port, timeout=5)
    started = time.monotonic()
    with pytest.raises(fastpoplib.RemoteProtocolError, match=reason):
        p.login(USER, PASSWORD, allow_insecure=True)
    assert time.monotonic() - started < 2
    assert srv.sessions[-1].commands[-1] == b"*"
    assert [line.split()[1] for line in auth_lines(srv)] == [b"SCRAM-SHA-256"]
    assert_in_step(p)


# 6. tokens in clear text ---------------------------------------------------------------------


def test_bearer_token_refused_on_a_plain_connection(kind: str, pop3_server: Any) -> None:
    p = connect(kind, pop3_server.host, pop3_server.port)
    with pytest.raises(fastpoplib.LocalProtocolError, match="unencrypted"):
        p.login(USER, oauth2_token=PASSWORD)
    assert not auth_lines(pop3_server)
    p.stls(context=pop3_server.client_context())
    p.login(USER, oauth2_token=PASSWORD)
    assert p.auth_mechanism == "XOAUTH2"
    p.quit()


# 7. endless continuations --------------------------------------------------------------------


@pytest.mark.parametrize("mechanism,secret", [("PLAIN", "password"), ("LOGIN", "password"), ("CRAM-MD5", "password"), ("XOAUTH2", "token")])
def test_endless_continuations_are_bounded(kind: str, mechanism: str, secret: str, pop3_server_factory: Any) -> None:
    srv = pop3_server_factory(sasl=(mechanism,), sasl_quirks=SASLQuirks(endless_continuations=True))
    p = connect(kind, srv.host, srv.port)
    kw = {"oauth2_token": PASSWORD} if secret == "token" else {"password": PASSWORD}
    with pytest.raises(fastpoplib.RemoteProtocolError):
        p.login(USER, mechanisms=[mechanism], allow_insecure=True, **kw)
    commands = srv.sessions[-1].commands
    start = commands.index(next(c for c in commands if c.startswith(b"AUTH")))
    assert commands[-1] == b"*" and len(commands) - start <= 4
    assert_in_step(p)


# 8. error JSON -------------------------------------------------------------------------------


@pytest.mark.parametrize("mechanism", ["XOAUTH2", "OAUTHBEARER"])
def test_deep_error_json(kind: str, mechanism: str, pop3_server_factory: Any, monkeypatch: Any) -> None:
    monkeypatch.setattr(fastpoplib, "_MAXLINE", 1 << 14)  # room for the 4 KB challenge line
    deep = b"[" * 1500 + b"]" * 1500
    srv = pop3_server_factory(sasl=(mechanism,), sasl_quirks=SASLQuirks(oauth2_error=deep))
    p = connect(kind, srv.host, srv.port)
    with pytest.raises(fastpoplib.AuthenticationError) as info:
        p.login(USER, oauth2_token="expired", allow_insecure=True)
    assert info.value.details == {"raw": _sasl.printable(deep)}
    assert_in_step(p)


# 10. only what is implemented ----------------------------------------------------------------


def test_unknown_scram_variant_is_not_used(kind: str, pop3_server_factory: Any) -> None:
    srv = pop3_server_factory(capabilities=["USER", "SASL SCRAM-SHA-384 SCRAM-SHA-256-PLUS"])
    p = connect(kind, srv.host, srv.port)
    with pytest.raises(ValueError, match="SCRAM-SHA-384"):
        p.login(USER, PASSWORD, mechanisms=["SCRAM-SHA-384"], allow_insecure=True)
    p.login(USER, PASSWORD, allow_insecure=True)
    assert p.auth_mechanism == "USER" and not auth_lines(srv)
    p.quit()


# secrets and server text in errors -----------------------------------------------------------


def test_no_secret_and_no_control_character_in_errors_or_logs(kind: str, pop3_server_factory: Any, caplog: Any) -> None:
    secret = "Sekr1t-pw"
    srv = pop3_server_factory(sasl=("CRAM-MD5", "PLAIN", "LOGIN"), sasl_quirks=SASLQuirks(cram_md5_unusable=True))
    srv.add_fault(Fault.reply(b"-ERR \x1b[31m\xe2\x80\xae bad\x07\r\n", on="AUTH", skip=1))  # PLAIN's reply
    caplog.set_level(logging.DEBUG, logger="fastpoplib")
    out = io.StringIO()
    with redirect_stdout(out):
        p = connect(kind, srv.host, srv.port)
        p.set_debuglevel(2)
        with pytest.raises(fastpoplib.AuthenticationError) as info:
            p.login(USER, secret, allow_insecure=True)
        p.quit()
    err = info.value
    assert [m for m, _ in err.attempts] == ["CRAM-MD5", "PLAIN"]
    assert all(c.isprintable() for c in str(err)) and "bad" in str(err)
    texts = [str(err), repr(err), repr(err.args), repr(err.attempts), out.getvalue(), caplog.text]
    encoded = [base64.b64encode(s.encode()).decode() for s in (secret, f"\0{USER}\0{secret}")]
    for text in texts:
        assert secret not in text and not any(e in text for e in encoded)


def test_a_server_echoing_the_password_does_not_put_it_in_the_error(kind: str, pop3_server_factory: Any) -> None:
    secret = "Sekr1t-pw"
    srv = pop3_server_factory(sasl=())
    srv.add_fault(Fault.reply(f"-ERR password {secret} is wrong\r\n".encode(), on="PASS"))
    p = connect(kind, srv.host, srv.port)
    with pytest.raises(fastpoplib.AuthenticationError) as info:
        p.login(USER, secret, allow_insecure=True)
    assert info.value.attempts == (("USER", "-ERR password **** is wrong"),)
    assert secret not in str(info.value) + repr(info.value)
    p.quit()
