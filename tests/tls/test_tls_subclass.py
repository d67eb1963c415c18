"""``POP3_SSL`` subclasses written for poplib: ``_create_socket`` overridden for logging or a
proxy, calling ``super()._create_socket(timeout)`` (an ``ssl.SSLSocket`` in poplib) or wrapping
a socket with ``self.context`` itself. Blocking client only: poplib's ``_create_socket`` hook
has no asyncio counterpart (``AsyncPOP3_SSL`` takes its context through ``connect``).

Every connection has a timeout, so a regression (waiting for a plaintext greeting on the TLS
port) fails in seconds instead of hanging.
"""

from __future__ import annotations

import hashlib
import socket
import ssl
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable, List

import pytest

import fastpoplib
from fastpoplib.testing import Fault, POP3TestServer, TLSCertificates

pytest.importorskip("trustme", reason="the TLS test server needs trustme")

USER, PASSWORD = "user", "password"
TIMEOUT = 5  # seconds; a connection that waits for a plaintext greeting ends here

Factory = Callable[..., POP3TestServer]


class SuperSSL(fastpoplib.POP3_SSL):
    """The logging idiom: poplib's socket, recorded."""

    made: List[Any]

    def _create_socket(self, timeout: Any) -> socket.socket:
        sock = super()._create_socket(timeout)
        type(self).made.append(sock)
        return sock


class WrapSSL(fastpoplib.POP3_SSL):
    """The proxy idiom: a TCP connection of our own, wrapped with ``self.context``."""

    def _create_socket(self, timeout: Any) -> socket.socket:
        raw = socket.create_connection((self.host, self.port), timeout)
        return self.context.wrap_socket(raw, server_hostname=self.host)


@pytest.fixture
def super_ssl() -> type:
    return type("LogSSL", (SuperSSL,), {"made": []})


@pytest.fixture(autouse=True)
def no_cert_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test CA is trusted only where a test says so."""
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)


def short_session(p: Any) -> None:
    assert p.welcome.startswith(b"+OK")
    assert p.user(USER).startswith(b"+OK")
    assert p.pass_(PASSWORD).startswith(b"+OK")
    assert p.stat()[0] >= 1
    assert p.retr(1)[0].startswith(b"+OK")
    p.quit()


def test_super_create_socket_returns_tls_with_cafile(pop3_server_factory: Factory, super_ssl: type) -> None:
    srv = pop3_server_factory(tls="implicit")
    p = super_ssl(srv.host, srv.port, cafile=srv.certificates.cafile, timeout=TIMEOUT)
    try:
        [sock] = super_ssl.made
        assert isinstance(sock, ssl.SSLSocket) and p.sock is sock
        assert p.tls_info is not None and p.tls_info[0].startswith("TLSv1.")
        assert p.context.verify_mode == ssl.CERT_REQUIRED and p.context.check_hostname
        short_session(p)
    finally:
        p.close()


def test_super_create_socket_uses_the_given_context(pop3_server_factory: Factory, super_ssl: type) -> None:
    srv = pop3_server_factory(tls="implicit")
    ctx = srv.certificates.client_context()
    p = super_ssl(srv.host, srv.port, context=ctx, timeout=TIMEOUT)
    try:
        assert p.context is ctx
        [sock] = super_ssl.made
        assert isinstance(sock, ssl.SSLSocket) and sock.context is ctx
        short_session(p)
    finally:
        p.close()


def test_super_create_socket_honours_ssl_cert_file(pop3_server_factory: Factory, super_ssl: type, monkeypatch: pytest.MonkeyPatch) -> None:
    """The newcomer's script: no keyword, the CA trusted through SSL_CERT_FILE."""
    srv = pop3_server_factory(tls="implicit")
    monkeypatch.setenv("SSL_CERT_FILE", srv.certificates.cafile)
    p = super_ssl(srv.host, srv.port, timeout=TIMEOUT)
    try:
        assert isinstance(p.sock, ssl.SSLSocket)
        short_session(p)
    finally:
        p.close()


def test_subclass_without_trust_is_verified_and_refused(pop3_server_factory: Factory, super_ssl: type) -> None:
    """No context, no cafile: the default context verifies, so the test CA is refused."""
    srv = pop3_server_factory(tls="implicit")
    with pytest.raises(ssl.SSLCertVerificationError) as info:
        super_ssl(srv.host, srv.port, timeout=TIMEOUT)
    assert isinstance(info.value, fastpoplib.CertificateVerificationError)


def test_subclass_cadata_pem_bytes(pop3_server_factory: Factory, super_ssl: type) -> None:
    """``cadata`` as fastpoplib takes it (PEM, bytes too), not as ssl reads bytes (DER)."""
    srv = pop3_server_factory(tls="implicit")
    p = super_ssl(srv.host, srv.port, cadata=srv.certificates.ca_pem, timeout=TIMEOUT)
    try:
        short_session(p)
    finally:
        p.close()


def test_self_context_wrap_socket_idiom(pop3_server_factory: Factory) -> None:
    srv = pop3_server_factory(tls="implicit")
    p = WrapSSL(srv.host, srv.port, cafile=srv.certificates.cafile, timeout=TIMEOUT)
    try:
        assert isinstance(p.sock, ssl.SSLSocket)
        short_session(p)
    finally:
        p.close()


