"""Error sentences a user reads: after a failure on Python's sockets (a caller's SSLContext)
every later call repeats the first error's sentence, a timeout says how long it waited, advice
is given once, an AsyncPOP3 never opened says how to open it, and a password of the wrong type
gets a TypeError that names the accepted types."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

import pytest

import fastpoplib
from fastpoplib.testing import Fault
from support.clients import connect

pytest.importorskip("trustme", reason="the TLS test server needs trustme")


def test_timeout_on_a_callers_context_says_how_long_and_is_repeated(kind: str, pop3_tls_server: Any) -> None:
    pop3_tls_server.add_fault(Fault.stall(2, on="STAT"))
    p = connect(kind, pop3_tls_server.host, pop3_tls_server.port, tls=True, context=pop3_tls_server.client_context(), timeout=0.5)
    with pytest.raises(fastpoplib.POP3TimeoutError) as first:
        p.stat()
    assert str(first.value) == f"timed out after 0.500 s waiting for the server {pop3_tls_server.host}"
    with pytest.raises(fastpoplib.ConnectionClosedError) as later:
        p.noop()
    assert str(later.value) == f"the connection was closed after an earlier error ({first.value}); open a new connection"
    p.close()


def test_certificate_failure_on_a_callers_context_is_repeated(kind: str, pop3_server: Any) -> None:
    # STLS with a context that does not trust the test CA: the handshake fails in Python's ssl.
    p = connect(kind, pop3_server.host, pop3_server.port)
    with pytest.raises(fastpoplib.CertificateVerificationError) as first:
        p.stls(context=ssl.create_default_context())
    with pytest.raises(fastpoplib.ConnectionClosedError) as later:
        p.noop()
    assert str(later.value) == f"the connection was closed after an earlier error ({first.value}); open a new connection"
    assert "SSLCertVerificationError" not in str(later.value)
    p.close()


def test_advice_is_given_once(kind: str, pop3_server: Any) -> None:
    pop3_server.add_fault(Fault.disconnect(on="STAT"))
    p = connect(kind, pop3_server.host, pop3_server.port)
    with pytest.raises(fastpoplib.POP3Error) as first:
        p.stat()
    assert "open a new connection" in str(first.value)
    with pytest.raises(fastpoplib.ConnectionClosedError) as later:
        p.noop()
    assert str(later.value).count("open a new") == 1, str(later.value)
    p.close()


def test_async_client_never_opened_says_how_to_open_it() -> None:
    pop = fastpoplib.AsyncPOP3("127.0.0.1", 110)
    assert "not connected" in repr(pop) and "closed" not in repr(pop)
    with pytest.raises(fastpoplib.LocalProtocolError) as info:
        asyncio.run(pop.user("alice"))
    message = str(info.value)
    assert message.startswith("not connected yet")
    assert "await AsyncPOP3.connect(host, ...)" in message and "async with AsyncPOP3(host, ...) as pop" in message


@pytest.mark.parametrize("call", ["pass_", "apop"])
def test_password_as_bytes_is_sent_as_it_is(kind: str, call: str, pop3_server_factory: Any) -> None:
    srv = pop3_server_factory(users={"user": "pässword"}, apop=True) if call == "apop" else pop3_server_factory(users={"user": "pässword"})
    p = connect(kind, srv.host, srv.port)
    if call == "pass_":
        p.user("user")
        assert p.pass_("pässword".encode()).startswith(b"+OK")
    else:
        assert p.apop("user", "pässword".encode()).startswith(b"+OK")
    assert p.stat()[0] >= 0
    p.quit()


@pytest.mark.parametrize("call", ["pass_", "apop"])
@pytest.mark.parametrize("password", [123, None, ["pw"]], ids=["int", "None", "list"])
def test_password_of_another_type_is_a_type_error(kind: str, call: str, password: Any, pop3_server_factory: Any) -> None:
    srv = pop3_server_factory(apop=True)
    p = connect(kind, srv.host, srv.port)
    with pytest.raises(TypeError, match=f"a password must be str or bytes, not {type(password).__name__}"):
        p.pass_(password) if call == "pass_" else p.apop("user", password)
    assert p.user("user").startswith(b"+OK")  # nothing was sent: the session is still usable
    p.quit()
