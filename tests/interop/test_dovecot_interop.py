"""Interoperability with a real server: Dovecot, started privately by the fixtures of
``tests/support/dovecot.py`` (made visible by ``tests/conftest.py``; skipped without Dovecot, except in CI).

A scenario is a function of a client object. It runs on stdlib poplib and on fastpoplib's
blocking and asyncio clients (``support/clients.py`` gives every kind poplib's blocking methods, so a new
driver is one more kind there), and the results must be equal byte for byte. Where the stored
mailbox says what the answer must be, results are checked against it too. fastpoplib differs from
poplib on purpose in two places, both tested: it returns lines longer than poplib's limit, and it
verifies certificates by default.
"""

from __future__ import annotations

import base64
import hmac
import itertools
import os
import poplib
import socket
import ssl
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Any, Callable, List, Optional

import pytest

import fastpoplib
from support.clients import connect, iterate, logged_in, outcome
from support.dovecot import PASSWORD, InteropDovecot

MECHANISMS = ["PLAIN", "LOGIN", "CRAM-MD5"]
# poplib refuses a line longer than _MAXLINE bytes, its CRLF included.
POPLIB_MAX_CONTENT = poplib._MAXLINE - 2  # type: ignore[attr-defined]


# -- helpers ---------------------------------------------------------------------------------


def session(kind: str, server: InteropDovecot, user: str = "basic", *, tls: bool = False) -> Any:
    """A client of ``kind`` logged in with USER/PASS; with ``tls``, over implicit TLS verified
    against the server's CA."""
    if tls:
        return logged_in(kind, server.host, server.tls_port, user, PASSWORD, tls=True, context=server.ssl_context())
    return logged_in(kind, server.host, server.plain_port, user, PASSWORD)


def run(kind: str, server: InteropDovecot, scenario: Callable[[Any], Any], user: str = "basic", *, tls: bool = False) -> Any:
    """``scenario(client)`` in a session of its own, ended with QUIT."""
    p = session(kind, server, user, tls=tls)
    try:
        result = scenario(p)
    except BaseException:
        p.close()
        raise
    p.quit()
    return result


def wire_lines(stored: bytes) -> List[bytes]:
    """What RETR must return for a stored message: its lines, without line ends (Dovecot sends
    bare LF as CRLF and ends an unterminated last line with CRLF)."""
    lines = stored.replace(b"\r\n", b"\n").split(b"\n")
    return lines[:-1] if lines[-1] == b"" else lines


def header_lines(stored: bytes) -> List[bytes]:
    """What ``TOP n 0`` must return: the header and the blank line after it."""
    lines = wire_lines(stored)
    return lines[: lines.index(b"") + 1]


def list_size(p: Any, n: int) -> int:
    return int(p.list(n).split()[2])


def answer(mechanism: str, challenge: Optional[bytes]) -> Optional[bytes]:
    """The client side of SASL ``mechanism`` for user ``basic`` (RFC 4616 PLAIN, LOGIN, RFC 2195
    CRAM-MD5), written here so that fastpoplib's SASL code is not what checks itself. A
    ``None`` challenge asks for the initial response, as in ``smtplib.SMTP.auth``."""
    user, secret = b"basic", PASSWORD.encode()
    if mechanism == "PLAIN":
        return b"\0" + user + b"\0" + secret
    if mechanism == "LOGIN":
        return secret if challenge == b"Password:" else user
    if challenge is None:  # CRAM-MD5: the server speaks first
        return None
    return user + b" " + hmac.new(secret, challenge, "md5").hexdigest().encode()


def sasl_by_hand(p: Any, mechanism: str) -> List[bytes]:
    """AUTH the way code written for poplib does it, with ``_shortcmd`` (poplib has no auth()):
    returns the server's responses, CRAM-MD5's random challenge masked."""
    first = answer(mechanism, None)
    command = f"AUTH {mechanism}" if first is None else f"AUTH {mechanism} {base64.b64encode(first).decode()}"
    transcript = [p._shortcmd(command)]
    for _ in range(3):  # no mechanism here needs more than two challenges
        if transcript[-1].startswith(b"+OK"):
            return transcript
        challenge = base64.b64decode(transcript[-1][2:])
        if mechanism == "CRAM-MD5":
            transcript[-1] = b"+ <challenge>"
        transcript.append(p._shortcmd(base64.b64encode(answer(mechanism, challenge) or b"").decode()))
    pytest.fail(f"{mechanism} did not finish: {transcript}")


