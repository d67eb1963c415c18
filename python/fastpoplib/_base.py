"""What the blocking and the asyncio clients share: the poplib command methods (each runs a
flow from ``_flows``), argument checks and the printable state. A subclass supplies
``_run(flow)``, which either blocks or returns an awaitable."""

from __future__ import annotations

import socket
import sys
from typing import Any, Iterable, List, Optional, Union

from . import _flows, _login, _trace
from .exceptions import LocalProtocolError

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

    def __init__(self, host: str, port: int) -> None:
        if not isinstance(host, str) or not host:
            raise ValueError(f"host must be a non-empty string, not {host!r}")
        self.host = host
        self.port = port
        self._debugging = 0
        self._tls_established = False
        self._conn: Any = None
        # CAPA as last read (None: not asked yet); decides whether batch calls pipeline.
        self.capabilities: Optional[_flows.Capabilities] = None
        self.auth_mechanism: Optional[str] = None
        self._maxline = current_maxline()

    # -- the hooks a driver provides -------------------------------------------------------
    def _run(self, flow: _flows.Flow) -> Any:
        raise NotImplementedError

    def _check_open(self) -> Any:
        if self._conn is None:
            raise LocalProtocolError("the connection is closed; create a new one")
        return self._conn

    def _sync_maxline(self, conn: Any) -> None:
        maxline = current_maxline()
        if maxline != self._maxline:
            conn.set_max_line(maxline)
            self._maxline = maxline

    def _dispatch(self, op: _flows.Op) -> Any:
        """Starts ``op`` on the Rust connection: the result for the blocking connection, an
        awaitable for the asyncio one (both expose the same method names)."""
        conn = self._check_open()
        self._sync_maxline(conn)
        if isinstance(op, (_flows.Send, _flows.Recv)):
            return self._dispatch_pipelined(op)
        if isinstance(op, _flows.Chunk):
            return conn.read_chunk(op.size)
        if isinstance(op, _flows.BeginBody):
            _trace.command(self._debugging, op.line, False)
            return conn.begin_body(op.line)
        if isinstance(op, _flows.StartTLS):
            _trace.command(self._debugging, b"STLS", False)
            return conn.starttls(op.settings)
        _trace.command(self._debugging, op.line, getattr(op, "secret", False))
        if isinstance(op, _flows.Short):
            return conn.shortcmd(op.line, op.login)
        return conn.longcmd_bytes(op.line) if op.as_bytes else conn.longcmd(op.line)

    def _dispatch_pipelined(self, op: _flows.Op) -> Any:
        conn = self._check_open()
        if isinstance(op, _flows.Send):
            for line in op.lines:
                _trace.command(self._debugging, line, False)
            return conn.putlines(list(op.lines))
        return conn.getlongresp() if op.long else conn.getresp()

    def _completed(self, op: _flows.Op, result: Any) -> Any:
        if isinstance(op, _flows.StartTLS):
            self._tls_established = True
        if isinstance(op, (_flows.Chunk, _flows.Send)):
            return result
        _trace.response(self._debugging, result if isinstance(result, bytes) else result[0])
        return result

    def _line(self, line: Union[str, bytes]) -> bytes:
        return _flows.encode(line, self.encoding)

    # -- poplib's public API -------------------------------------------------------------------
    def getwelcome(self) -> bytes:
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
        return self._run(_flows.stat())

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
        arrive. Pipelined (RFC 2449) when the server advertises PIPELINING."""
        return self._each_message("RETR {}", which)

    def top_many(self, which: Iterable[Any], howmuch: int) -> Any:
        """Like :meth:`retr_many` with ``TOP n howmuch`` (headers plus ``howmuch`` lines)."""
        return self._each_message("TOP {} %d" % howmuch, which)

    def _each_message(self, template: str, which: Iterable[Any]) -> Any:
        numbers = [*which]
        lines = [self._line(template.format(n)) for n in numbers]
        return self._iter(_flows.pipelined(self, lines, True, lambda i, r: (numbers[i], _flows.raise_errors(i, r))))

    def dele_many(self, which: Iterable[Any]) -> Any:
        """DELE each message (pipelined); returns the list of responses."""
        lines = [self._line(f"DELE {n}") for n in which]
        return self._collect(_flows.pipelined(self, lines, False, _flows.raise_errors))

    def retr_bytes(self, which: Any) -> Any:
        """The message as one ``bytes`` with CRLF line ends (dot-unstuffed)."""
        return self._run(_flows.long_bytes(self._line(f"RETR {which}")))

    def retr_iter(self, which: Any, chunk_size: int = _flows.CHUNK_SIZE) -> Any:
        """Iterate the message in chunks of about ``chunk_size`` bytes (CRLF line ends);
        memory stays bounded whatever the message size."""
        return self._iter(_flows.stream(self._line(f"RETR {which}"), chunk_size))

    def retr_to(self, which: Any, dest: Any, progress: Any = None, chunk_size: int = _flows.CHUNK_SIZE) -> Any:
        """Stream the message into ``dest`` (a path or a binary file) without holding it in
        memory; ``progress(done, total)`` is called after each chunk (``total`` from LIST),
        e.g. a tqdm bar's ``update``. Returns the number of bytes written."""
        return self._run(self._save(which, dest, progress, chunk_size))

    def _save(self, which: Any, dest: Any, progress: Any, chunk_size: int) -> _flows.Flow:
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
        return self._run(_flows.messages(self))

    def _shortcmd(self, line: Union[str, bytes]) -> Any:
        return self._run(_flows.short(self._line(line)))

    def _longcmd(self, line: Union[str, bytes]) -> Any:
        return self._run(_flows.long(self._line(line)))

    @property
    def tls_info(self) -> Optional[Any]:
        """``(protocol version, cipher suite)`` while TLS is active, else ``None``."""
        return None if self._conn is None else self._conn.tls_info()

    def __repr__(self) -> str:
        state = "closed" if self._conn is None else ("TLS" if self._tls_established else "plaintext")
        return f"<{type(self).__name__} {self.host}:{self.port} {state}>"
