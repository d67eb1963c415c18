"""TLS as poplib users set it up, on stdlib poplib (the reference, where it applies),
fastpoplib's blocking classes and its asyncio classes (through ``support.clients``):

1. an ``ssl.SSLContext`` is used exactly as given (client certificate, capath-only trust, a
   context that trusts nothing, keylog, ``sock`` is its SSLSocket), implicit TLS and STLS;
2. a self-signed CA:TRUE certificate made with ``openssl req -x509``, trusted with ``cafile=``
   (rustls) or with a context; untrusted ones refused with plain sentences.
"""

from __future__ import annotations

import contextlib
import poplib
import re
import shutil
import ssl
import subprocess
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import pytest

import fastpoplib
from fastpoplib.testing import POP3TestServer, TLSCertificates
from support import clients
from support.clients import KINDS

pytest.importorskip("trustme", reason="the TLS test server needs trustme")

USER, PASSWORD = "user", "password"
MODES = ("implicit", "stls")  # how TLS starts: POP3_SSL / AsyncPOP3_SSL, or stls()
SERVER_SANS = (("DNS", "localhost"), ("IP Address", "127.0.0.1"), ("IP Address", "0:0:0:0:0:0:0:1"))
# Two TLS 1.2 suites that a default context would not pick first (it prefers AES-256).
CIPHERS_12 = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256"

Factory = Callable[..., POP3TestServer]


# -- helpers -----------------------------------------------------------------------------------


def close_quietly(p: Any) -> None:
    with contextlib.suppress(Exception):
        p.close()


def session(p: Any) -> List[Any]:
    """A short read-only session, ending with QUIT; results comparable across clients."""
    return [p.user(USER), p.pass_(PASSWORD), p.stat(), p.list(), p.uidl(), p.retr(1), p.list(2), p.quit()]


@pytest.fixture
def reference(pop3_server_factory: Factory) -> List[Any]:
    """``session()`` as stdlib poplib sees it, on a fresh plain server (same sample mailbox)."""
    srv = pop3_server_factory()
    return session(poplib.POP3(srv.host, srv.port, timeout=10))


def tls_server(factory: Factory, mode: str, **kw: Any) -> POP3TestServer:
    return factory(tls="implicit" if mode == "implicit" else "none", **kw)


def open_with_context(kind: str, mode: str, srv: POP3TestServer, ctx: ssl.SSLContext, timeout: float = 10) -> Any:
    """A client of ``kind`` whose TLS is done with ``ctx``: implicit TLS, or plain + stls()."""
    if mode == "implicit":
        return clients.connect(kind, srv.host, srv.port, tls=True, context=ctx, timeout=timeout)
    p = clients.connect(kind, srv.host, srv.port, timeout=timeout)
    try:
        p.stls(context=ctx)
    except BaseException:
        close_quietly(p)
        raise
    return p


def refusal(kind: str, mode: str, srv: POP3TestServer, ctx: ssl.SSLContext) -> BaseException:
    """The exception with which a connection using ``ctx`` is refused. Under TLS 1.3 a
    refusal by the server arrives after the handshake, so it may surface at the first read."""
    p = None
    try:
        p = open_with_context(kind, mode, srv, ctx, timeout=5)
        p.user(USER)
    except Exception as exc:
        return exc
    finally:
        if p is not None:
            close_quietly(p)
    pytest.fail(f"{kind}/{mode}: the connection was not refused")


def plain_sentence(message: str) -> None:
    """What every TLS error text must be: a sentence, no tuple, no Rust debug text."""
    assert not re.search(r"^\(.*,\)$", message), message
    assert "Other(" not in message and "OtherError" not in message, message
    assert message == message.strip() and len(message.split()) >= 4, message