# -- reading mailboxes -----------------------------------------------------------------------


def read_everything(p: Any) -> List[Any]:
    """Every read-only command on every message, then RETR of a message that does not exist
    and a NOOP (a -ERR must leave the session in step)."""
    count, size = p.stat()
    out: List[Any] = [(count, size), p.list(), p.uidl(), p.capa()]
    for n in range(1, count + 1):
        out += [p.list(n), p.uidl(n), p.retr(n), p.top(n, 0), p.top(n, 3)]
    return out + [outcome(p.retr, count + 1), p.noop()]


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_basic_mailbox_identical_to_poplib(kind: str, tls: bool, dovecot_server: InteropDovecot) -> None:
    ours = run(kind, dovecot_server, read_everything, tls=tls)
    assert ours == run("stdlib", dovecot_server, read_everything, tls=tls)


def test_basic_mailbox_matches_what_is_stored(any_kind: str, dovecot_server: InteropDovecot) -> None:
    stored = dovecot_server.users["basic"]

    def check(p: Any) -> None:
        assert p.stat() == (len(stored), sum(map(len, stored)))
        for n, data in enumerate(stored, start=1):
            _, lines, octets = p.retr(n)
            assert (lines, octets) == (wire_lines(data), len(data))
            assert p.top(n, 0)[1] == header_lines(data)
            assert list_size(p, n) == len(data)

    run(any_kind, dovecot_server, check)


def read_message_alone(kind: str, server: InteropDovecot, n: int) -> List[Any]:
    """LIST, UIDL and RETR of one ``edge`` message in a session of its own: after "line too
    long" poplib's stream is out of step, so each message gets a fresh connection."""
    p = session(kind, server, "edge")
    try:
        return [p.list(n), p.uidl(n), outcome(p.retr, n)]
    finally:
        p.close()


def test_edge_messages(kind: str, dovecot_server: InteropDovecot) -> None:
    for n, data in enumerate(dovecot_server.users["edge"], start=1):
        ours = read_message_alone(kind, dovecot_server, n)
        theirs = read_message_alone("stdlib", dovecot_server, n)
        assert ours[2][0] == "ok", (data[:60], ours[2])
        assert ours[2][1][1] == wire_lines(data), data[:60]
        if max(map(len, wire_lines(data))) <= POPLIB_MAX_CONTENT:
            assert ours == theirs, data[:60]
            continue
        # poplib refuses the 100 kB line; fastpoplib returns it whole, with the octets LIST gave.
        assert theirs[2] == ("error_proto", ("line too long",))
        assert ours[:2] == theirs[:2]
        assert ours[2][1][2] == int(ours[0].split()[2])


def test_unterminated_last_line_counts_two_more_octets(any_kind: str, dovecot_server: InteropDovecot) -> None:
    """Dovecot ends a last line that has no newline with CRLF, which LIST does not count: the
    octets of RETR are LIST's size + 2, on both libraries."""
    n = next(i for i, data in enumerate(dovecot_server.users["edge"], start=1) if not data.endswith(b"\n"))

    def sizes(p: Any) -> Any:
        return list_size(p, n), p.retr(n)[2]

    size, octets = run(any_kind, dovecot_server, sizes, "edge")
    assert octets == size + 2


def test_large_messages(any_kind: str, dovecot_server: InteropDovecot) -> None:
    stored = dovecot_server.users["big"]

    def check(p: Any) -> None:
        for n, data in enumerate(stored, start=1):
            _, lines, octets = p.retr(n)
            assert octets == len(data) == list_size(p, n)
            assert b"\r\n".join(lines) + b"\r\n" == data

    run(any_kind, dovecot_server, check, "big")


