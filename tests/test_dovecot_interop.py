"""Interoperability with a real server: Dovecot, started unprivileged on loopback by
`dovecot_harness`. Results are compared byte for byte with stdlib poplib on the same
mailbox, on the blocking and the asyncio client. Skipped only when Dovecot is not installed
(never in CI: `.ci/install-dovecot.sh` installs it, and CI=true turns the skip into a failure)."""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from pathlib import Path
import poplib
import ssl
from typing import Any, Iterator, List

import pytest

import fastpoplib
from clients import FAST_KINDS, KINDS, connect, iterate, logged_in, outcome
from fastpoplib.testing.dovecot import PASSWORD, Dovecot, installed
from fastpoplib.testing import sample_mailbox


def _edge_messages() -> List[bytes]:
    head = b"From: edge@example.com\r\nSubject: %s\r\n\r\n"
    return [
        head % b"dots" + b".\r\n..\r\n...\r\n.leading\r\n .notleading\r\nend\r\n",
        head % b"8-bit" + "Grüße — ünïcödé ✓ 😀\r\n".encode() + b"\x80\xfe not utf-8 \xff\r\n",
        head % b"998" + b"x" * 998 + b"\r\n",
        head % b"100k" + b"y" * 100_000 + b"\r\n",
        head % b"no final newline" + b"last line",
        b"From: lf@example.com\nSubject: bare LF\n\nline1\nline2\n.dot\n",
    ]


@pytest.fixture(scope="session")
def dovecot() -> Iterator[Dovecot]:
    if not installed():
        if os.environ.get("CI") == "true":
            pytest.fail("Dovecot is not installed in CI (.ci/install-dovecot.sh should have installed it)")
        pytest.skip("Dovecot is not installed (run .ci/install-dovecot.sh)")
    # Not under pytest's tmp dir: Dovecot's unprivileged processes must reach these files.
    root = tempfile.mkdtemp(prefix="fastpoplib-dovecot-")
    dove = Dovecot(Path(root))
    dove.add_user("basic", sample_mailbox(20).messages)
    dove.add_user("edge", _edge_messages())
    dove.add_user("big", [b"Subject: big %d\r\n\r\n" % i + (b"z" * 76 + b"\r\n") * 65_000 for i in range(3)])
    dove.add_user("many", [b"Subject: n%d\r\n\r\nbody %d\r\n" % (i, i) for i in range(3000)])
    # Users for tests that delete, made before the start: Dovecot notices passwd-file changes
    # by mtime, which a change within the same second can hide.
    for i in range(SCRATCH_USERS):
        dove.add_user(f"scratch{i}", sample_mailbox(5, seed=7).messages)
    try:
        with dove:
            yield dove
    finally:
        shutil.rmtree(root, ignore_errors=True)


SCRATCH_USERS = 8
_fresh = itertools.count()


@pytest.fixture
def scratch_user(dovecot: Dovecot) -> str:
    """An unused user with 5 messages, for tests that delete."""
    number = next(_fresh)
    assert number < SCRATCH_USERS, "raise SCRATCH_USERS"
    return f"scratch{number}"


def read_everything(kind: str, dove: Dovecot, user: str) -> List[Any]:
    p = logged_in(kind, dove.host, dove.plain_port, user, PASSWORD)
    try:
        count, size = p.stat()
        out: List[Any] = [(count, size), p.list(), p.uidl(), p.capa()]
        for n in range(1, count + 1):
            out += [p.list(n), p.uidl(n), outcome(p.retr, n), p.top(n, 1)]
        out.append(outcome(p.retr, count + 1))
        return out
    finally:
        p.quit()


@pytest.mark.parametrize("kind", FAST_KINDS)
def test_basic_mailbox_identical_to_poplib(kind: str, dovecot: Dovecot) -> None:
    assert read_everything(kind, dovecot, "basic") == read_everything("stdlib", dovecot, "basic")


def read_message_alone(kind: str, dove: Dovecot, user: str, n: int) -> List[Any]:
    """One message in a session of its own: after "line too long" poplib's stream is out of
    step, so each message gets a fresh connection for a fair comparison."""
    p = logged_in(kind, dove.host, dove.plain_port, user, PASSWORD)
    try:
        return [p.list(n), p.uidl(n), outcome(p.retr, n)]
    finally:
        p.close()


@pytest.mark.parametrize("kind", FAST_KINDS)
def test_edge_messages(kind: str, dovecot: Dovecot) -> None:
    for n, raw in enumerate(_edge_messages(), start=1):
        theirs = read_message_alone("stdlib", dovecot, "edge", n)
        ours = read_message_alone(kind, dovecot, "edge", n)
        if b"100k" not in raw:
            assert ours == theirs, raw[:60]
            continue
        # poplib refuses the 100 kB line (2048-byte limit); fastpoplib returns it whole.
        assert theirs[2] == ("error_proto", ("line too long",))
        status, (resp, lines, octets) = ours[2]
        assert status == "ok" and lines[-1] == b"y" * 100_000
        assert octets == int(ours[0].split()[2])


@pytest.mark.parametrize("kind", KINDS)
def test_large_messages(kind: str, dovecot: Dovecot) -> None:
    p = logged_in(kind, dovecot.host, dovecot.plain_port, "big", PASSWORD)
    for n in (1, 2, 3):
        resp, lines, octets = p.retr(n)
        assert len(lines) == 65_002 and octets == int(p.list(n).split()[2])
    p.quit()


