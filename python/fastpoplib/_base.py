"""What the blocking and the asyncio clients share: the poplib command methods (each runs a
flow from ``_flows``), argument checks and the printable state. A subclass supplies
``_run(flow)``, which either blocks or returns an awaitable."""

from __future__ import annotations

import socket
import sys
from typing import Any, Iterable, List, Optional, Union

from . import _flows, _login, _trace
from .exceptions import LocalProtocolError, ServerError

POP3_PORT = 110
POP3_SSL_PORT = 995
CR = b"\r"
LF = b"\n"
CRLF = CR + LF

# Defaults for the limits that keep a hostile server from exhausting memory.
MAX_LINE_LENGTH = 1 << 20  # longest message line: RFC 5322 allows 998, real mail goes past
MAX_RESPONSE_SIZE = 256 << 20  # largest multi-line response held in memory


def current_maxline() -> int:
    """``fastpoplib._MAXLINE``, read at each command as poplib reads its module global, so
    assigning it works as it does in poplib."""
    return getattr(sys.modules.get("fastpoplib"), "_MAXLINE", 2048)


# Reply kinds of the session's `command` (src/python/connection.rs).
STATUS, LINES, BYTES = 0, 1, 2


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

    def __init__(self, client: Any, numbers: List[Any], lines: List[bytes], kind: int) -> None:
        self._client = client
        self._numbers = numbers
        self._conn = client._check_open()
        self._id = self._conn.batch(lines, kind)
        self._done = False

    def _item(self, item: Any) -> Any:
        if item is None:
            self._finish()
            return None
        index, reply = item
        if isinstance(reply, ServerError):
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


def resolve_timeout(timeout: Any) -> Optional[float]:
    """poplib's rules: the default means ``socket.getdefaulttimeout()``, ``0`` is refused."""
    if timeout is socket._GLOBAL_DEFAULT_TIMEOUT:  # type: ignore[attr-defined]
        return socket.getdefaulttimeout()
    if timeout is not None and not timeout:
        raise ValueError("Non-blocking socket (timeout=0) is not supported")
    return None if timeout is None else float(timeout)


