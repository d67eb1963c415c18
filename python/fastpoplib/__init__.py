"""fastpoplib: a fast, secure-by-default drop-in replacement for ``poplib``.

``import fastpoplib as poplib`` and existing code keeps working; see README.md for what is
different (verified TLS by default, CRLF rejection, secrets masked in debug output).
"""

from ._base import CR, CRLF, LF, MAXLINE, POP3_PORT, POP3_SSL_PORT
from ._aio import AsyncPOP3, AsyncPOP3_SSL
from ._client import POP3, POP3_SSL
from ._fetcher import AsyncFetcher, Fetcher, Message
from ._types import Capabilities, MessageInfo
from .exceptions import (
    AuthenticationError,
    CertificateVerificationError,
    ConnectionClosedError,
    DeleteError,
    InUseError,
    InvalidArgumentError,
    LocalProtocolError,
    LoginDelayError,
    POP3ConnectionError,
    POP3Error,
    POP3TimeoutError,
    RemoteProtocolError,
    ServerError,
    SysPermError,
    SysTempError,
    TLSError,
    error_proto,
)

# poplib's limit on a status line, read at each command (assigning it works as in poplib).
_MAXLINE = MAXLINE

HAVE_SSL = True

__version__ = "0.1.0"

__all__ = [
    "POP3",
    "POP3_SSL",
    "AsyncPOP3",
    "AsyncPOP3_SSL",
    "Fetcher",
    "AsyncFetcher",
    "Message",
    "MessageInfo",
    "Capabilities",
    "POP3_PORT",
    "POP3_SSL_PORT",
    "CR",
    "LF",
    "CRLF",
    "HAVE_SSL",
    "error_proto",
    "POP3Error",
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
