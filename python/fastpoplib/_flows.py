"""poplib's commands written once, as generators, and run by both the blocking and the asyncio
client.

A flow yields operations (:class:`Short`, :class:`Long`...) and receives their results; the
client that runs it decides whether the I/O blocks or awaits. This is how the sync and async
classes share every command without a second copy of the logic.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, Callable, Generator, List, Optional, Tuple, Union

from . import _core
from .exceptions import RemoteProtocolError, ServerError, error_proto

LongResponse = Tuple[bytes, List[bytes], int]


@dataclass(frozen=True)
class Short:
    """Send ``line`` and read a status line. ``login``: a bare -ERR is an AuthenticationError;
    ``secret``: the whole line is a SASL response and must never be logged."""

    line: bytes
    login: bool = False
    secret: bool = False


@dataclass(frozen=True)
class Long:
    """Send ``line`` and read a status line plus a multi-line body (as a list of lines, or as
    one ``bytes`` with CRLF line ends when ``as_bytes``)."""

    line: bytes
    as_bytes: bool = False


@dataclass(frozen=True)
class StartTLS:
    """Send STLS and upgrade the connection with ``settings``."""

    settings: Any


Op = Union[Short, Long, StartTLS]
Flow = Generator[Op, Any, Any]


def encode(line: Union[str, bytes], encoding: str = "UTF-8") -> bytes:
    return line if isinstance(line, bytes) else line.encode(encoding)


def short(line: bytes, login: bool = False) -> Flow:
    return (yield Short(line, login))


def long(line: bytes) -> Flow:
    return (yield Long(line))


def _malformed(what: str, resp: bytes) -> RemoteProtocolError:
    return RemoteProtocolError(f"malformed {what} response: {resp[:100]!r}")


def stat() -> Flow:
    resp = yield Short(b"STAT")
    parts = resp.split()
    try:
        return int(parts[1]), int(parts[2])
    except (IndexError, ValueError):
        raise _malformed("STAT", resp) from None


def apop(welcome: bytes, user: str, password: str, encoding: str) -> Flow:
    stamp = _core.apop_timestamp(welcome)
    if stamp is None:
        raise error_proto("-ERR APOP not supported by server")
    digest = _core.apop_digest(stamp, password.encode(encoding))
    return (yield Short(encode(f"APOP {user} {digest}", encoding), login=True))


def capa() -> Flow:
    try:
        _, lines, _ = yield Long(b"CAPA")
    except ServerError:
        raise error_proto("-ERR CAPA not supported by server") from None
    return {name: args for name, args in _core.parse_capa(lines)}


def stls(settings: Any, tls_established: bool) -> Flow:
    if tls_established:
        raise error_proto("-ERR TLS session already established")
    caps = yield from capa()
    if "STLS" not in caps:
        raise error_proto("-ERR STLS not supported by server")
    resp = yield StartTLS(settings)
    return resp


# --- SASL (RFC 5034) --------------------------------------------------------------------

AuthObject = Callable[[Optional[bytes]], Union[str, bytes, None]]

# RFC 5034 §4: an AUTH command line with its initial response is at most 255 octets.
_MAX_AUTH_LINE = 255


def _b64(data: Union[str, bytes]) -> bytes:
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return base64.b64encode(raw) if raw else b"="


def auth(mechanism: str, authobject: AuthObject, initial_response_ok: bool = True) -> Flow:
    """The SASL exchange: ``authobject(None)`` gives the initial response, then
    ``authobject(challenge)`` answers each ``+ <base64>`` challenge."""
    mech = mechanism.upper().encode("ascii")
    first = authobject(None) if initial_response_ok else None
    line = b"AUTH " + mech
    pending = None
    if first is not None:
        response = _b64(first)
        if len(line) + 1 + len(response) <= _MAX_AUTH_LINE:
            line += b" " + response
        else:
            pending = response  # too long for the AUTH line: send it after the first "+".
    resp = yield Short(line, login=True)
    while not resp.startswith(b"+OK"):
        if pending is not None:
            answer, pending = pending, None
        else:
            try:
                challenge = base64.b64decode(resp[1:].strip(), validate=True)
            except ValueError:
                yield Short(b"*", login=True, secret=True)
                raise _malformed("SASL challenge", resp) from None
            answer = _b64(authobject(challenge) or b"")
            if answer == b"=":
                answer = b""
        resp = yield Short(answer, login=True, secret=True)
    return resp