class POP3Base:
    """poplib's API, minus the I/O."""

    encoding = "UTF-8"
    welcome: bytes = b""
    # Class-level defaults: a poplib-style subclass may skip ``__init__`` and set only
    # ``host``, ``port``, ``sock``, ``file`` and ``_debugging`` itself.
    _conn: Any = None
    _driver: Any = None
    _stls_context: Any = None
    _debugging = 0
    _tracing = False
    _tls_established = False
    _maxline = 2048
    _label = "pop3"
    timeout: Optional[float] = None
    capabilities: Optional[_flows.Capabilities] = None
    auth_mechanism: Optional[str] = None

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
        self._tls_established = False
        # CAPA as last read (None: not asked yet); decides whether batch calls pipeline.
        self.capabilities: Optional[_flows.Capabilities] = None
        self.auth_mechanism: Optional[str] = None
        self._maxline = current_maxline()

    # -- the hooks a driver provides -------------------------------------------------------
    def _run(self, flow: _flows.Flow) -> Any:
        raise NotImplementedError

    def _call(self, name: str, *args: Any) -> Any:
        """Operation ``name`` of the Rust connection: its result (blocking) or an awaitable."""
        raise NotImplementedError

    def _check_open(self) -> Any:
        if self._conn is None:
            self._conn = self._adopt()
            if self._conn is None:
                raise LocalProtocolError("the connection is closed; open a new one")
        return self._conn

    def _adopt(self) -> Any:
        """A connection over a socket a subclass set up itself, or None."""
        return None

    def _before(self, conn: Any) -> None:
        """Applies what may have changed since the last call: ``fastpoplib._MAXLINE`` (read
        at each command, as poplib reads its global) and whether lines are traced."""
        maxline = current_maxline()
        if maxline != self._maxline:
            conn.set_limits(max_line=maxline)
            self._maxline = maxline
        if not self._tracing:
            # Always on: audit hooks see every line sent, whether or not anyone debugs.
            conn.set_trace(True)
            self._tracing = True

    def _after(self) -> None:
        if self._conn is not None:
            lines = self._conn.take_trace()
            if lines:
                _trace.show(self, lines)

    def _dispatch(self, op: _flows.Op) -> Any:
        """Starts ``op``: one call into the session."""
        if isinstance(op, _flows.Short):
            return self._call("command", op.line, STATUS, op.login, op.secret, op.raw)
        if isinstance(op, _flows.Long):
            return self._call("command", op.line, BYTES if op.as_bytes else LINES, False, False, op.raw)
        if isinstance(op, _flows.Chunk):
            return self._call("chunk", op.stream, op.size)
        if isinstance(op, _flows.OpenStream):
            return self._call("open_stream", op.line)
        if isinstance(op, _flows.Capa):
            return self._call("capa")
        if isinstance(op, _flows.Messages):
            return self._call("messages")
        if isinstance(op, _flows.StartTLS):
            return self._call("starttls", op.settings)
        raise TypeError(f"unknown operation {op!r}")

    def _completed(self, op: _flows.Op, result: Any) -> Any:
        if isinstance(op, _flows.StartTLS):
            self._tls_established = True
        return result

    def _line(self, line: Union[str, bytes]) -> bytes:
        return _flows.encode(line, self.encoding)

    # -- poplib's public API -------------------------------------------------------------------
    def getwelcome(self) -> bytes:
        """The server's greeting line (RFC 1939 §4), as read when connecting."""
        if self._debugging:
            print("*welcome*", repr(self.welcome))
        return self.welcome

    def set_debuglevel(self, level: int) -> None:
        self._debugging = level

    def user(self, user: str) -> Any:
        return self._run(_flows.short(self._line(f"USER {user}"), login=True))

    def pass_(self, pswd: str) -> Any:
        return self._run(_flows.short(self._line(f"PASS {pswd}"), login=True))

    def apop(self, user: str, password: str) -> Any:
        return self._run(_flows.apop(self.welcome, user, password, self.encoding))

    def rpop(self, user: str) -> Any:
        return self._run(_flows.short(self._line(f"RPOP {user}"), login=True))

    def auth(self, mechanism: str, authobject: _login.AuthObject, initial_response_ok: bool = True) -> Any:
        """SASL authentication in the style of ``smtplib.SMTP.auth``: ``authobject(None)``
        returns the initial response, ``authobject(challenge)`` the answer to a challenge."""
        return self._run(_login.auth(mechanism, authobject, initial_response_ok))

    def login(
        self,
        user: str,
        password: Optional[str] = None,
        *,
        oauth2_token: Optional[str] = None,
        mechanisms: Optional[List[str]] = None,
        allow_insecure: bool = False,
        allow_apop: bool = False,
    ) -> Any:
        """Log in with each method the server offers, strongest first, until one succeeds
        (SCRAM-SHA-512 > SCRAM-SHA-256 > SCRAM-SHA-1 > CRAM-MD5 > PLAIN > LOGIN > USER/PASS,
        then APOP with ``allow_apop``; XOAUTH2 > OAUTHBEARER with ``oauth2_token``;
        ``mechanisms`` restricts and orders them). Stops once the password itself (sent by
        PLAIN, LOGIN or PASS) was refused, at ``[IN-USE]``, ``[LOGIN-DELAY]``,
        ``[SYS/TEMP]``, ``[SYS/PERM]`` and when a SCRAM server fails to prove itself. No
        password or token is sent over an unencrypted connection unless ``allow_insecure``.
        The method used is left in ``auth_mechanism``."""
        return self._run(_login.login(self, user, password, oauth2_token, mechanisms, allow_insecure, allow_apop))

    def stat(self) -> Any:
        return self._run(_flows.stat(self._debugging))

    def list(self, which: Any = None) -> Any:
        if which is not None:
            return self._run(_flows.short(self._line(f"LIST {which}")))
        return self._run(_flows.long(b"LIST"))

    def retr(self, which: Any) -> Any:
        return self._run(_flows.long(self._line(f"RETR {which}")))

    def top(self, which: Any, howmuch: Any) -> Any:
        return self._run(_flows.long(self._line(f"TOP {which} {howmuch}")))

    def uidl(self, which: Any = None) -> Any:
        if which is not None:
            return self._run(_flows.short(self._line(f"UIDL {which}")))
        return self._run(_flows.long(b"UIDL"))

    def dele(self, which: Any) -> Any:
        return self._run(_flows.short(self._line(f"DELE {which}")))

    def noop(self) -> Any:
        return self._run(_flows.short(b"NOOP"))

    def rset(self) -> Any:
        return self._run(_flows.short(b"RSET"))

    def utf8(self) -> Any:
        """RFC 6856: switch the session to UTF-8 (arguments and replies)."""
        return self._run(_flows.short(b"UTF8"))

    def lang(self, tag: Optional[str] = None) -> Any:
        """RFC 6856 LANG: with a tag (``"de"``, ``"*"``), choose the language of the server's
        replies; without, list the languages offered (a multi-line reply)."""
        if tag is None:
            return self._run(_flows.long(b"LANG"))
        return self._run(_flows.short(self._line(f"LANG {tag}")))

    def capa(self) -> Any:
        return self._run(_flows.remember_capa(self))

    # -- beyond poplib: batch calls, pipelined when the server allows it ---------------------
    def retr_many(self, which: Iterable[Any]) -> Any:
        """Iterate ``(number, (resp, lines, octets))`` for each message, in order, as they
        arrive. Pipelined (RFC 2449) when the server advertises PIPELINING: at most
        ``WINDOW`` commands in flight. Other commands may be issued between items (a DELE
        per message, say): replies already in flight are kept for the iteration. A ``-ERR``
        raises ServerError and ends the iteration."""
        return self._each_message("RETR {}", which)

    def top_many(self, which: Iterable[Any], howmuch: int) -> Any:
        """Like :meth:`retr_many` with ``TOP n howmuch`` (headers plus ``howmuch`` lines)."""
        return self._each_message("TOP {} %d" % _count("howmuch", howmuch), which)

    def _each_message(self, template: str, which: Iterable[Any]) -> Any:
        numbers = [*which]
        lines = [self._line(template.format(n)) for n in numbers]
        return self._batch(numbers, lines, LINES)

    def dele_many(self, which: Iterable[Any]) -> Any:
        """DELE each message (pipelined); returns the list of responses. A ``-ERR`` raises
        ServerError (the deletions before it stand, RFC 1939 §6)."""
        numbers = [*which]
        return self._collect(self._batch(numbers, [self._line(f"DELE {n}") for n in numbers], STATUS))

    def retr_bytes(self, which: Any) -> Any:
        """The message as one ``bytes`` with CRLF line ends (dot-unstuffed)."""
        return self._run(_flows.long_bytes(self._line(f"RETR {which}")))

    def retr_iter(self, which: Any, chunk_size: int = _flows.CHUNK_SIZE) -> Any:
        """Iterate the message in chunks of about ``chunk_size`` bytes (CRLF line ends);
        memory stays bounded whatever the message size. Leaving early is safe: the next
        command makes the session drop the rest of the body (resuming the iterator after
        that raises LocalProtocolError)."""
        _count("chunk_size", chunk_size, minimum=1)
        return self._stream(self._line(f"RETR {which}"), chunk_size)

    def retr_to(self, which: Any, dest: Any, progress: Any = None, chunk_size: int = _flows.CHUNK_SIZE) -> Any:
        """Stream the message into ``dest`` (a path or a binary file) without holding it in
        memory; ``progress(done, total)`` is called after each chunk (``total`` from LIST),
        e.g. a tqdm bar's ``update``. Returns the number of bytes written."""
        return self._run(self._save(which, dest, progress, chunk_size))

    def _save(self, which: Any, dest: Any, progress: Any, chunk_size: int) -> _flows.Flow:
        _count("chunk_size", chunk_size, minimum=1)
        total = (yield from _flows.size_of(which, self.encoding)) if progress is not None else None
        return (yield from _flows.save(self._line(f"RETR {which}"), dest, progress, total, chunk_size))

    def retr_message(self, which: Any) -> Any:
        """The message as an ``email.message.EmailMessage`` (policy ``email.policy.default``)."""
        return self._run(_flows.parsed(self._line(f"RETR {which}")))

    def top_headers(self, which: Any) -> Any:
        """The message's headers (``TOP n 0``) parsed as an ``EmailMessage``."""
        return self._run(_flows.parsed(self._line(f"TOP {which} 0"), headers_only=True))

    def messages(self) -> Any:
        """LIST and UIDL merged: ``[MessageInfo(number, size, uid)]`` (uid None without UIDL)."""
        return self._run(_flows.one(_flows.Messages()))

    def _shortcmd(self, line: Union[str, bytes]) -> Any:
        return self._run(_flows.one(_flows.Short(self._line(line), raw=True)))

    def _longcmd(self, line: Union[str, bytes]) -> Any:
        return self._run(_flows.one(_flows.Long(self._line(line), raw=True)))

    @property
    def tls_info(self) -> Optional[Any]:
        """``(protocol version, cipher suite)`` while TLS is active, else ``None``; never
        waits for a call in progress."""
        return None if self._conn is None else self._conn.tls_info()

    def __repr__(self) -> str:
        state = "closed" if self._conn is None else ("TLS" if self._tls_established else "plaintext")
        return f"<{type(self).__name__} {self.host}:{self.port} {state}>"