def test_many_messages_listing(any_kind: str, dovecot_server: InteropDovecot) -> None:
    stored = dovecot_server.users["many"]
    p = session(any_kind, dovecot_server, "many")
    _, listing, _ = p.list()
    _, uids, _ = p.uidl()
    assert listing == [b"%d %d" % (n, len(data)) for n, data in enumerate(stored, start=1)]
    assert [u.split()[0] for u in uids] == [b"%d" % n for n in range(1, len(stored) + 1)]
    assert len({u.split()[1] for u in uids}) == len(stored)
    if any_kind != "stdlib":
        infos = p.messages()
        assert [i.uid for i in infos] == [u.split()[1].decode() for u in uids]
        got = [lines for _, (_, lines, _) in iterate(any_kind, p, p.retr_many(range(1, len(stored) + 1)))]
        assert got == [wire_lines(data) for data in stored]
    p.quit()


def test_retr_of_missing_message(any_kind: str, dovecot_server: InteropDovecot) -> None:
    def missing(p: Any) -> Any:
        with pytest.raises(poplib.error_proto) as info:
            p.retr(21)
        return info.value, p.noop()

    error, noop = run(any_kind, dovecot_server, missing)
    assert error.args[0].startswith(b"-ERR") and noop.startswith(b"+OK")
    if any_kind != "stdlib" and hasattr(fastpoplib, "ServerError"):
        assert isinstance(error, fastpoplib.ServerError)


# -- deleting ----------------------------------------------------------------------------------


def test_dele_without_quit_deletes_nothing(any_kind: str, dovecot_server: InteropDovecot, fresh_user: str) -> None:
    stored = dovecot_server.users[fresh_user]
    p = session(any_kind, dovecot_server, fresh_user)
    assert p.dele(1).startswith(b"+OK")
    assert p.stat()[0] == len(stored) - 1
    assert outcome(p.retr, 1)[0] == "error_proto"  # deleted within this session
    p.close()  # no QUIT: the session never reaches the UPDATE state
    assert run(any_kind, dovecot_server, lambda q: q.stat(), fresh_user) == (len(stored), sum(map(len, stored)))


def test_dele_and_quit_removes(any_kind: str, dovecot_server: InteropDovecot, fresh_user: str) -> None:
    stored = dovecot_server.users[fresh_user]
    mark = dovecot_server.log_mark()
    p = session(any_kind, dovecot_server, fresh_user)
    _, uids, _ = p.uidl()
    p.dele(1)
    assert p.rset().startswith(b"+OK")  # undoes the DELE
    p.dele(2)
    assert p.quit().startswith(b"+OK")
    dovecot_server.wait_for_log(f"del=1/{len(stored)}", since=mark)

    kept = [0] + list(range(2, len(stored)))

    def remaining(q: Any) -> Any:
        return [u.split()[1] for u in q.uidl()[1]], [q.retr(n)[1] for n in range(1, q.stat()[0] + 1)]

    assert run(any_kind, dovecot_server, remaining, fresh_user) == (
        [uids[i].split()[1] for i in kept],
        [wire_lines(stored[i]) for i in kept],
    )


# -- logging in --------------------------------------------------------------------------------


def test_apop(any_kind: str, dovecot_server: InteropDovecot) -> None:
    mark = dovecot_server.log_mark()
    p = connect(any_kind, dovecot_server.host, dovecot_server.plain_port)
    assert p.apop("basic", PASSWORD).startswith(b"+OK")
    assert p.stat()[0] == 20
    p.quit()
    dovecot_server.wait_for_log("user=<basic>, method=APOP", since=mark)


def by_hand_then_stat(kind: str, server: InteropDovecot, mechanism: str) -> List[Any]:
    p = connect(kind, server.host, server.plain_port)
    result = [sasl_by_hand(p, mechanism), p.stat()]
    p.quit()
    return result


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_sasl_via_shortcmd(kind: str, mechanism: str, dovecot_server: InteropDovecot) -> None:
    """poplib has no AUTH; code that does it with ``_shortcmd`` must work unchanged."""
    theirs = by_hand_then_stat("stdlib", dovecot_server, mechanism)
    assert theirs[0][-1].startswith(b"+OK")
    mark = dovecot_server.log_mark()
    assert by_hand_then_stat(kind, dovecot_server, mechanism) == theirs
    dovecot_server.wait_for_log(f"user=<basic>, method={mechanism}", since=mark)