def test_subclass_client_certificate_keywords(pop3_server_factory: Factory, super_ssl: type, tmp_path: Path) -> None:
    """certfile/keyfile reach the subclass's context: a server requiring one accepts us."""
    certs = TLSCertificates(require_client_cert=True)
    srv = pop3_server_factory(tls="implicit", certificates=certs)
    certfile, keyfile = certs.client_cert_files(str(tmp_path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # poplib's deprecated keywords
        p = super_ssl(srv.host, srv.port, keyfile, certfile, TIMEOUT, cafile=certs.cafile)
    try:
        short_session(p)
    finally:
        p.close()


def test_subclass_refuses_fingerprint_at_construction(super_ssl: type) -> None:
    """An ssl.SSLContext cannot pin a certificate: said before any connection is tried."""
    with pytest.raises(ValueError, match="cafile="):
        super_ssl("127.0.0.1", 9, fingerprint="SHA256:" + "AB" * 32, timeout=TIMEOUT)
    assert super_ssl.made == []


def test_default_path_stays_rustls_and_has_a_verified_context(pop3_server_factory: Factory) -> None:
    srv = pop3_server_factory(tls="implicit")
    p = fastpoplib.POP3_SSL(srv.host, srv.port, cafile=srv.certificates.cafile, timeout=TIMEOUT)
    try:
        assert not isinstance(p.sock, socket.socket)  # the rustls session's view, not Python's ssl
        ctx = p.context
        assert isinstance(ctx, ssl.SSLContext) and p.context is ctx
        assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
        # It carries the same trust: poplib code wrapping another connection with it works.
        with ctx.wrap_socket(socket.create_connection((srv.host, srv.port), TIMEOUT), server_hostname=srv.host) as other:
            assert other.recv(3) == b"+OK"
        short_session(p)
    finally:
        p.close()


def test_default_path_with_fingerprint_has_no_context(pop3_server_factory: Factory) -> None:
    srv = pop3_server_factory(tls="implicit")
    with srv.certificates.client_context().wrap_socket(socket.create_connection((srv.host, srv.port), TIMEOUT), server_hostname=srv.host) as s:
        der = s.getpeercert(binary_form=True)
    assert der is not None
    p = fastpoplib.POP3_SSL(srv.host, srv.port, fingerprint="SHA256:" + hashlib.sha256(der).hexdigest(), timeout=TIMEOUT)
    try:
        with pytest.raises(ValueError, match="fingerprint"):
            p.context  # noqa: B018 - the attribute access is what is tested
        short_session(p)
    finally:
        p.close()


def test_given_context_is_the_attribute(pop3_server_factory: Factory) -> None:
    srv = pop3_server_factory(tls="implicit")
    ctx = srv.certificates.client_context()
    p = fastpoplib.POP3_SSL(srv.host, srv.port, context=ctx, timeout=TIMEOUT)
    try:
        assert p.context is ctx and p.sock.context is ctx
        short_session(p)
    finally:
        p.close()


# -- sock.close() from another thread on the Python-socket path ----------------------------------


class OwnPlain(fastpoplib.POP3):
    def _create_socket(self, timeout: Any) -> socket.socket:
        return socket.create_connection((self.host, self.port), timeout)


def python_socket_client(how: str, factory: Factory, timeout: Any = None) -> Any:
    """A logged-in client whose socket Python drives; RETR stalls mid-reply for 10 s."""
    stall = Fault.stall_after(b"+OK\r\nSubject: x\r\n", 10, on="RETR", times=None)
    if how == "plain subclass":
        srv = factory(faults=[stall])
        p = OwnPlain(srv.host, srv.port, timeout=timeout)
    else:
        srv = factory(tls="implicit", faults=[stall])
        kw = dict(context=srv.certificates.client_context()) if how == "context" else dict(cafile=srv.certificates.cafile)
        p = (fastpoplib.POP3_SSL if how == "context" else type("LogSSL", (SuperSSL,), {"made": []}))(srv.host, srv.port, timeout=timeout, **kw)
    assert isinstance(p.sock, socket.socket)
    p.user(USER)
    p.pass_(PASSWORD)
    return srv, p


@pytest.mark.parametrize("how", ["plain subclass", "context", "ssl subclass"])
def test_sock_close_from_another_thread_ends_a_stalled_retr(how: str, pop3_server_factory: Factory) -> None:
    """poplib's watchdog with ``sock.close()`` (no timeout): the RETR ends at once, saying so."""
    srv, p = python_socket_client(how, pop3_server_factory)
    session = srv.sessions[-1]
    sock = p.sock

    def watchdog() -> None:
        deadline = time.monotonic() + 5
        while b"RETR 1" not in session.commands and time.monotonic() < deadline:
            time.sleep(0.01)
        sock.close()

    closer = threading.Thread(target=watchdog)
    started = time.monotonic()
    closer.start()
    try:
        with pytest.raises(fastpoplib.ConnectionClosedError) as info:
            p.retr(1)
        assert time.monotonic() - started < 3, "sock.close() did not end the RETR"
        assert str(info.value) == "the connection is closed; open a new one"
    finally:
        closer.join(5)
        p.close()


def test_python_socket_read_still_times_out(pop3_server_factory: Factory) -> None:
    srv, p = python_socket_client("plain subclass", pop3_server_factory, timeout=1)
    started = time.monotonic()
    try:
        with pytest.raises(fastpoplib.POP3TimeoutError):
            p.retr(1)
        assert 0.9 < time.monotonic() - started < 3
    finally:
        p.close()
