"""The commands that take more than one call into the session, written once as generators and
run by both the blocking and the asyncio client.

A flow yields operations (:class:`Run`, :class:`Capa`...), each one call into the Rust
session, and receives their results; the client that runs it decides whether the call blocks
or awaits. The flows hold no protocol state: what is in flight on the connection is known
only to the session (``src/proto/session/``).
"""

from __future__ import annotations

import email.parser
import email.policy
import os
from dataclasses import dataclass
from typing import Any, Callable, Generator, List, Optional, Tuple, Union

from . import _core
from ._target_file import TargetFile
from ._types import Capabilities
from .exceptions import RemoteProtocolError, ServerError, error_proto

LongResponse = Tuple[bytes, List[bytes], int]


@dataclass(frozen=True)
class Run:
    """Send ``command`` (a ``_core.Command``) and read its reply: a status line, or a status
    line plus a multi-line body (as a list of lines, or as one ``bytes`` with CRLF line ends
    when ``as_bytes``). The command itself tells the session its reply's shape, whether it
    is a login step (a bare -ERR is then an AuthenticationError) and what is secret."""

    command: _core.Command
    as_bytes: bool = False


@dataclass(frozen=True)
class Capa:
    """CAPA: ``(resp, lines, octets)``; the session learns PIPELINING and the like from it."""


@dataclass(frozen=True)
class Messages:
    """LIST and UIDL merged in the session: ``[MessageInfo]``."""


@dataclass(frozen=True)
class StartTLS:
    """Send STLS and upgrade the connection with ``settings``."""

    settings: Any


@dataclass(frozen=True)
class OpenStream:
    """Send ``command`` and read its status: ``(resp, stream id)``; the body is read with
    :class:`Chunk`."""

    command: _core.Command


@dataclass(frozen=True)
class Chunk:
    """The next ~``size`` bytes of stream ``stream`` (``None`` at its end)."""

    stream: int
    size: int


@dataclass(frozen=True)
class DropStream:
    """Nobody will read the rest of stream ``stream``: the session drops it (no I/O)."""

    stream: int


@dataclass(frozen=True)
class Offload:
    """Call ``call()`` (blocking work without the connection, such as fetching an OAuth2
    token over HTTP) and send its result; the asyncio client runs it in a worker thread."""

    call: Callable[[], Any]


Op = Union[Run, Capa, Messages, StartTLS, OpenStream, Chunk, DropStream, Offload]
Flow = Generator[Op, Any, Any]


class Runner:
    """Steps a flow for a driver: ``op`` is the next operation; feed it the outcome with
    ``send`` or ``throw``; ``done``/``value`` once the flow has returned."""

    def __init__(self, flow: Flow) -> None:
        self._flow = flow
        self.done = False
        self.value: Any = None
        self.op: Any = None
        self._advance(flow.__next__)

    def _advance(self, step: Callable[[], Op]) -> None:
        try:
            self.op = step()
        except StopIteration as stop:
            self.done, self.value, self.op = True, stop.value, None

    def send(self, result: Any) -> None:
        self._advance(lambda: self._flow.send(result))

    def throw(self, exc: BaseException) -> None:
        self._advance(lambda: self._flow.throw(exc))


def encode(line: Union[str, bytes], encoding: str = "UTF-8") -> bytes:
    return line if isinstance(line, bytes) else line.encode(encoding)


def arg(value: Any, encoding: str = "UTF-8") -> bytes:
    """A command argument formatted as poplib formats it (``'RETR %s' % which``)."""
    return str(value).encode(encoding)


def secret(value: Union[str, bytes], encoding: str = "UTF-8") -> _core.Secret:
    """A password: bytes as they are, str encoded with ``encoding``; TypeError otherwise."""
    if isinstance(value, bytes):
        return _core.Secret(value)
    if isinstance(value, str):
        return _core.Secret(value.encode(encoding))
    raise TypeError(f"a password must be str or bytes, not {type(value).__name__}")


