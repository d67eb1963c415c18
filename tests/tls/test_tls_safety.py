"""Where fastpoplib's TLS is deliberately safer than poplib's, and how it fails: certificates
verified by default (issuer, host name, expiry), client certificates, and STARTTLS response
injection. Sync and async alike."""

from __future__ import annotations

import ssl
from typing import Any

import pytest

import fastpoplib
from fastpoplib.testing import Fault
from support.clients import connect


def test_certificate_is_verified_by_default(kind: str, pop3_tls_server: Any) -> None:
    with pytest.raises(ssl.SSLCertVerificationError) as info:
        connect(kind, pop3_tls_server.host, pop3_tls_server.port, tls=True)
    assert isinstance(info.value, fastpoplib.CertificateVerificationError)
    assert "unknown authority" in str(info.value) and "cafile" in str(info.value)


def test_cafile_and_unverified_context(kind: str, pop3_tls_server: Any) -> None:
    p = connect(kind, pop3_tls_server.host, pop3_tls_server.port, tls=True, cafile=pop3_tls_server.cafile) if kind == "sync" else None
    if p is not None:
        assert "USER" in p.capa()
        p.quit()
    insecure = ssl.create_default_context()
    insecure.check_hostname = False
    insecure.verify_mode = ssl.CERT_NONE
    q = connect(kind, pop3_tls_server.host, pop3_tls_server.port, tls=True, context=insecure)
    assert "USER" in q.capa()
    q.quit()


def test_wrong_host_name_is_refused(kind: str, pop3_server_factory: Any) -> None:
    # The test certificate names 127.0.0.1, ::1 and localhost, not 127.0.0.2.
    srv = pop3_server_factory(tls="implicit", host="127.0.0.2")
    with pytest.raises(ssl.SSLCertVerificationError, match="not valid for the name"):
        connect(kind, "127.0.0.2", srv.port, tls=True, context=srv.client_context())
    unchecked = srv.client_context()
    unchecked.check_hostname = False
    p = connect(kind, "127.0.0.2", srv.port, tls=True, context=unchecked)
    assert "USER" in p.capa()
    p.quit()


def test_stls_response_injection_is_refused(kind: str, pop3_server: Any) -> None:
    pop3_server.add_fault(Fault.inject_after_stls(b"+OK injected\r\n"))
    p = connect(kind, pop3_server.host, pop3_server.port)
    with pytest.raises(fastpoplib.RemoteProtocolError, match="injection"):
        p.stls(context=pop3_server.client_context())
    with pytest.raises(fastpoplib.POP3Error):
        p.noop()
    p.close()


def test_keyfile_certfile_are_deprecated(pop3_tls_server: Any, tmp_path: Any) -> None:
    with pytest.raises(ValueError, match="mutually exclusive"), pytest.warns(DeprecationWarning):
        fastpoplib.POP3_SSL(pop3_tls_server.host, pop3_tls_server.port, None, pop3_tls_server.cafile, context=ssl.create_default_context())


def test_expired_certificate_is_refused(kind: str, pop3_server_factory: Any) -> None:
    from fastpoplib.testing.certs import TLSCertificates

    certs = TLSCertificates(expired=True)
    srv = pop3_server_factory(tls="implicit", certificates=certs)
    with pytest.raises(fastpoplib.CertificateVerificationError, match="expired"):
        connect(kind, srv.host, srv.port, tls=True, context=certs.client_context())


def test_client_certificate(pop3_server_factory: Any, tmp_path: Any) -> None:
    from fastpoplib.testing.certs import TLSCertificates

    certs = TLSCertificates(require_client_cert=True)
    srv = pop3_server_factory(tls="implicit", certificates=certs)
    certfile, keyfile = certs.client_cert_files(str(tmp_path))
    with pytest.warns(DeprecationWarning):  # poplib 3.11's positional form
        p = fastpoplib.POP3_SSL(srv.host, srv.port, keyfile, certfile, cafile=certs.cafile)
    p.user("user")
    assert p.pass_("password").startswith(b"+OK")
    p.quit()
    with pytest.raises(fastpoplib.POP3Error):  # no client certificate: the server refuses
        q = fastpoplib.POP3_SSL(srv.host, srv.port, cafile=certs.cafile, timeout=5)
        q.user("user")

