"""What the blocking and the asyncio clients share: the poplib command methods (each runs a
flow from ``_flows``), argument checks and the printable state. A subclass supplies
``_run(flow)``, which either blocks or returns an awaitable."""

# The command methods return what their flow returns (``_flows`` generators are not typed
# per command): their annotations are the contract, checked from the outside by
# tests/typing/typecheck/usage.py and misuse.py.
# mypy: disable-error-code="no-any-return"

from __future__ import annotations

import os
import socket
import sys
from email.message import EmailMessage
from typing import Any, Callable, Iterable, Iterator, List, Optional, Tuple, TypeVar, Union, overload

from . import _core, _flows, _fork, _login, _secrets, _trace
from ._types import Capabilities, LongResponse, MessageInfo, SupportsWriteBytes
from .exceptions import DeleteError, LocalProtocolError, ServerError

#: A message number as the commands take it: an ``int``, or its decimal ``str`` (the
#: argument is formatted into the command line, as poplib does).
Which = Union[int, str]
N = TypeVar("N", bound=Union[int, str])

POP3_PORT = 110
POP3_SSL_PORT = 995
CR = b"\r"
LF = b"\n"
CRLF = CR + LF

# Defaults for the limits that keep a hostile server from exhausting memory, the only place
# they are written: each name is the one the public API uses.
MAXLINE = 2048  # longest status line, CRLF included: poplib's _MAXLINE
MAX_LINE_LENGTH = 1 << 20  # longest message line: RFC 5322 allows 998, real mail goes past
MAX_RESPONSE_SIZE = 256 << 20  # largest multi-line response held in memory


def current_maxline() -> int:
    """``fastpoplib._MAXLINE``, read at each command as poplib reads its module global, so
    assigning it works as it does in poplib."""
    return getattr(sys.modules.get("fastpoplib"), "_MAXLINE", MAXLINE)



def _count(name: str, value: Any, minimum: int = 0) -> int:
    """An int argument as poplib would take it: TypeError for a non-int, ValueError below
    ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, not {value}")
    return value


class BatchReplies:
    """What the batch calls return: iterates ``(number, reply)`` as replies arrive. The
    session sends the commands, a window at a time, and keeps replies read ahead for it;
    when this object goes away (``break``, an exception, the end), the session drops what
    is still in flight. Subclasses add ``__next__`` or ``__anext__``."""

    def __init__(self, client: Any, numbers: List[Any], commands: List[_core.Command], keep_errors: bool = False) -> None:
        self._client = client
        # Hand out a -ERR as the item's reply and go on, rather than raise and stop.
        self._keep_errors = keep_errors
        self._numbers = numbers
        self._conn = client._check_open()
        self._id = self._conn.batch(commands)
        self._done = False

    def _item(self, item: Any) -> Any:
        if item is None:
            self._finish()
            return None
        index, reply = item
        if isinstance(reply, ServerError) and not self._keep_errors:
            self._finish()
            raise reply
        return self._numbers[index], reply

    def _finish(self) -> None:
        if not self._done:
            self._done = True
            self._conn.drop_batch(self._id)

    def close(self) -> None:
        """Stop early: the session drops the replies still in flight (no I/O here)."""
        self._finish()

    def __del__(self) -> None:
        # `__init__` may have failed before the batch existed (a bad argument).
        if hasattr(self, "_done"):
            self._finish()


def _deletions(items: List[Tuple[Any, Any]]) -> List[bytes]:
    """``dele_many``'s result: the ``+OK`` lines, or DeleteError naming what is marked."""
    refused = [(n, reply) for n, reply in items if isinstance(reply, ServerError)]
    if refused:
        raise DeleteError([n for n, reply in items if not isinstance(reply, ServerError)], refused)
    return [reply for _, reply in items]