def run(command: _core.Command) -> Flow:
    return (yield Run(command))


def long_bytes(command: _core.Command) -> Flow:
    _, data, _ = yield Run(command, as_bytes=True)
    return data


def parsed(command: _core.Command, headers_only: bool = False) -> Flow:
    """The reply body parsed as an ``email.message.EmailMessage`` (policy ``default``)."""
    data = yield from long_bytes(command)
    parser = email.parser.BytesParser(policy=email.policy.default)
    return parser.parsebytes(data, headersonly=headers_only)


def _malformed(what: str, resp: bytes) -> RemoteProtocolError:
    return RemoteProtocolError(f"malformed {what} response: {resp[:100]!r}")


def stat(debuglevel: int = 0) -> Flow:
    resp = yield Run(_core.Command.stat())
    parts = resp.split()
    try:
        result = int(parts[1]), int(parts[2])
    except (IndexError, ValueError):
        raise _malformed("STAT", resp) from None
    if debuglevel:
        print("*stat*", repr(parts))
    return result


def apop(stamp: Optional[bytes], user: str, password: Union[str, bytes], encoding: str) -> Flow:
    """APOP with the greeting's timestamp ``stamp`` (the session's, None without one)."""
    if stamp is None:
        raise error_proto("-ERR APOP not supported by server")
    return (yield Run(_core.Command.apop(arg(user, encoding), secret(password, encoding), stamp)))


def capa() -> Flow:
    """CAPA; the session parses and keeps what it says (``capabilities``)."""
    try:
        caps = yield Capa()
    except ServerError:
        raise error_proto("-ERR CAPA not supported by server") from None
    return Capabilities(caps)


def stls(settings: Any, tls_established: bool) -> Flow:
    """CAPA, then STLS; ``settings`` is the rustls configuration, or None when Python's ``ssl``
    does the handshake the session asks for."""
    if tls_established:
        raise error_proto("-ERR TLS session already established")
    caps = yield from capa()
    if not caps.stls:
        raise error_proto("-ERR STLS not supported by server")
    resp = yield StartTLS(settings)
    return resp


# --- capabilities (RFC 2449) ------------------------------------------------------------


def capabilities(client: Any) -> Flow:
    """The server's CAPA as the session last read it, asked only if the session does not know
    it (never read, or forgotten at login or STLS); empty without CAPA."""
    caps = client.capabilities
    if caps is None:
        try:
            caps = yield from capa()
        except error_proto:
            caps = Capabilities()
    return caps


# --- streaming -------------------------------------------------------------------------------

CHUNK_SIZE = 1 << 20


def save(
    command: _core.Command,
    dest: Any,
    progress: Optional[Callable[[int, Optional[int]], Any]],
    total: Optional[int],
    chunk_size: int = CHUNK_SIZE,
) -> Flow:
    """Streams the body of ``command``'s reply into ``dest`` (a path, see :mod:`._target_file`,
    or a binary file object); calls ``progress(done, total)`` after each chunk; returns the
    bytes written. If writing fails, the session drops the rest of the body, so the connection
    stays usable; a path is left as it was unless the whole message was written."""
    own = isinstance(dest, (str, os.PathLike))
    out = TargetFile(dest) if own else dest
    complete = False
    try:
        _, stream = yield OpenStream(command)
        done = 0
        try:
            while True:
                chunk = yield Chunk(stream, chunk_size)
                if chunk is None:
                    if own:
                        out.commit()
                    complete = True
                    return done
                out.write(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
        except Exception:
            yield DropStream(stream)
            raise
    finally:
        if own and not complete:
            out.discard()


def size_of(which: Any, encoding: str) -> Flow:
    """The size LIST gives for one message (progress totals)."""
    resp = yield Run(_core.Command.list(arg(which, encoding)))
    parts = resp.split()
    try:
        return int(parts[2])
    except (IndexError, ValueError):
        raise _malformed("LIST", resp) from None


def one(op: Op) -> Flow:
    """A flow of a single operation."""
    return (yield op)