@pytest.mark.parametrize("initial_response_ok", [True, False], ids=["initial", "no-initial"])
@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_auth_with_authobject(kind: str, mechanism: str, initial_response_ok: bool, dovecot_server: InteropDovecot) -> None:
    mark = dovecot_server.log_mark()
    p = connect(kind, dovecot_server.host, dovecot_server.plain_port)
    resp = p.auth(mechanism, partial(answer, mechanism), initial_response_ok=initial_response_ok)
    assert resp.startswith(b"+OK") and p.stat()[0] == 20
    p.quit()
    dovecot_server.wait_for_log(f"user=<basic>, method={mechanism}", since=mark)


@pytest.mark.parametrize("mechanism", [*MECHANISMS, "SCRAM-SHA-1", "SCRAM-SHA-256"])
def test_login_uses_the_mechanism_asked_for(kind: str, mechanism: str, dovecot_server: InteropDovecot) -> None:
    mark = dovecot_server.log_mark()
    p = connect(kind, dovecot_server.host, dovecot_server.plain_port)
    p.stls(context=dovecot_server.ssl_context())
    p.login("basic", PASSWORD, mechanisms=[mechanism])
    assert p.auth_mechanism == mechanism and p.stat()[0] == 20
    p.quit()
    dovecot_server.wait_for_log(f"user=<basic>, method={mechanism}", since=mark)


class _POP3From(poplib.POP3):
    """stdlib POP3 connecting from a chosen local address (poplib has no source_address)."""

    def __init__(self, source: str, host: str, port: int) -> None:
        self._source = source
        super().__init__(host, port, timeout=10)

    def _create_socket(self, timeout: Optional[float]) -> socket.socket:
        return socket.create_connection((self.host, self.port), timeout, source_address=(self._source, 0))


# After a failed login Dovecot 2.3 delays every later login from the same IP (2 s, doubling up
# to 15 s; auth_failure_delay = 0 does not turn this off), which would slow down, even time out,
# the tests after a wrong password. So each failing login comes from a loopback address of its own.
_failing_sources = (f"127.0.0.{n}" for n in itertools.count(10))


def connect_for_failure(kind: str, server: InteropDovecot) -> Any:
    """A client of ``kind`` for a login meant to fail, from a fresh source address."""
    source = next(_failing_sources)
    if kind == "stdlib":
        return _POP3From(source, server.host, server.plain_port)
    return connect(kind, server.host, server.plain_port, source_address=(source, 0))


def test_login_order_and_fallback_on_a_real_server(kind: str, dovecot_server: InteropDovecot) -> None:
    p = connect(kind, dovecot_server.host, dovecot_server.plain_port)
    p.stls(context=dovecot_server.ssl_context())
    p.login("basic", PASSWORD)
    assert p.auth_mechanism == "SCRAM-SHA-256"  # the strongest both offer
    p.quit()
    q = connect_for_failure(kind, dovecot_server)
    q.stls(context=dovecot_server.ssl_context())
    with pytest.raises(fastpoplib.AuthenticationError) as info:
        q.login("basic", "wrong-password", mechanisms=["SCRAM-SHA-256", "PLAIN", "LOGIN", "USER"])
    # SCRAM refused, then PLAIN sent the password itself and was refused: nothing more is tried.
    assert [m for m, _ in info.value.attempts] == ["SCRAM-SHA-256", "PLAIN"]
    assert "USER" in q.capa()  # still in step after the refusals
    q.quit()


def test_wrong_password(any_kind: str, dovecot_server: InteropDovecot) -> None:
    p = connect_for_failure(any_kind, dovecot_server)
    p.user("basic")
    with pytest.raises(poplib.error_proto) as info:
        p.pass_("wrong")
    assert b"[AUTH]" in info.value.args[0]
    if any_kind != "stdlib" and hasattr(fastpoplib, "AuthenticationError"):
        assert isinstance(info.value, fastpoplib.AuthenticationError)
    p.quit()


# -- TLS ---------------------------------------------------------------------------------------


def stls_then_read(kind: str, server: InteropDovecot) -> List[Any]:
    """CAPA before and after STLS, then a login and a message, over the upgraded connection."""
    p = connect(kind, server.host, server.plain_port)
    before = p.capa()
    p.stls(context=server.ssl_context())
    after = p.capa()
    p.user("basic")
    p.pass_(PASSWORD)
    result = [before, after, p.stat(), p.retr(1)]
    p.quit()
    return result


