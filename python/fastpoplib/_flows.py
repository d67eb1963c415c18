"""poplib's commands written once, as generators, and run by both the blocking and the asyncio
client.

A flow yields operations (:class:`Short`, :class:`Long`...) and receives their results; the
client that runs it decides whether the I/O blocks or awaits. This is how the sync and async
classes share every command without a second copy of the logic.
"""

from __future__ import annotations

import email.parser
import email.policy
import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, Generator, List, NamedTuple, Optional, Tuple, Union

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


@dataclass(frozen=True)
class Send:
    """Write several command lines at once, reading nothing (pipelining)."""

    lines: Tuple[bytes, ...]


@dataclass(frozen=True)
class Recv:
    """Read the reply to a command sent earlier: a status line, plus a body when ``long``."""

    long: bool


@dataclass(frozen=True)
class BeginBody:
    """Send ``line`` and read its status; its body is then read with :class:`Chunk`."""

    line: bytes


@dataclass(frozen=True)
class Chunk:
    """Read the next ~``size`` bytes of the body being streamed (``None`` at its end)."""

    size: int


@dataclass(frozen=True)
class Emit:
    """Hand ``value`` to the caller now (batch calls deliver results as they arrive)."""

    value: Any


Op = Union[Short, Long, StartTLS, Send, Recv, BeginBody, Chunk, Emit]
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


def short(line: bytes, login: bool = False) -> Flow:
    return (yield Short(line, login))


def long(line: bytes) -> Flow:
    return (yield Long(line))


def long_bytes(line: bytes) -> Flow:
    _, data, _ = yield Long(line, as_bytes=True)
    return data


def parsed(line: bytes, headers_only: bool = False) -> Flow:
    """The reply body parsed as an ``email.message.EmailMessage`` (policy ``default``)."""
    data = yield from long_bytes(line)
    parser = email.parser.BytesParser(policy=email.policy.default)
    return parser.parsebytes(data, headersonly=headers_only)


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


class Capabilities(Dict[str, List[str]]):
    """CAPA as poplib returns it (``{name: [args]}``, so it compares equal to poplib's dict),
    with typed accessors for what a client decides on."""

    def has(self, name: str) -> bool:
        return name.upper() in (key.upper() for key in self)

    def _args(self, name: str) -> List[str]:
        return next((v for k, v in self.items() if k.upper() == name), [])

    @property
    def pipelining(self) -> bool:
        return self.has("PIPELINING")

    @property
    def stls(self) -> bool:
        return self.has("STLS")

    @property
    def utf8(self) -> bool:
        return self.has("UTF8")

    @property
    def sasl(self) -> List[str]:
        """SASL mechanisms offered (upper case)."""
        return [m.upper() for m in self._args("SASL")]

    @property
    def login_delay(self) -> Optional[int]:
        """Seconds between logins (RFC 2449 LOGIN-DELAY), if advertised."""
        args = self._args("LOGIN-DELAY")
        return int(args[0]) if args and args[0].isdigit() else None

    @property
    def expire(self) -> Optional[str]:
        """Days messages stay on the server (``"NEVER"`` possible), if advertised."""
        args = self._args("EXPIRE")
        return args[0] if args else None

    @property
    def implementation(self) -> Optional[str]:
        args = self._args("IMPLEMENTATION")
        return " ".join(args) if args else None


def capa() -> Flow:
    try:
        _, lines, _ = yield Long(b"CAPA")
    except ServerError:
        raise error_proto("-ERR CAPA not supported by server") from None
    return Capabilities(_core.parse_capa(lines))


def stls(settings: Any, tls_established: bool) -> Flow:
    if tls_established:
        raise error_proto("-ERR TLS session already established")
    caps = yield from capa()
    if not caps.stls:
        raise error_proto("-ERR STLS not supported by server")
    resp = yield StartTLS(settings)
    return resp


# --- pipelining (RFC 2449) ------------------------------------------------------------------

# Commands in flight at once. Commands are tiny, so a window's worth always fits in the socket
# buffer and writing it never blocks while the server is blocked writing replies to us.
WINDOW = 256


class Abandon(Exception):
    """Thrown into a batch flow when the caller stops iterating: drain the replies in flight."""


def remember_capa(client: Any) -> Flow:
    """CAPA, kept in ``client.capabilities`` for the batch calls' decisions."""
    client.capabilities = yield from capa()
    return client.capabilities