def resolve_timeout(timeout: Any) -> Optional[float]:
    """poplib's rules: the default means ``socket.getdefaulttimeout()``, ``0`` is refused."""
    if timeout is socket._GLOBAL_DEFAULT_TIMEOUT:  # type: ignore[attr-defined]
        return socket.getdefaulttimeout()
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        # As socket.settimeout does: a number of seconds, not a string.
        raise TypeError(f"timeout must be a number of seconds or None, not {type(timeout).__name__}")
    if not timeout:
        raise ValueError("Non-blocking socket (timeout=0) is not supported")
    return float(timeout)


class POP3Base:
    """poplib's API, minus the I/O: what :class:`POP3` and :class:`AsyncPOP3` share."""

    encoding = "UTF-8"
    # Class-level defaults: a poplib-style subclass may skip ``__init__`` and set only
    # ``host``, ``port``, ``sock``, ``file`` and ``_debugging`` itself.
    _conn: Any = None
    # The Rust session, kept after close() so that what the server said stays readable.
    _session: Any = None
    _driver: Any = None
    _stls_context: Any = None
    _debugging = 0
    _tracing = False
    _maxline = MAXLINE
    _label = "pop3"
    auth_mechanism: Optional[str] = None
    # The secrets a flow in progress sent (``_secrets.hidden``), masked in what is shown.
    _secrets: Tuple[bytes, ...] = ()

    def __init__(self, host: str, port: int) -> None:
        if not isinstance(host, str) or not host:
            raise ValueError(f"host must be a non-empty string, not {host!r}")
        if isinstance(port, bool) or not isinstance(port, int):
            raise TypeError(f"port must be an int, not {type(port).__name__}")
        if not 0 <= port <= 65535:
            raise OverflowError(f"port must be 0-65535, not {port}")
        self.host = host
        self.port = port
        self._label = _trace.label(host, port)
        self._debugging = 0
        self.auth_mechanism: Optional[str] = None
        self._maxline = current_maxline()

    # -- the hooks a driver provides -------------------------------------------------------
    def _run(self, flow: _flows.Flow) -> Any:
        raise NotImplementedError

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Operation ``name`` of the Rust connection: its result (blocking) or an awaitable."""
        raise NotImplementedError

    def _batch(self, numbers: List[Any], commands: List[_core.Command], keep_errors: bool = False) -> Any:
        """A :class:`BatchReplies` iterator (sync or async) over ``commands`` sent as a batch."""
        raise NotImplementedError

    def _collect(self, items: Any, finish: Callable[[List[Tuple[Any, Any]]], Any]) -> Any:
        """``finish([(number, reply)])`` over a whole batch (or an awaitable of it)."""
        raise NotImplementedError

    def _stream(self, command: _core.Command, chunk_size: int) -> Any:
        """The body of ``command``'s reply in chunks (an iterator or an async iterator)."""
        raise NotImplementedError

    def _not_opened(self) -> str:
        """What to do with a client never opened (only an asyncio one can be)."""
        return "the connection was never opened; open a new one"

    def _check_open(self) -> Any:
        if self._conn is None:
            self._attach(self._adopt())
            if self._conn is None:
                # Why the session was closed (by close(), or by an error before it), as the
                # session says it; a connection never opened has no session.
                if self._session is None:
                    raise LocalProtocolError(self._not_opened())
                raise LocalProtocolError(self._session.closed or "the connection is closed; open a new one")
        return self._conn

    def _attach(self, conn: Any) -> None:
        self._conn = conn
        if conn is not None:
            self._session = conn

    # -- what the server said: read from the Rust session, never kept here ------------------
    @property
    def welcome(self) -> bytes:
        """The server's greeting line (RFC 1939 §4), as read when connecting; ``b""`` before."""
        greeting = None if self._session is None else self._session.welcome
        return b"" if greeting is None else greeting

    @welcome.setter
    def welcome(self, value: bytes) -> None:
        # poplib's subclass idiom ``self.welcome = self._getresp()`` stores what the session
        # already holds; anything else would be a second, diverging copy.
        if value != self.welcome:
            raise AttributeError("welcome is the greeting the server sent and cannot be replaced")

    @property
    def capabilities(self) -> Optional[Capabilities]:
        """CAPA (RFC 2449) as last read, ``{name: [arguments]}``; None when not read since the
        last change that invalidates it (login, RFC 2449 §5; STLS, RFC 2595 §4; ``login()`` and
        ``stls()`` read it again), empty when the server has no CAPA. No I/O."""
        caps = None if self._session is None else self._session.capabilities
        return None if caps is None else Capabilities(caps)

    @property
    def _tls_up(self) -> bool:
        return self._session is not None and bool(self._session.tls)

    def _apop_timestamp(self) -> Optional[bytes]:
        stamp: Optional[bytes] = self._check_open().apop_timestamp
        return stamp

    def _adopt(self) -> Any:
        """A connection over a socket a subclass set up itself, or None."""
        return None

    def _before(self, conn: Any) -> None:
        """Applies what may have changed since the last call: ``fastpoplib._MAXLINE`` (read
        at each command, as poplib reads its global) and whether lines are traced."""
        maxline = current_maxline()
        if maxline != self._maxline:
            conn.set_limits(max_status_line=maxline)
            self._maxline = maxline
        if not self._tracing:
            # Always on: audit hooks see every line sent, whether or not anyone debugs.
            conn.set_trace(True)
            self._tracing = True
            _fork.track(self)  # once per connection: its first call

    def _after(self) -> None:
        if self._conn is not None:
            lines = self._conn.take_trace()
            if lines:
                _trace.show(self, lines)

    def _dispatch(self, op: _flows.Op) -> Any:
        """Starts ``op``: one call into the session."""
        if isinstance(op, _flows.Run):
            return self._call("run", op.command, as_bytes=op.as_bytes)
        if isinstance(op, _flows.Chunk):
            return self._call("chunk", op.stream, op.size)
        if isinstance(op, _flows.OpenStream):
            return self._call("open_stream", op.command)
        if isinstance(op, _flows.Capa):
            return self._call("capa")
        if isinstance(op, _flows.Messages):
            return self._call("messages")
        if isinstance(op, _flows.StartTLS):
            return self._call("starttls", op.settings)
        raise TypeError(f"unknown operation {op!r}")

    def _line(self, line: Union[str, bytes]) -> bytes:
        return _flows.encode(line, self.encoding)

    def _arg(self, value: Any) -> bytes:
        return _flows.arg(value, self.encoding)

    # -- poplib's public API -------------------------------------------------------------------
    # The command methods return ``self._run(flow)``: the reply in ``POP3``, an awaitable in
    # ``AsyncPOP3``, which wraps each of them in a coroutine function (``_aio.py``). The
    # annotations are the blocking ones; ``AsyncPOP3`` declares its own for type checkers.
    # Unless said otherwise, a command raises ServerError (or a RESP-CODES subclass: InUseError,
    # LoginDelayError, SysTempError, SysPermError) when the server answers -ERR,
    # RemoteProtocolError for a malformed or oversized reply (the connection is then closed),
    # ConnectionClosedError/POP3ConnectionError when the connection breaks, POP3TimeoutError
    # after ``timeout`` seconds without data, and LocalProtocolError when the connection is
    # closed or busy with another call; InvalidArgumentError (nothing sent) for an argument
    # holding CR, LF or NUL. All are ``poplib.error_proto`` except the connection, timeout
    # and TLS errors, which are ``ConnectionError``, ``TimeoutError`` and ``ssl.SSLError``.

    def getwelcome(self) -> bytes:
        """The server's greeting line (RFC 1939 §4), as read when connecting, e.g.
        ``b"+OK POP3 server ready <1896.697170952@dbc.mtview.ca.us>"``. No I/O."""
        return self.welcome

    def set_debuglevel(self, level: int) -> None:
        """poplib's debug output on stdout: ``1`` prints each command sent (``*cmd*``), ``2``
        also each line sent and each status line received. Passwords, APOP digests and SASL
        responses are masked. The ``fastpoplib`` logger gets the same lines at DEBUG."""
        self._debugging = level

    def user(self, user: str) -> bytes:
        """USER (RFC 1939 §7): send the user name; returns the ``+OK`` line.
        Raises AuthenticationError on ``-ERR``."""
        return self._run(_flows.run(_core.Command.user(self._arg(user))))

    def pass_(self, pswd: Union[str, bytes]) -> bytes:
        """PASS (RFC 1939 §7): send the password (masked in debug output, logs and errors,
        also where the server echoes it); returns
        the ``+OK`` line, after which the session is in the TRANSACTION state. Raises
        AuthenticationError on ``-ERR`` (InUseError when the maildrop is locked). ``pswd``
        is str (encoded with ``encoding``) or bytes (sent as they are; poplib would send
        their repr); TypeError for anything else."""
        return self._run(_secrets.hidden(self, pswd, _flows.run(_core.Command.pass_(_flows.secret(pswd, self.encoding)))))

    def apop(self, user: str, password: Union[str, bytes]) -> bytes:
        """APOP (RFC 1939 §7): log in with the MD5 digest of the greeting's timestamp and
        ``password`` (the password itself is not sent); returns the ``+OK`` line. Raises
        error_proto if the greeting has no timestamp, AuthenticationError on ``-ERR``."""
        return self._run(_flows.apop(self._apop_timestamp(), user, password, self.encoding))

    def rpop(self, user: str) -> bytes:
        """RPOP (RFC 1081, obsolete): send ``RPOP user``; returns the ``+OK`` line. Raises
        AuthenticationError on ``-ERR``."""
        return self._run(_flows.run(_core.Command.rpop(self._arg(user))))

    def auth(self, mechanism: str, authobject: _login.AuthObject, initial_response_ok: bool = True) -> bytes:
        """AUTH (RFC 5034): one SASL exchange in the style of ``smtplib.SMTP.auth``:
        ``authobject(None)`` returns the initial response (sent on the AUTH line when
        ``initial_response_ok`` and it fits in 255 octets), ``authobject(challenge)`` the
        answer to each decoded ``+`` challenge (``str`` or ``bytes``, base64-encoded here).
        Returns the final ``+OK`` line. Raises AuthenticationError when the server (or the
        auth object) refuses, RemoteProtocolError for a malformed challenge or too many
        rounds (the exchange is cancelled with ``*`` first, so the session stays usable),
        ValueError for an invalid mechanism name."""
        return self._run(_login.auth(self, mechanism, authobject, initial_response_ok))

    def login(
        self,
        user: str,
        password: Optional[str] = None,
        *,
        oauth2_token: Optional[str] = None,
        mechanisms: Optional[List[str]] = None,
        allow_insecure: bool = False,
        allow_apop: bool = False,
        oauth2: Optional[Callable[[], str]] = None,
    ) -> bytes:
        """Log in with each method the server offers until one succeeds (over TLS:
        SCRAM-SHA-512 > SCRAM-SHA-256 > SCRAM-SHA-1 > PLAIN > LOGIN > USER/PASS > CRAM-MD5;
        without TLS: SCRAM > CRAM-MD5 > PLAIN > LOGIN > USER/PASS; then APOP with ``allow_apop``; XOAUTH2 > OAUTHBEARER with
        ``oauth2_token`` or ``oauth2``;
        ``mechanisms`` restricts and orders them). Reads CAPA (RFC 2449) first if it was not
        read yet; uses AUTH (RFC 5034), USER/PASS or APOP (RFC 1939 §7). Returns the final
        ``+OK`` line; the method used is left in ``auth_mechanism``.

        Stops once the password itself (sent by PLAIN, LOGIN or PASS) was refused, at
        ``[IN-USE]``, ``[LOGIN-DELAY]``, ``[SYS/TEMP]``, ``[SYS/PERM]`` (their ServerError
        subclasses are raised) and when a SCRAM server fails to prove itself (QUIT is sent).
        Raises AuthenticationError when every method was refused (``attempts`` lists them),
        LocalProtocolError when no method fits or, unless ``allow_insecure``, before sending
        a password or token over an unencrypted connection; ValueError unless exactly one of
        ``password``, ``oauth2_token`` and ``oauth2`` is given.

        ``oauth2`` is a token source: a callable returning a fresh access token (``str``),
        called before the token is sent (in a worker thread by ``AsyncPOP3``), such as
        :class:`fastpoplib.oauth2.TokenSource`. When the server refuses the token and the
        source has ``invalidate(token)``, that is called and the login tried once more with
        the source's next token. Exceptions of the source propagate unchanged. A token too
        long for the AUTH line (RFC 5034: 255 octets) is sent after the server's ``+``."""
        return self._run(_login.login(self, user, password, oauth2_token, mechanisms, allow_insecure, allow_apop, oauth2))

    def stat(self) -> Tuple[int, int]:
        """STAT (RFC 1939 §5): ``(message count, maildrop size in octets)``. Raises
        RemoteProtocolError if the reply is not ``+OK count size``."""
        return self._run(_flows.stat(self._debugging))

    @overload
    def list(self, which: None = None) -> LongResponse: ...

    @overload
    def list(self, which: Which) -> bytes: ...

    def list(self, which: Optional[Which] = None) -> Union[bytes, LongResponse]:
        """LIST (RFC 1939 §5). Without ``which``: ``(resp, [b"number size", ...], octets)``,
        one line per message not marked deleted, sizes in octets. With a message number:
        its ``b"+OK number size"`` line (ServerError if there is no such message)."""
        if which is not None:
            return self._run(_flows.run(_core.Command.list(self._arg(which))))
        return self._run(_flows.run(_core.Command.list()))

    def retr(self, which: Which) -> LongResponse:
        """RETR (RFC 1939 §5): message ``which`` as ``(resp, lines, octets)``: its lines
        without line ends, dot-unstuffed, and its size in octets as poplib counts it. A large
        message is converted as it arrives (peak memory about poplib's); a reply over
        ``max_response_size`` raises RemoteProtocolError."""
        return self._run(_flows.run(_core.Command.retr(self._arg(which))))

    def top(self, which: Which, howmuch: int) -> LongResponse:
        """TOP (RFC 1939 §7): the headers of message ``which`` and the first ``howmuch``
        lines of its body, as ``(resp, lines, octets)`` like :meth:`retr`. The server may
        not support TOP (ServerError)."""
        return self._run(_flows.run(_core.Command.top(self._arg(which), self._arg(howmuch))))

    @overload
    def uidl(self, which: None = None) -> LongResponse: ...

    @overload
    def uidl(self, which: Which) -> bytes: ...

    def uidl(self, which: Optional[Which] = None) -> Union[bytes, LongResponse]:
        """UIDL (RFC 1939 §7). Without ``which``: ``(resp, [b"number uid", ...], octets)``
        for each message not marked deleted. With a message number: its
        ``b"+OK number uid"`` line. ServerError if the server has no UIDL."""
        if which is not None:
            return self._run(_flows.run(_core.Command.uidl(self._arg(which))))
        return self._run(_flows.run(_core.Command.uidl()))

    def dele(self, which: Which) -> bytes:
        """DELE (RFC 1939 §5): mark message ``which`` deleted; returns the ``+OK`` line. The
        server deletes it only at QUIT (:meth:`quit`); RSET or a broken connection keeps it."""
        return self._run(_flows.run(_core.Command.dele(self._arg(which))))

    def noop(self) -> bytes:
        """NOOP (RFC 1939 §5): does nothing (keeps the session alive); returns ``+OK``."""
        return self._run(_flows.run(_core.Command.noop()))

    def rset(self) -> bytes:
        """RSET (RFC 1939 §5): unmark every message marked deleted; returns the ``+OK`` line."""
        return self._run(_flows.run(_core.Command.rset()))

    def utf8(self) -> bytes:
        """UTF8 (RFC 6856 §2): switch the session to UTF-8 (user names, passwords and
        replies); returns the ``+OK`` line. Allowed before login only; ServerError if the
        server refuses or lacks it."""
        return self._run(_flows.run(_core.Command.utf8()))

    @overload
    def lang(self, tag: None = None) -> LongResponse: ...

    @overload
    def lang(self, tag: str) -> bytes: ...

    def lang(self, tag: Optional[str] = None) -> Union[bytes, LongResponse]:
        """LANG (RFC 6856 §3): with a tag (``"de"``, ``"*"``), choose the language of the
        server's replies and return the ``+OK`` line; without, list the languages offered
        as ``(resp, [b"tag description", ...], octets)``. ServerError if not supported."""
        if tag is None:
            return self._run(_flows.run(_core.Command.lang()))
        return self._run(_flows.run(_core.Command.lang(self._arg(tag))))

    def capa(self) -> Capabilities:
        """CAPA (RFC 2449): the server's capabilities as ``{name: [arguments]}`` (a dict, equal
        to poplib's, with typed accessors), also kept in ``capabilities``; the batch calls
        pipeline when it lists PIPELINING. Raises error_proto if the server has no CAPA."""
        return self._run(_flows.capa())

    # -- beyond poplib: batch calls, pipelined when the server allows it ---------------------
    def retr_many(self, which: Iterable[N]) -> Iterator[Tuple[N, LongResponse]]:
        """RETR (RFC 1939 §5) each message of ``which``; iterate ``(number, (resp, lines,
        octets))`` in order, as replies arrive. Pipelined (RFC 2449 PIPELINING, as CAPA last
        read said) with at most 256 commands in flight; one by one otherwise, same results.
        Other commands may be issued between items (a DELE per message, say): replies already
        in flight are kept for the iteration. Leaving early (``break``, ``close()``) drops
        the replies still in flight. A ``-ERR`` raises ServerError and ends the iteration.
        ``AsyncPOP3`` returns an async iterator (``async for``), not a coroutine."""
        return self._each_message(lambda n: _core.Command.retr(self._arg(n)), which)

    def top_many(self, which: Iterable[N], howmuch: int) -> Iterator[Tuple[N, LongResponse]]:
        """Like :meth:`retr_many` with ``TOP n howmuch`` (RFC 1939 §7: headers plus
        ``howmuch`` body lines). TypeError/ValueError at once for a bad ``howmuch``."""
        lines = b"%d" % _count("howmuch", howmuch)
        return self._each_message(lambda n: _core.Command.top(self._arg(n), lines), which)

    def _each_message(self, command: Callable[[Any], _core.Command], which: Iterable[Any]) -> Any:
        numbers = [*which]
        return self._batch(numbers, [command(n) for n in numbers])

    def dele_many(self, which: Iterable[Which]) -> List[bytes]:
        """DELE (RFC 1939 §5) each message, pipelined like :meth:`retr_many`; returns the
        ``+OK`` lines in order. Every DELE is sent whatever the replies, pipelined or not; if
        the server refuses any, DeleteError (a ServerError) says which messages are marked
        deleted anyway (``deleted``, removed at QUIT) and which were refused (``refused``):
        :meth:`rset` unmarks them all."""
        numbers = [*which]
        commands = [_core.Command.dele(self._arg(n)) for n in numbers]
        return self._collect(self._batch(numbers, commands, keep_errors=True), _deletions)

    def retr_bytes(self, which: Which) -> bytes:
        """RETR (RFC 1939 §5): the message as one ``bytes``, dot-unstuffed, lines ending in
        CRLF: the form a mail parser or a file wants, without a list of lines."""
        return self._run(_flows.long_bytes(_core.Command.retr(self._arg(which))))

    def retr_iter(self, which: Which, chunk_size: int = _flows.CHUNK_SIZE) -> Iterator[bytes]:
        """RETR (RFC 1939 §5), streamed: iterate the message in chunks of about
        ``chunk_size`` bytes (default 1 MiB; CRLF line ends, dot-unstuffed). Memory stays
        bounded whatever the message size, and ``max_response_size`` does not apply. Leaving
        early is safe: the next command makes the session read and drop the rest of the body
        (resuming the iterator after that raises LocalProtocolError). ServerError on
        ``-ERR``; TypeError/ValueError at once for a bad ``chunk_size``. ``AsyncPOP3``
        returns an async iterator (``async for``), not a coroutine."""
        _count("chunk_size", chunk_size, minimum=1)
        return self._stream(_core.Command.retr(self._arg(which)), chunk_size)

    def retr_to(
        self,
        which: Which,
        dest: Union[str, "os.PathLike[str]", SupportsWriteBytes],
        progress: Optional[Callable[[int, Optional[int]], object]] = None,
        chunk_size: int = _flows.CHUNK_SIZE,
    ) -> int:
        """RETR (RFC 1939 §5), streamed into ``dest`` without holding the message in memory.
        ``dest`` is a binary file object (left open), or a path: a regular file is written to
        a temporary file beside it and renamed into place once complete (a symlink keeps
        pointing to it), so a failure leaves the path as it was; a FIFO or device is written
        as is and never removed.
        ``progress(done, total)`` is called after each chunk with the bytes written so far
        and the size LIST gives (``LIST which`` is sent first, only when ``progress`` is
        given), e.g. ``lambda done, total: bar.update(done - bar.n)`` for tqdm. Returns the
        number of bytes written (CRLF line ends, dot-unstuffed). If writing fails, the rest
        of the body is dropped, the connection stays usable and the error propagates."""
        return self._run(self._save(which, dest, progress, chunk_size))

    def _save(self, which: Any, dest: Any, progress: Any, chunk_size: int) -> _flows.Flow:
        _count("chunk_size", chunk_size, minimum=1)
        total = (yield from _flows.size_of(which, self.encoding)) if progress is not None else None
        return (yield from _flows.save(_core.Command.retr(self._arg(which)), dest, progress, total, chunk_size))

    def retr_message(self, which: Which) -> EmailMessage:
        """RETR (RFC 1939 §5): the message parsed as an ``email.message.EmailMessage``
        (policy ``email.policy.default``)."""
        return self._run(_flows.parsed(_core.Command.retr(self._arg(which))))

    def top_headers(self, which: Which) -> EmailMessage:
        """TOP n 0 (RFC 1939 §7): the message's headers parsed as an ``EmailMessage``
        (empty body). ServerError if the server has no TOP."""
        return self._run(_flows.parsed(_core.Command.top(self._arg(which), b"0"), headers_only=True))

    def messages(self) -> List[MessageInfo]:
        """LIST and UIDL (RFC 1939 §5, §7) merged: ``[MessageInfo(number, size, uid)]`` in
        LIST's order, size in octets, ``uid`` None when the server has no UIDL (or gives none
        for that message). Each row is a sequence that unpacks, compares and hashes as the
        tuple ``(number, size, uid)``. RemoteProtocolError for a malformed listing line, or a
        message number that LIST or UIDL gives twice (the error names it); both replies were
        then read whole, so the connection stays usable."""
        return self._run(_flows.one(_flows.Messages()))

    def _shortcmd(self, line: Union[str, bytes]) -> bytes:
        flow = _flows.run(_core.Command.raw(self._line(line), multiline=False))
        text = line.decode("utf-8", "surrogateescape") if isinstance(line, bytes) else line
        if text[:5].upper() == "PASS ":
            # poplib's own pass_() is this call: its secret is masked as pass_()'s.
            return self._run(_secrets.hidden(self, text[5:], flow))
        return self._run(flow)

    def _longcmd(self, line: Union[str, bytes]) -> LongResponse:
        return self._run(_flows.run(_core.Command.raw(self._line(line), multiline=True)))

    @property
    def tls_info(self) -> Optional[Tuple[str, str]]:
        """``(protocol version, cipher suite)`` while TLS is active, else ``None``; never
        waits for a call in progress."""
        return None if self._closed else self._conn.tls_info()

    @property
    def _closed(self) -> bool:
        """Closed by us, or by the session (an error, a cancel, another thread): the session
        alone says, never a copy kept here."""
        return self._conn is None or self._conn.closed is not None

    def __repr__(self) -> str:
        state = "closed" if self._closed else ("TLS" if self._tls_up else "plaintext")
        if self._session is None and self._conn is None:
            state = "not connected"
        return f"<{type(self).__name__} {self.host}:{self.port} {state}>"