def test_stls_verified(kind: str, dovecot_server: InteropDovecot) -> None:
    theirs = stls_then_read("stdlib", dovecot_server)
    assert "STLS" in theirs[0] and "STLS" not in theirs[1]
    mark = dovecot_server.log_mark()
    assert stls_then_read(kind, dovecot_server) == theirs
    login = dovecot_server.wait_for_log("user=<basic>, method=PLAIN", since=mark)
    assert ", TLS," in login  # the server saw the login inside TLS


def test_implicit_tls_verified(any_kind: str, dovecot_server: InteropDovecot) -> None:
    stored = dovecot_server.users["basic"]
    assert run(any_kind, dovecot_server, lambda p: p.retr(1)[1], tls=True) == wire_lines(stored[0])


def test_default_context_refuses_unknown_ca(kind: str, dovecot_server: InteropDovecot) -> None:
    """fastpoplib verifies against the system roots by default, which do not know the test CA."""
    with pytest.raises(ssl.SSLCertVerificationError):
        connect(kind, dovecot_server.host, dovecot_server.tls_port, tls=True)
    p = connect(kind, dovecot_server.host, dovecot_server.plain_port)
    with pytest.raises(ssl.SSLCertVerificationError):
        p.stls()
    p.close()


def test_stdlib_default_context_does_not_verify(dovecot_server: InteropDovecot) -> None:
    """The contrast: stdlib poplib accepts any certificate unless given a context (gh-91826)."""
    p = poplib.POP3_SSL(dovecot_server.host, dovecot_server.tls_port, timeout=10)
    assert p.getwelcome().startswith(b"+OK")
    p.quit()


# -- a server that refuses plaintext authentication before STLS ---------------------------------


def strict_session(kind: str, server: InteropDovecot) -> List[Any]:
    """CAPA, a refused USER, STLS, CAPA again, then USER/PASS: what a careful client meets."""
    p = connect(kind, server.host, server.plain_port)
    before = p.capa()
    with pytest.raises(poplib.error_proto) as refused:
        p.user("basic")
    p.stls(context=server.ssl_context())
    result = [before, refused.value, p.capa(), p.user("basic"), p.pass_(PASSWORD), p.stat()]
    p.quit()
    return result


def test_strict_server_refuses_plaintext_login_before_stls(kind: str, dovecot_strict: InteropDovecot) -> None:
    theirs = strict_session("stdlib", dovecot_strict)
    before, refused, after = theirs[:3]
    # Before TLS only the mechanisms that do not expose the password are offered.
    assert "USER" not in before and before["SASL"] == ["CRAM-MD5", "SCRAM-SHA-1", "SCRAM-SHA-256"] and "STLS" in before
    assert b"[AUTH]" in refused.args[0]
    assert "USER" in after and "STLS" not in after
    ours = strict_session(kind, dovecot_strict)
    assert ours[1].args == refused.args
    if hasattr(fastpoplib, "AuthenticationError"):
        assert isinstance(ours[1], fastpoplib.AuthenticationError)
    assert ours[:1] + ours[2:] == theirs[:1] + theirs[2:]


def test_strict_server_allows_apop_before_stls(any_kind: str, dovecot_strict: InteropDovecot) -> None:
    """APOP never sends the password, so even a server that refuses plaintext accepts it."""
    p = connect(any_kind, dovecot_strict.host, dovecot_strict.plain_port)
    assert p.apop("basic", PASSWORD).startswith(b"+OK")
    assert p.stat()[0] == 20
    p.quit()


# -- the command-line retriever --------------------------------------------------------------


def test_cli_fetch_from_dovecot(dovecot_server: InteropDovecot, tmp_path: Path) -> None:
    env = dict(os.environ, DOVE_PW=PASSWORD)
    args = [sys.executable, "-m", "fastpoplib", "fetch", "--host", dovecot_server.host, "--port", str(dovecot_server.tls_port),
            "--user", "basic", "--password-env", "DOVE_PW", "--cafile", dovecot_server.cafile, "--maildir", str(tmp_path / "md")]
    first = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    assert "20 new message(s)" in first.stdout
    again = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert "0 new message(s)" in again.stdout
    assert len(list((tmp_path / "md" / "new").iterdir())) == 20
