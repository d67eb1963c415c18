"""The exception tree of fastpoplib.

Every protocol error is a subclass of the standard library's ``poplib.error_proto``, so code
written for ``poplib`` (``except poplib.error_proto:``) keeps catching what it caught before.
Connection, timeout and TLS errors also inherit the matching built-in exceptions.
"""

from __future__ import annotations

import poplib as _std_poplib
import ssl as _ssl
from typing import Any, List, Tuple

__all__ = [
    "POP3Error",
    "error_proto",
    "ServerError",
    "AuthenticationError",
    "InUseError",
    "LoginDelayError",
    "SysTempError",
    "SysPermError",
    "DeleteError",
    "RemoteProtocolError",
    "LocalProtocolError",
    "InvalidArgumentError",
    "POP3ConnectionError",
    "ConnectionClosedError",
    "POP3TimeoutError",
    "TLSError",
    "CertificateVerificationError",
]


class POP3Error(Exception):
    """Base class of every exception raised by fastpoplib."""


class error_proto(POP3Error, _std_poplib.error_proto):  # noqa: N801 - poplib's name
    """A POP3 protocol error; also an instance of ``poplib.error_proto``."""


class ServerError(error_proto):
    """The server answered ``-ERR``. ``args[0]`` and :attr:`response` hold the reply bytes,
    exactly as ``poplib`` puts them in ``error_proto``."""

    @property
    def response(self) -> bytes:
        """The server's ``-ERR`` line, without CRLF (``b""`` if the error carries no bytes)."""
        return self.args[0] if self.args and isinstance(self.args[0], bytes) else b""


class AuthenticationError(ServerError):
    """Login refused (``-ERR`` to USER/PASS/APOP/AUTH, or ``[AUTH]``). For SASL mechanisms that
    report details (XOAUTH2), :attr:`details` holds the decoded server message. From
    ``login()``, :attr:`attempts` lists ``(method, reply)`` for each method tried, in order,
    the replies made printable; ``args[0]`` is the last reply."""

    details: object = None
    attempts: Tuple[Tuple[str, str], ...] = ()

    def __str__(self) -> str:
        if not self.attempts:
            return super().__str__()
        return "login refused; tried " + "; ".join(f"{method}: {reply}" for method, reply in self.attempts)


class InUseError(ServerError):
    """``-ERR [IN-USE]``: the maildrop is locked by another session (RFC 2449)."""


class LoginDelayError(ServerError):
    """``-ERR [LOGIN-DELAY]``: logging in again so soon is not allowed (RFC 2449)."""


class SysTempError(ServerError):
    """``-ERR [SYS/TEMP]``: a temporary server problem; retry later (RFC 3206)."""


class SysPermError(ServerError):
    """``-ERR [SYS/PERM]``: a permanent server problem; retrying will not help (RFC 3206)."""


class DeleteError(ServerError):
    """``dele_many()``: the server refused one or more DELEs. Every DELE was sent (pipelined,
    they were on their way anyway), so :attr:`deleted` lists exactly the messages now marked
    deleted, which the server removes at QUIT (RFC 1939 §6); call ``rset()`` to unmark them
    all (§5) or ``close()`` to end the session without applying them. :attr:`refused` holds
    ``(message, ServerError)`` for each ``-ERR``; ``args[0]`` is the first ``-ERR`` line."""

    def __init__(self, deleted: List[Any], refused: List[Tuple[Any, ServerError]]) -> None:
        super().__init__(refused[0][1].response)
        #: The messages marked deleted, as given to ``dele_many``, in order.
        self.deleted = deleted
        #: ``[(message, ServerError)]``: the DELEs the server refused.
        self.refused = refused

    def __str__(self) -> str:
        refused = "; ".join(f"{n}: {err.response.decode('utf-8', 'replace')}" for n, err in self.refused)
        marked = ", ".join(map(str, self.deleted)) or "none"
        return (
            f"DELE refused for {len(self.refused)} message(s) ({refused}); marked deleted: {marked}. "
            "They are removed at QUIT: call rset() to unmark them, or close() to leave without QUIT"
        )


class RemoteProtocolError(error_proto):
    """The server sent something malformed or larger than the configured limits. The
    connection is closed, because the rest of the stream can no longer be trusted; except
    for a malformed SASL challenge, after which the AUTH exchange is cancelled in step and
    the session goes on."""


class LocalProtocolError(error_proto):
    """The caller asked for something illegal (bad argument, closed or busy connection)."""


class InvalidArgumentError(LocalProtocolError, ValueError):
    """An argument would corrupt the command stream (CR, LF or NUL). Nothing was sent."""


class POP3ConnectionError(POP3Error, ConnectionError):
    """The connection could not be made, or broke."""


class ConnectionClosedError(RemoteProtocolError, POP3ConnectionError):
    """The server closed the connection where a reply was expected (poplib's ``-ERR EOF``)."""


class POP3TimeoutError(POP3Error, TimeoutError):
    """The server did not answer within the timeout. The connection is closed."""


class TLSError(POP3Error, _ssl.SSLError):
    """TLS could not be set up or broke; also an ``ssl.SSLError``."""

    def __str__(self) -> str:
        # OSError's and ValueError's __str__ disagree under multiple inheritance (the
        # certificate error is both): the message is the one argument.
        return str(self.args[0]) if len(self.args) == 1 else super().__str__()


class CertificateVerificationError(TLSError, _ssl.SSLCertVerificationError):
    """The server's certificate was not trusted or does not match the host name."""