@pytest.mark.parametrize("kind", KINDS)
def test_many_messages_listing(kind: str, dovecot: Dovecot) -> None:
    p = logged_in(kind, dovecot.host, dovecot.plain_port, "many", PASSWORD)
    _, listing, _ = p.list()
    _, uids, _ = p.uidl()
    assert len(listing) == len(uids) == 3000
    if kind != "stdlib":
        infos = p.messages()
        assert [i.uid for i in infos] == [u.split()[1].decode() for u in uids]
        got = sum(1 for _ in iterate(kind, p, p.retr_many(range(1, 3001))))
        assert got == 3000
    p.quit()


@pytest.mark.parametrize("kind", KINDS)
def test_dele_needs_quit(kind: str, dovecot: Dovecot, scratch_user: str) -> None:
    p = logged_in(kind, dovecot.host, dovecot.plain_port, scratch_user, PASSWORD)
    p.dele(1)
    p.close()  # no QUIT: nothing is deleted
    q = logged_in(kind, dovecot.host, dovecot.plain_port, scratch_user, PASSWORD)
    assert q.stat()[0] == 5
    q.dele(1)
    q.rset()
    q.dele(2)
    q.quit()
    r = logged_in(kind, dovecot.host, dovecot.plain_port, scratch_user, PASSWORD)
    assert r.stat()[0] == 4
    r.quit()


@pytest.mark.parametrize("kind", KINDS)
def test_apop(kind: str, dovecot: Dovecot) -> None:
    p = connect(kind, dovecot.host, dovecot.plain_port)
    assert p.apop("basic", PASSWORD).startswith(b"+OK")
    assert p.stat()[0] == 20
    p.quit()


@pytest.mark.parametrize("kind", FAST_KINDS)
@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-1", "SCRAM-SHA-256"])
def test_sasl(kind: str, mechanism: str, dovecot: Dovecot) -> None:
    p = connect(kind, dovecot.host, dovecot.plain_port)
    p.stls(context=dovecot.ssl_context())
    p.login("basic", PASSWORD, mechanisms=[mechanism])
    assert p.auth_mechanism == mechanism and p.stat()[0] == 20
    p.quit()


@pytest.mark.parametrize("kind", FAST_KINDS)
def test_login_order_and_fallback_on_a_real_server(kind: str, dovecot: Dovecot) -> None:
    p = connect(kind, dovecot.host, dovecot.plain_port)
    p.stls(context=dovecot.ssl_context())
    p.login("basic", PASSWORD)
    assert p.auth_mechanism == "SCRAM-SHA-256"
    p.quit()
    # Dovecot delays each further attempt from an address after a failure (2, 4, 8, 15 s): a
    # source address of its own keeps that penalty away from the other tests.
    source = ("127.0.0.3" if kind == "sync" else "127.0.0.4", 0)
    q = connect(kind, dovecot.host, dovecot.plain_port, timeout=30, source_address=source)
    q.stls(context=dovecot.ssl_context())
    with pytest.raises(fastpoplib.AuthenticationError) as info:
        q.login("basic", "wrong-password", mechanisms=["SCRAM-SHA-256", "PLAIN", "LOGIN", "USER"])
    assert [m for m, _ in info.value.attempts] == ["SCRAM-SHA-256", "PLAIN"]  # PLAIN sent the password itself
    assert "USER" in q.capa()  # still in step after the refusals (another login would wait out the penalty)
    q.quit()


def test_plain_auth_via_shortcmd_works_on_both(dovecot: Dovecot) -> None:
    import base64

    token = base64.b64encode(b"\0basic\0" + PASSWORD.encode()).decode()
    for lib in (poplib, fastpoplib):
        p = lib.POP3(dovecot.host, dovecot.plain_port)
        assert p._shortcmd(f"AUTH PLAIN {token}").startswith(b"+OK")
        p.quit()


@pytest.mark.parametrize("kind", KINDS)
def test_stls_and_implicit_tls_verified(kind: str, dovecot: Dovecot) -> None:
    ctx = dovecot.ssl_context()
    p = connect(kind, dovecot.host, dovecot.plain_port)
    p.stls(context=ctx)
    p.user("basic")
    p.pass_(PASSWORD)
    assert p.stat()[0] == 20
    p.quit()
    q = connect(kind, dovecot.host, dovecot.tls_port, tls=True, context=ctx)
    q.user("basic")
    q.pass_(PASSWORD)
    assert q.retr(1)[1]
    q.quit()


@pytest.mark.parametrize("kind", FAST_KINDS)
def test_self_signed_server_refused_without_context(kind: str, dovecot: Dovecot) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        connect(kind, dovecot.host, dovecot.tls_port, tls=True)


@pytest.mark.parametrize("kind", KINDS)
def test_wrong_password(kind: str, dovecot: Dovecot) -> None:
    p = connect(kind, dovecot.host, dovecot.plain_port)
    p.user("basic")
    with pytest.raises(poplib.error_proto) as info:
        p.pass_("wrong")
    assert b"[AUTH]" in info.value.args[0]
    if kind != "stdlib":
        assert isinstance(info.value, fastpoplib.AuthenticationError)
    p.quit()


def test_cli_fetch_from_dovecot(dovecot: Dovecot, tmp_path: Any) -> None:
    import subprocess
    import sys

    env = dict(os.environ, DOVE_PW=PASSWORD)
    args = [sys.executable, "-m", "fastpoplib", "fetch", "--host", dovecot.host, "--port", str(dovecot.tls_port),
            "--user", "basic", "--password-env", "DOVE_PW", "--cafile", dovecot.cafile, "--maildir", str(tmp_path / "md")]
    first = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    assert "20 new message(s)" in first.stdout
    again = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert "0 new message(s)" in again.stdout
    assert len(list((tmp_path / "md" / "new").iterdir())) == 20
