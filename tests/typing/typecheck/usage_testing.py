"""Correct, typed use of fastpoplib.exceptions and fastpoplib.testing.

tests/typing/test_typing.py checks this file with `mypy --strict --disallow-any-expr`: it must pass,
and no expression in it may be typed `Any` (a function returning `Any`, or an attribute holding
it, makes the check fail).
"""

from __future__ import annotations

import poplib
import ssl

from fastpoplib.exceptions import (
    AuthenticationError,
    CertificateVerificationError,
    ConnectionClosedError,
    InvalidArgumentError,
    POP3Error,
    POP3TimeoutError,
    ServerError,
    TLSError,
    error_proto,
)
from fastpoplib.testing import (
    Fault,
    Mailbox,
    Message,
    POP3TestServer,
    SASLQuirks,
    Session,
    TLSCertificates,
    sample_mailbox,
)
from typing_extensions import assert_type


def server_facts() -> tuple[str, int]:
    box = sample_mailbox(3, seed=1)
    assert_type(box, Mailbox)
    assert_type(box[0], Message)
    assert_type(box[0].lines, list[bytes])
    assert_type(box[0].size, int)
    assert_type(box.total_size, int)
    assert_type(box.uids, list[str])
    fault = Fault.stall(0.5, on="RETR")
    assert_type(fault, Fault)
    with POP3TestServer(box, users={"alice": "pw"}, faults=[fault, Fault.disconnect(on="QUIT")]) as srv:
        assert_type(srv.host, str)
        assert_type(srv.port, int)
        assert_type(srv.address, tuple[str, int])
        assert_type(srv.mailbox, Mailbox)
        assert_type(srv.sessions, list[Session])
        assert_type(srv.wait_for_sessions(1, timeout=1.0), list[Session])
        assert_type(srv.stls, bool)
        assert_type(srv.sasl, tuple[str, ...])
        assert_type(srv.sasl_quirks, SASLQuirks)
        session = srv.sessions[0]
        assert_type(session.commands, list[bytes])
        assert_type(session.user, str | None)
        assert_type(session.quit_received, bool)
        assert_type(session.wait_closed(1.0), bool)
        return srv.host, srv.port


def tls_material() -> ssl.SSLContext:
    certs = TLSCertificates()
    assert_type(certs.ca_pem, bytes)
    assert_type(certs.cafile, str)
    with POP3TestServer(tls="implicit", certificates=certs) as srv:
        return srv.client_context()


def exception_tree(exc: ServerError) -> bytes:
    # Each fastpoplib exception is also the stdlib exception that poplib code catches.
    as_poplib: poplib.error_proto = exc
    base: POP3Error = exc
    proto: error_proto = exc
    timeout: TimeoutError = POP3TimeoutError("timed out")
    closed: ConnectionError = ConnectionClosedError("-ERR EOF")
    invalid: ValueError = InvalidArgumentError("CR in argument")
    tls: ssl.SSLError = TLSError("handshake failed")
    cert: ssl.SSLCertVerificationError = CertificateVerificationError("unknown authority")
    del as_poplib, base, proto, timeout, closed, invalid, tls, cert
    assert_type(exc.response, bytes)
    assert_type(AuthenticationError(b"-ERR no").response, bytes)
    return exc.response