# Rust variant names (CaUsedAsEndEntity, CertificateRequired) and OpenSSL reason codes
# (TLSV13_ALERT_CERTIFICATE_REQUIRED): identifiers, not words.
IDENTIFIER = re.compile(r"\b[A-Z][a-z0-9]+[A-Z][A-Za-z0-9]*\b|\b[A-Z0-9]+_[A-Z0-9_]+\b")


# -- certificates made the usual way (openssl req -x509: CA:TRUE, leaf and root at once) ---------


class SelfSigned:
    """Self-signed certificates from the ``openssl`` command line, made once per module."""

    def __init__(self, directory: Path) -> None:
        self.openssl = shutil.which("openssl")
        self.directory = directory
        self._made: Dict[str, Tuple[str, str]] = {}

    def get(self, name: str, cn: str = "localhost", san: Optional[str] = "DNS:localhost,IP:127.0.0.1") -> Tuple[str, str]:
        """``(certfile, keyfile)`` of a fresh RSA self-signed certificate named ``name``."""
        if self.openssl is None:
            pytest.skip("the openssl command is not installed")
        if name not in self._made:
            cert, key = self.directory / f"{name}.pem", self.directory / f"{name}.key"
            cmd = [self.openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={cn}"]
            if san is not None:
                cmd += ["-addext", f"subjectAltName={san}"]
            subprocess.run(cmd + ["-keyout", str(key), "-out", str(cert)], check=True, capture_output=True, timeout=60)
            text = subprocess.run([self.openssl, "x509", "-in", str(cert), "-noout", "-text"], check=True, capture_output=True, text=True).stdout
            assert "CA:TRUE" in text, "openssl req -x509 no longer makes a CA certificate: the scenario is gone"
            self._made[name] = (str(cert), str(key))
        return self._made[name]


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> SelfSigned:
    return SelfSigned(tmp_path_factory.mktemp("self-signed"))


def self_signed_server(factory: Factory, self_signed: SelfSigned, mode: str = "implicit", name: str = "localhost", **kw: Any) -> POP3TestServer:
    cert, key = self_signed.get(name, **kw)
    return tls_server(factory, mode, certificates=TLSCertificates.from_files(cert, key))


# == 1. an SSLContext is used exactly as given ===================================================


@pytest.mark.parametrize("mode", MODES)
def test_context_client_certificate_is_presented(any_kind: str, mode: str, pop3_server_factory: Factory, tmp_path: Path, reference: List[Any]) -> None:
    certs = TLSCertificates(require_client_cert=True)
    srv = tls_server(pop3_server_factory, mode, certificates=certs)
    ctx = srv.client_context()
    ctx.load_cert_chain(*certs.client_cert_files(str(tmp_path)))
    assert session(open_with_context(any_kind, mode, srv, ctx)) == reference


@pytest.mark.parametrize("mode", MODES)
def test_context_without_client_certificate_is_refused(any_kind: str, mode: str, pop3_server_factory: Factory) -> None:
    srv = tls_server(pop3_server_factory, mode, certificates=TLSCertificates(require_client_cert=True))
    ctx = srv.client_context()
    if mode == "stls":
        # Under TLS 1.3 the server's refusal comes after the client's handshake is done, and
        # after STLS the client writes first (CAPA, USER): its write can race the server's
        # close. Under TLS 1.2 the refusal is part of the handshake, deterministically.
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    exc = refusal(any_kind, mode, srv, ctx)
    # The same type as poplib's (ssl.SSLError), and the library's own TLS error.
    assert isinstance(exc, ssl.SSLError), repr(exc)
    alert = "CERTIFICATE_REQUIRED" if mode == "implicit" else "HANDSHAKE_FAILURE"
    # poplib's text, or the library's sentence with ssl's reason kept as an attribute.
    assert alert in str(exc).upper().replace(" ", "_") or alert in (exc.reason or ""), str(exc)
    if any_kind != "stdlib":
        assert isinstance(exc, fastpoplib.TLSError)
        plain_sentence(str(exc))


def hashed_ca_dir(directory: Path, ca_pem: bytes) -> str:
    """A c_rehash-style directory (``<subject hash>.0``) holding only ``ca_pem``."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is not installed (needed for capath hashes)")
    directory.mkdir()
    pem = directory / "ca.pem"
    pem.write_bytes(ca_pem)
    if subprocess.run([openssl, "rehash", str(directory)], capture_output=True, timeout=30).returncode != 0:
        digest = subprocess.run([openssl, "x509", "-hash", "-noout", "-in", str(pem)], check=True, capture_output=True, text=True).stdout.strip()
        (directory / f"{digest}.0").symlink_to(pem.name)
    hashed = [p.name for p in directory.iterdir() if re.fullmatch(r"[0-9a-f]{8}\.0", p.name)]
    assert len(hashed) == 1, list(directory.iterdir())
    return str(directory)


@pytest.mark.parametrize("mode", MODES)
def test_context_trusting_a_private_ca_through_capath(any_kind: str, mode: str, pop3_server_factory: Factory, tmp_path: Path, reference: List[Any]) -> None:
    srv = tls_server(pop3_server_factory, mode)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(capath=hashed_ca_dir(tmp_path / "capath", srv.ca_pem))
    assert ctx.cert_store_stats()["x509_ca"] == 0  # capath is read lazily, by the handshake
    assert session(open_with_context(any_kind, mode, srv, ctx)) == reference
    # This very context looked the CA up in the directory: it did the verification.
    assert ctx.cert_store_stats()["x509_ca"] == 1


@pytest.mark.parametrize("mode", MODES)
def test_context_that_trusts_nothing_is_not_widened(any_kind: str, mode: str, pop3_server_factory: Factory, monkeypatch: pytest.MonkeyPatch) -> None:
    srv = tls_server(pop3_server_factory, mode)
    # Make the test CA a "public" root: the default verify paths (OpenSSL) and the system
    # store (rustls-native-certs) both read SSL_CERT_FILE. A context widened to the default
    # roots would now accept the server.
    monkeypatch.setenv("SSL_CERT_FILE", srv.cafile)
    open_with_context(any_kind, mode, srv, ssl.create_default_context()).quit()  # the widened trust works

    exc = refusal(any_kind, mode, srv, ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
    assert isinstance(exc, ssl.SSLCertVerificationError), repr(exc)
    if any_kind != "stdlib":
        assert isinstance(exc, fastpoplib.CertificateVerificationError)
        plain_sentence(str(exc))
        assert "127.0.0.1" in str(exc), str(exc)


@pytest.mark.parametrize("mode", MODES)
def test_context_keylog_filename_is_written(any_kind: str, mode: str, pop3_server_factory: Factory, tmp_path: Path) -> None:
    srv = tls_server(pop3_server_factory, mode)
    ctx = srv.client_context()
    keylog = tmp_path / "keys.log"
    ctx.keylog_filename = str(keylog)
    p = open_with_context(any_kind, mode, srv, ctx)
    p.user(USER)
    p.quit()
    labels = [line.split()[0] for line in keylog.read_text().splitlines() if line and not line.startswith("#")]
    # One TLS 1.3 handshake: each of its five secrets logged once (NSS key log format).
    assert sorted(labels) == [
        "CLIENT_HANDSHAKE_TRAFFIC_SECRET",
        "CLIENT_TRAFFIC_SECRET_0",
        "EXPORTER_SECRET",
        "SERVER_HANDSHAKE_TRAFFIC_SECRET",
        "SERVER_TRAFFIC_SECRET_0",
    ]


@pytest.mark.parametrize("mode", MODES)
def test_sock_is_the_contexts_sslsocket_and_tls_info_matches(mode: str, pop3_server_factory: Factory) -> None:
    """Differential: the same context settings give the same socket facts as poplib's."""
    srv = tls_server(pop3_server_factory, mode)
    seen: Dict[str, Any] = {}
    for kind in KINDS:
        ctx = srv.client_context()
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers(CIPHERS_12)
        p = open_with_context(kind, mode, srv, ctx)
        try:
            if kind != "async":
                sock = p.sock
                assert isinstance(sock, ssl.SSLSocket) and sock.context is ctx, (kind, sock)
                seen[kind] = (sock.version(), sock.cipher(), sock.getpeercert(), sock.getpeercert(binary_form=True))
            if kind != "stdlib":
                seen[f"{kind} tls_info"] = p.tls_info
            if kind == "sync":
                assert p.tls_info == (p.sock.version(), p.sock.cipher()[0])
        finally:
            p.quit()
    version, cipher, peercert, _ = seen["stdlib"]
    assert version == "TLSv1.2" and cipher[0] in CIPHERS_12.split(":")
    assert peercert["subjectAltName"] == SERVER_SANS
    assert seen["sync"] == seen["stdlib"]
    assert seen["sync tls_info"] == seen["async tls_info"] == (version, cipher[0])


def test_ssl_exception_attributes_are_those_of_poplib(kind: str, pop3_tls_server: POP3TestServer) -> None:
    fresh = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    std = refusal("stdlib", "implicit", pop3_tls_server, fresh)
    fast = refusal(kind, "implicit", pop3_tls_server, fresh)
    assert isinstance(std, ssl.SSLCertVerificationError)
    names = ("verify_code", "verify_message", "reason", "library")
    assert {n: getattr(fast, n, "<missing>") for n in names} == {n: getattr(std, n) for n in names}


# == 2. a self-signed certificate made the usual way ============================================


@pytest.mark.parametrize("mode", MODES)
def test_self_signed_ca_certificate_trusted_with_cafile(
    kind: str, mode: str, pop3_server_factory: Factory, self_signed: SelfSigned, reference: List[Any]
) -> None:
    srv = self_signed_server(pop3_server_factory, self_signed, mode)
    cert, _ = self_signed.get("localhost")
    if mode == "implicit":
        p = clients.connect(kind, srv.host, srv.port, tls=True, cafile=cert)
    else:
        p = clients.connect(kind, srv.host, srv.port)
        p.stls(cafile=cert)
    assert p.tls_info is not None and p.tls_info[0] == "TLSv1.3"
    assert session(p) == reference


@pytest.mark.parametrize("mode", MODES)
def test_self_signed_ca_certificate_trusted_with_context(
    any_kind: str, mode: str, pop3_server_factory: Factory, self_signed: SelfSigned, reference: List[Any]
) -> None:
    srv = self_signed_server(pop3_server_factory, self_signed, mode)
    cert, _ = self_signed.get("localhost")
    assert session(open_with_context(any_kind, mode, srv, ssl.create_default_context(cafile=cert))) == reference


@pytest.mark.parametrize("trust", ["default roots", "another self-signed cafile"])
def test_untrusted_self_signed_refused_by_rustls(kind: str, trust: str, pop3_server_factory: Factory, self_signed: SelfSigned) -> None:
    srv = self_signed_server(pop3_server_factory, self_signed)
    kw = {} if trust == "default roots" else {"cafile": self_signed.get("other")[0]}
    with pytest.raises(fastpoplib.CertificateVerificationError) as info:
        clients.connect(kind, srv.host, srv.port, tls=True, timeout=5, **kw)
    assert isinstance(info.value, ssl.SSLCertVerificationError)
    plain_sentence(str(info.value))
    assert str(info.value).startswith("certificate for 127.0.0.1 "), str(info.value)


@pytest.mark.parametrize("mode", MODES)
def test_untrusted_self_signed_refused_with_context(any_kind: str, mode: str, pop3_server_factory: Factory, self_signed: SelfSigned) -> None:
    srv = self_signed_server(pop3_server_factory, self_signed, mode)
    exc = refusal(any_kind, mode, srv, ssl.create_default_context(cafile=self_signed.get("other")[0]))
    assert isinstance(exc, ssl.SSLCertVerificationError), repr(exc)
    if any_kind != "stdlib":
        assert isinstance(exc, fastpoplib.CertificateVerificationError)
        plain_sentence(str(exc))
        assert str(exc) == (
            "certificate verify failed for 127.0.0.1: self-signed certificate; trust its CA in the context you pass (context.load_verify_locations(cafile=...))"
        )


@pytest.mark.parametrize("kind,trust", [(k, t) for k in KINDS for t in ("cafile", "context") if not (k == "stdlib" and t == "cafile")])
def test_self_signed_trusted_byte_for_byte_still_needs_the_right_name(kind: str, trust: str, pop3_server_factory: Factory, self_signed: SelfSigned) -> None:
    srv = self_signed_server(pop3_server_factory, self_signed, name="mailhost", cn="mail.example.org", san="DNS:mail.example.org")
    cert, _ = self_signed.get("mailhost", cn="mail.example.org", san="DNS:mail.example.org")
    if trust == "context":
        exc = refusal(kind, "implicit", srv, ssl.create_default_context(cafile=cert))
    else:
        with pytest.raises(fastpoplib.CertificateVerificationError) as info:
            clients.connect(kind, srv.host, srv.port, tls=True, timeout=5, cafile=cert)
        exc = info.value
    assert isinstance(exc, ssl.SSLCertVerificationError), repr(exc)
    if kind != "stdlib":
        assert str(exc) == "certificate is not valid for the name 127.0.0.1 (hostname mismatch)"


def test_context_hostname_checks_common_name_holds(any_kind: str, pop3_server_factory: Factory, self_signed: SelfSigned) -> None:
    """A CN-only certificate: accepted only when the context says to check the CN."""
    cert, key = self_signed.get("cn-only", san=None)
    srv = pop3_server_factory(host="localhost", tls="implicit", certificates=TLSCertificates.from_files(cert, key))
    strict = ssl.create_default_context(cafile=cert)
    strict.hostname_checks_common_name = False
    with pytest.raises(ssl.SSLCertVerificationError):
        p = clients.connect(any_kind, "localhost", srv.port, tls=True, context=strict, timeout=5)
        close_quietly(p)
    lenient = ssl.create_default_context(cafile=cert)
    lenient.hostname_checks_common_name = True
    p = clients.connect(any_kind, "localhost", srv.port, tls=True, context=lenient, timeout=5)
    assert p.user(USER) == b"+OK send PASS"
    p.quit()


@pytest.mark.parametrize("case", ["rustls untrusted self-signed", "rustls client certificate missing", "context client certificate missing"])
def test_tls_error_text_has_no_identifiers(kind: str, case: str, pop3_server_factory: Factory, self_signed: SelfSigned) -> None:
    """A plain sentence, not what these cases once gave: 'certificate for 127.0.0.1 was refused
    (CaUsedAsEndEntity); ...', 'TLS error with 127.0.0.1: received fatal alert:
    CertificateRequired', 'TLS error with 127.0.0.1: TLSV13_ALERT_CERTIFICATE_REQUIRED'."""
    if case == "rustls untrusted self-signed":
        srv = self_signed_server(pop3_server_factory, self_signed)
        with pytest.raises(fastpoplib.CertificateVerificationError) as info:
            clients.connect(kind, srv.host, srv.port, tls=True, timeout=5)
        exc: BaseException = info.value
    else:
        srv = pop3_server_factory(tls="implicit", certificates=TLSCertificates(require_client_cert=True))
        if case.startswith("rustls"):
            with pytest.raises(fastpoplib.TLSError) as tls_info:
                p = clients.connect(kind, srv.host, srv.port, tls=True, timeout=5, cafile=srv.cafile)
                p.user(USER)
            exc = tls_info.value
        else:
            exc = refusal(kind, "implicit", srv, srv.client_context())
    assert IDENTIFIER.search(str(exc)) is None, str(exc)