def capabilities(client: Any) -> Flow:
    """The server's CAPA as last read, asked only if never asked; empty without CAPA."""
    if client.capabilities is None:
        try:
            yield from remember_capa(client)
        except error_proto:
            client.capabilities = Capabilities()
    return client.capabilities


def pipelined(client: Any, lines: List[bytes], long: bool, convert: Callable[[int, Any], Any]) -> Flow:
    """Runs ``lines`` in order and emits ``convert(index, reply)`` for each; a ``-ERR`` reply is
    passed to ``convert`` as the ServerError. With PIPELINING up to WINDOW commands are in
    flight; without it, one at a time (same results). If ``convert`` raises or the caller
    stops early, the replies still in flight are read first, so the session stays usable."""
    caps = yield from capabilities(client)
    window = WINDOW if caps.pipelining else 1
    sent = received = 0
    try:
        while received < len(lines):
            if sent < len(lines) and sent - received < window // 2 + 1:
                batch = lines[sent : received + window]
                yield Send(tuple(batch))
                sent += len(batch)
            try:
                reply = yield Recv(long)
            except ServerError as exc:
                reply = exc
            received += 1
            yield Emit(convert(received - 1, reply))
    except (Abandon, ServerError):
        while received < sent:
            try:
                yield Recv(long)
            except ServerError:
                pass
            received += 1
        raise


class MessageInfo(NamedTuple):
    """One message of the maildrop: LIST's number and size, UIDL's unique id (None when the
    server has no UIDL)."""

    number: int
    size: int
    uid: Optional[str]


def _pairs(what: str, lines: List[bytes]) -> Dict[int, bytes]:
    out = {}
    for line in lines:
        parts = line.split(None, 1)
        try:
            out[int(parts[0])] = parts[1].strip()
        except (IndexError, ValueError):
            raise _malformed(what, line) from None
    return out


def messages(client: Any) -> Flow:
    caps = yield from capabilities(client)
    if caps.pipelining:
        yield Send((b"LIST", b"UIDL"))
        _, listing, _ = yield Recv(True)
        try:
            _, uidls, _ = yield Recv(True)
        except ServerError:
            uidls = []
    else:
        _, listing, _ = yield Long(b"LIST")
        try:
            _, uidls, _ = yield Long(b"UIDL")
        except ServerError:
            uidls = []
    sizes, uids = _pairs("LIST", listing), _pairs("UIDL", uidls)
    try:
        return [MessageInfo(n, int(size), uids[n].decode("utf-8", "replace") if n in uids else None) for n, size in sizes.items()]
    except ValueError:
        raise _malformed("LIST", b" ".join(listing[:3])) from None


def raise_errors(index: int, reply: Any) -> Any:
    if isinstance(reply, ServerError):
        raise reply
    return reply


# --- streaming -------------------------------------------------------------------------------

CHUNK_SIZE = 1 << 20


def stream(line: bytes, chunk_size: int = CHUNK_SIZE) -> Flow:
    """Emits the body of ``line``'s reply in chunks (CRLF line ends). Stopping early reads
    the rest of the body first, so the session stays usable."""
    yield BeginBody(line)
    try:
        while True:
            chunk = yield Chunk(chunk_size)
            if chunk is None:
                return
            if chunk:
                yield Emit(chunk)
    except Abandon:
        while (yield Chunk(chunk_size)) is not None:
            pass
        raise


def save(
    line: bytes,
    dest: Any,
    progress: Optional[Callable[[int, Optional[int]], Any]],
    total: Optional[int],
    chunk_size: int = CHUNK_SIZE,
) -> Flow:
    """Streams the body of ``line``'s reply into ``dest`` (a path, opened here, or a binary
    file object); calls ``progress(done, total)`` after each chunk; returns the bytes written.
    If writing fails, the rest of the body is read and dropped so the session stays usable."""
    own = isinstance(dest, (str, os.PathLike))
    out = open(dest, "wb") if own else dest
    try:
        yield BeginBody(line)
        done = 0
        while True:
            chunk = yield Chunk(chunk_size)
            if chunk is None:
                return done
            try:
                out.write(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
            except BaseException:
                while (yield Chunk(chunk_size)) is not None:
                    pass
                raise
    finally:
        if own:
            out.close()


def size_of(which: Any, encoding: str) -> Flow:
    """The size LIST gives for one message (progress totals)."""
    resp = yield Short(encode(f"LIST {which}", encoding))
    parts = resp.split()
    try:
        return int(parts[2])
    except (IndexError, ValueError):
        raise _malformed("LIST", resp) from None
