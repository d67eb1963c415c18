"""The compatibility suite: each scenario runs on stdlib poplib, fastpoplib.POP3 and
fastpoplib.AsyncPOP3 against the shipped test server, and the results must be identical."""

from __future__ import annotations

import poplib
from typing import Any, Callable, Dict, List

import pytest

import fastpoplib
from support import clients
from support.clients import connect, outcome

USER, PASSWORD = "user", "password"


def logged_in(kind: str, server: Any, **kw: Any) -> Any:
    return clients.logged_in(kind, server.host, server.port, USER, PASSWORD, **kw)


def session_results(kind: str, server: Any) -> List[Any]:
    """Every read-only command, in order, with its result or error."""
    p = logged_in(kind, server)
    try:
        count, _ = p.stat()
        out: List[Any] = [p.getwelcome()[:3], p.stat(), p.list(), p.uidl(), outcome(p.noop)]
        for n in range(1, count + 1):
            out += [p.list(n), p.uidl(n), p.retr(n), p.top(n, 0), p.top(n, 3)]
        out += [outcome(p.retr, count + 1), outcome(p.dele, "x"), outcome(p._shortcmd, "XYZZY")]
        out.append(p._longcmd("LIST"))
        return out
    finally:
        p.quit()


@pytest.fixture
def expected(pop3_server: Any) -> Dict[str, Any]:
    return {"results": session_results("stdlib", pop3_server)}


def test_read_commands_identical_to_poplib(kind: str, pop3_server: Any, expected: Dict[str, Any]) -> None:
    assert session_results(kind, pop3_server) == expected["results"]


def scenario_dele_quit(kind: str, server: Any) -> List[Any]:
    p = logged_in(kind, server)
    out = [p.dele(1), outcome(p.retr, 1), p.stat()]
    p.rset()
    out.append(p.stat())
    out.append(p.dele(2))
    out.append(p.quit())
    q = logged_in(kind, server)
    out.append(q.stat())
    q.quit()
    return out


def scenario_capa(kind: str, server: Any) -> Any:
    p = connect(kind, server.host, server.port)
    try:
        return p.capa()
    finally:
        p.quit()


def scenario_apop(kind: str, server: Any) -> Any:
    p = connect(kind, server.host, server.port)
    try:
        return [p.apop(USER, PASSWORD), p.stat()]
    finally:
        p.quit()


def scenario_bad_password(kind: str, server: Any) -> Any:
    p = connect(kind, server.host, server.port)
    try:
        return [p.user(USER), outcome(p.pass_, "wrong")]
    finally:
        p.quit()


def scenario_utf8(kind: str, server: Any) -> Any:
    p = connect(kind, server.host, server.port)
    try:
        return [p.utf8(), p.user(USER), p.pass_(PASSWORD), p.stat()]
    finally:
        p.quit()


SCENARIOS: Dict[str, Callable[[str, Any], Any]] = {
    "dele_quit": scenario_dele_quit,
    "capa": scenario_capa,
    "apop": scenario_apop,
    "bad_password": scenario_bad_password,
    "utf8": scenario_utf8,
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_scenario_identical_to_poplib(name: str, kind: str, pop3_server_factory: Any) -> None:
    # A fresh server for each client: some scenarios delete mail.
    want = SCENARIOS[name]("stdlib", pop3_server_factory())
    got = SCENARIOS[name](kind, pop3_server_factory())
    assert got == want


def test_implicit_tls(any_kind: str, pop3_tls_server: Any) -> None:
    p = connect(any_kind, pop3_tls_server.host, pop3_tls_server.port, tls=True, context=pop3_tls_server.client_context())
    p.user(USER)
    p.pass_(PASSWORD)
    count, size = p.stat()
    assert count == len(pop3_tls_server.mailbox.messages) and size > 0
    assert p.retr(1)[1]
    p.quit()


def test_stls_then_every_command(any_kind: str, pop3_server: Any) -> None:
    p = connect(any_kind, pop3_server.host, pop3_server.port)
    assert p.stls(context=pop3_server.client_context()).startswith(b"+OK")
    with pytest.raises(poplib.error_proto):
        p.stls(context=pop3_server.client_context())
    p.user(USER)
    p.pass_(PASSWORD)
    resp, lines, octets = p.retr(1)
    assert resp.startswith(b"+OK") and octets == sum(len(line) + 2 for line in lines)
    p.quit()


def test_stls_rereads_capabilities(kind: str, pop3_server: Any) -> None:
    p = connect(kind, pop3_server.host, pop3_server.port)
    assert "STLS" in p.capa()
    p.stls(context=pop3_server.client_context())
    caps = p.capabilities
    assert "STLS" not in caps and "USER" in caps
    p.quit()


def test_error_proto_is_poplibs() -> None:
    assert issubclass(fastpoplib.error_proto, poplib.error_proto)
    for name in ("ServerError", "AuthenticationError", "InUseError", "RemoteProtocolError", "ConnectionClosedError"):
        assert issubclass(getattr(fastpoplib, name), poplib.error_proto)


def test_module_constants_match_poplib() -> None:
    for name in ("POP3_PORT", "POP3_SSL_PORT", "CR", "LF", "CRLF", "_MAXLINE"):
        assert getattr(fastpoplib, name) == getattr(poplib, name)


def test_tls_info(kind: str, pop3_tls_server: Any) -> None:
    p = connect(kind, pop3_tls_server.host, pop3_tls_server.port, tls=True, context=pop3_tls_server.client_context())
    version, cipher = p.tls_info
    assert version in ("TLSv1.3", "TLSv1.2") and cipher
    p.quit()


def _manual_retr(p: Any, n: int) -> List[Any]:
    """A reply framed by hand, as poplib subclasses do: _putcmd, then _getline to the '.'."""
    p._putcmd(f"RETR {n}")
    lines = []
    while True:
        line, octets = p._getline()
        lines.append((line, octets))
        if line == b".":
            return lines


@pytest.mark.parametrize("kind", ["stdlib", "sync"])
def test_getline_frames_by_hand_like_poplib(kind: str, pop3_server: Any) -> None:
    p = connect(kind, pop3_server.host, pop3_server.port)
    p.user("user")
    p.pass_("password")
    got = _manual_retr(p, 2)
    assert got[0][0].startswith(b"+OK") and got[-1] == (b".", 3)
    assert got == _manual_retr(p, 2)
    if kind == "sync":
        # Left half-read, the rest of that reply is dropped, never read as the next reply.
        p._putcmd("RETR 1")
        assert p._getline()[0].startswith(b"+OK")
        assert p.stat() == (12, sum(len(m) for m in pop3_server.mailbox.messages))
    p.quit()
