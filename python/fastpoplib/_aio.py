"""The asyncio clients ``AsyncPOP3`` and ``AsyncPOP3_SSL``: the same commands as the blocking
classes (run from the same flows), as coroutines, on tokio + rustls.

Open a connection with ``AsyncPOP3.connect(...)``, which can be awaited or used directly as an
async context manager::

    async with AsyncPOP3_SSL.connect("pop.example.com") as pop:
        await pop.user("me"); await pop.pass_(secret)
        resp, lines, octets = await pop.retr(1)
"""

# The command methods are written once in POP3Base and wrapped here in coroutine functions;
# type checkers see the async signatures declared under TYPE_CHECKING, which override the
# blocking ones on purpose (an AsyncPOP3 is not a blocking POP3Base).
# mypy: disable-error-code="override"
# pyright: reportIncompatibleMethodOverride=false

from __future__ import annotations

import asyncio
import contextlib
import logging
import functools
import os
import socket
import ssl
import sys
from email.message import EmailMessage
from types import TracebackType
from typing import (
    TYPE_CHECKING,
    Any,
    AsyncIterator,
    Callable,
    Coroutine,
    Dict,
    Generator,
    Generic,
    Iterable,
    List,
    Optional,
    Tuple,
    Type,
    TypeVar,
    Union,
    overload,
)

from . import _bridge, _core, _flows, _idna, _login, _tls, _trace, _wire
from ._base import MAX_LINE_LENGTH, MAX_RESPONSE_SIZE, POP3_PORT, POP3_SSL_PORT, BatchReplies, N, POP3Base, Which, resolve_timeout
from ._tls import StrPath
from ._types import Capabilities, LongResponse, MessageInfo, SupportsWriteBytes

T = TypeVar("T", bound="AsyncPOP3")


class _Connecting(Generic[T]):
    """What ``connect()`` returns: awaitable (``pop = await AsyncPOP3.connect(...)``), or
    usable in ``async with AsyncPOP3.connect(...) as pop:`` (QUIT on normal exit)."""

    def __init__(self, client: T) -> None:
        self._client = client

    def __await__(self) -> Generator[Any, None, T]:
        return self._client._open().__await__()

    async def __aenter__(self) -> T:
        return await self._client._open()

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException] = None,
        tb: Optional[TracebackType] = None,
    ) -> None:
        await self._client.__aexit__(exc_type, exc, tb)


class _Batch(BatchReplies):
    def __aiter__(self) -> "_Batch":
        return self

    async def __anext__(self) -> Any:
        if self._done:
            raise StopAsyncIteration
        item = self._item(await self._client._call("batch_next", self._id))
        if item is None:
            raise StopAsyncIteration
        return item

    async def aclose(self) -> None:
        """Stop early: the session drops the replies still in flight."""
        self.close()


class AsyncPOP3(POP3Base):
    """An asyncio POP3 connection (RFC 1939): :class:`POP3`'s commands as coroutines, with
    the same arguments, return shapes and exceptions. Create it with
    ``await AsyncPOP3.connect(host, ...)`` or ``async with AsyncPOP3.connect(...) as pop:``;
    ``retr_many``, ``top_many`` and ``retr_iter`` return async iterators (``async for``).
    ``asyncio.wait_for`` and task cancellation abort the I/O at once and close the
    connection; a second concurrent call on one connection raises LocalProtocolError."""

    if TYPE_CHECKING:
        # The coroutine functions generated below from POP3Base's commands, as type
        # checkers should see them; help() shows POP3Base's full docstrings.
        async def user(self, user: str) -> bytes:
            """USER (RFC 1939 §7); the ``+OK`` line. AuthenticationError on ``-ERR``. See :meth:`POP3.user`."""

        async def pass_(self, pswd: Union[str, bytes]) -> bytes:
            """PASS (RFC 1939 §7); the ``+OK`` line. AuthenticationError on ``-ERR``. See :meth:`POP3.pass_`."""

        async def apop(self, user: str, password: Union[str, bytes]) -> bytes:
            """APOP (RFC 1939 §7); the ``+OK`` line. AuthenticationError on ``-ERR``. See :meth:`POP3.apop`."""

        async def rpop(self, user: str) -> bytes:
            """RPOP (RFC 1081); the ``+OK`` line. AuthenticationError on ``-ERR``. See :meth:`POP3.rpop`."""

        async def auth(self, mechanism: str, authobject: _login.AuthObject, initial_response_ok: bool = True) -> bytes:
            """AUTH (RFC 5034): one SASL exchange; the final ``+OK`` line. See :meth:`POP3.auth`."""

        async def login(
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
            """Log in with the strongest method both sides allow; the final ``+OK`` line.
            See :meth:`POP3.login`."""

        async def stat(self) -> Tuple[int, int]:
            """STAT (RFC 1939 §5): ``(message count, maildrop size in octets)``. See :meth:`POP3.stat`."""

        @overload
        async def list(self, which: None = None) -> LongResponse: ...

        @overload
        async def list(self, which: Which) -> bytes: ...

        async def list(self, which: Optional[Which] = None) -> Union[bytes, LongResponse]:
            """LIST (RFC 1939 §5): the listing ``(resp, lines, octets)``, or one message's ``+OK`` line. See :meth:`POP3.list`."""

        async def retr(self, which: Which) -> LongResponse:
            """RETR (RFC 1939 §5): ``(resp, lines, octets)``. See :meth:`POP3.retr`."""

        async def top(self, which: Which, howmuch: int) -> LongResponse:
            """TOP (RFC 1939 §7): headers and ``howmuch`` body lines as ``(resp, lines, octets)``. See :meth:`POP3.top`."""

        @overload
        async def uidl(self, which: None = None) -> LongResponse: ...

        @overload
        async def uidl(self, which: Which) -> bytes: ...

        async def uidl(self, which: Optional[Which] = None) -> Union[bytes, LongResponse]:
            """UIDL (RFC 1939 §7): the listing ``(resp, lines, octets)``, or one message's ``+OK`` line. See :meth:`POP3.uidl`."""

        async def dele(self, which: Which) -> bytes:
            """DELE (RFC 1939 §5): mark deleted (applied at QUIT); the ``+OK`` line. See :meth:`POP3.dele`."""

        async def noop(self) -> bytes:
            """NOOP (RFC 1939 §5); the ``+OK`` line."""

        async def rset(self) -> bytes:
            """RSET (RFC 1939 §5): unmark the deleted messages; the ``+OK`` line."""

        async def utf8(self) -> bytes:
            """UTF8 (RFC 6856 §2); the ``+OK`` line. See :meth:`POP3.utf8`."""

        @overload
        async def lang(self, tag: None = None) -> LongResponse: ...

        @overload
        async def lang(self, tag: str) -> bytes: ...

        async def lang(self, tag: Optional[str] = None) -> Union[bytes, LongResponse]:
            """LANG (RFC 6856 §3): the languages offered, or choose one (its ``+OK`` line). See :meth:`POP3.lang`."""

        async def capa(self) -> Capabilities:
            """CAPA (RFC 2449): ``{name: [arguments]}``, also kept in ``capabilities``. See :meth:`POP3.capa`."""

        def retr_many(self, which: Iterable[N]) -> AsyncIterator[Tuple[N, LongResponse]]:
            """RETR each message, pipelined: ``async for number, (resp, lines, octets) in ...``. See :meth:`POP3.retr_many`."""

        def top_many(self, which: Iterable[N], howmuch: int) -> AsyncIterator[Tuple[N, LongResponse]]:
            """TOP n ``howmuch`` for each message, pipelined, as :meth:`retr_many`. See :meth:`POP3.top_many`."""

        async def dele_many(self, which: Iterable[Which]) -> List[bytes]:
            """DELE each message, pipelined; the ``+OK`` lines. See :meth:`POP3.dele_many`."""

        async def retr_bytes(self, which: Which) -> bytes:
            """RETR: the message as one ``bytes`` (CRLF line ends). See :meth:`POP3.retr_bytes`."""

        def retr_iter(self, which: Which, chunk_size: int = _flows.CHUNK_SIZE) -> AsyncIterator[bytes]:
            """RETR, streamed: ``async for chunk in ...`` (bounded memory). See :meth:`POP3.retr_iter`."""

        async def retr_to(
            self,
            which: Which,
            dest: Union[str, os.PathLike[str], SupportsWriteBytes],
            progress: Optional[Callable[[int, Optional[int]], object]] = None,
            chunk_size: int = _flows.CHUNK_SIZE,
        ) -> int:
            """RETR, streamed into a path or binary file; the number of bytes written. See :meth:`POP3.retr_to`."""

        async def retr_message(self, which: Which) -> EmailMessage:
            """RETR: the message as an ``EmailMessage``. See :meth:`POP3.retr_message`."""

        async def top_headers(self, which: Which) -> EmailMessage:
            """TOP n 0: the headers as an ``EmailMessage``. See :meth:`POP3.top_headers`."""

        async def messages(self) -> List[MessageInfo]:
            """LIST and UIDL merged: ``[MessageInfo(number, size, uid)]``. See :meth:`POP3.messages`."""

        async def _shortcmd(self, line: Union[str, bytes]) -> bytes: ...

        async def _longcmd(self, line: Union[str, bytes]) -> LongResponse: ...

    def __init__(
        self,
        host: str,
        port: int = POP3_PORT,
        timeout: Optional[float] = None,
        *,
        source_address: Optional[Tuple[str, int]] = None,
        max_line_length: int = MAX_LINE_LENGTH,
        max_response_size: int = MAX_RESPONSE_SIZE,
        _tls_settings: Optional[_core.TlsSettings] = None,
        _context: Optional[ssl.SSLContext] = None,
    ) -> None:
        """A connection not yet open (no I/O here): ``connect()`` builds one and opens it;
        ``async with AsyncPOP3(...)`` opens it too. The arguments are :class:`POP3`'s, except
        that ``timeout`` defaults to None (no timeout; seconds otherwise, ``0`` refused)."""
        super().__init__(host, port)
        self._ssl_context = _context
        self._options: Dict[str, Any] = dict(
            timeout=resolve_timeout(timeout),
            source_address=source_address,
            tls=_tls_settings,
            max_line_length=max_line_length,
            max_response_size=max_response_size,
        )

    @classmethod
    def connect(
        cls: Type[T],
        host: str,
        port: int = POP3_PORT,
        timeout: Optional[float] = None,
        *,
        source_address: Optional[Tuple[str, int]] = None,
        max_line_length: int = MAX_LINE_LENGTH,
        max_response_size: int = MAX_RESPONSE_SIZE,
    ) -> _Connecting[T]:
        """Connect over TCP and read the greeting (RFC 1939 §4, kept in ``welcome``):
        ``pop = await AsyncPOP3.connect(...)`` or ``async with AsyncPOP3.connect(...) as pop:``.
        ``timeout`` (seconds, default None: no timeout) bounds the connect, a TLS handshake
        and each wait; the other arguments are :class:`POP3`'s. Raises, when awaited, what
        :class:`POP3` raises (POP3ConnectionError, POP3TimeoutError, ServerError...)."""
        return _Connecting(
            cls(host, port, timeout, source_address=source_address, max_line_length=max_line_length, max_response_size=max_response_size)
        )

    async def _open(self: T) -> T:
        self._bridge = _bridge.current()
        sys.audit("poplib.connect", self, self.host, self.port)
        if self._ssl_context is None:
            host = _idna.ascii_host(self.host)
            self._attach(await self._bridge.call(_core.Connection.connect, host, self.port, max_status_line=self._maxline, **self._options))
        else:
            limits = {k: self._options[k] for k in ("max_line_length", "max_response_size")}
            try:
                self._driver = await _wire.StreamDriver.connect(
                    self.host,
                    self._current_timeout,
                    host=self.host,
                    port=self.port,
                    ssl=self._ssl_context,
                    server_hostname=self.host,
                    local_addr=_local_addr(self._options["source_address"]),
                )
            except BaseException as exc:
                err = _wire.translate(exc, self.host, self._current_timeout())
                if err is exc:
                    raise
                raise err from exc
            self._attach(_core.Connection.external(max_status_line=self._maxline, tls=True, **limits))
            self._conn.timeout = self._options["timeout"]
        try:
            await self._call("claim")
        except BaseException:
            self._abort()
            raise
        tls = self.tls_info
        _trace.event(logging.INFO, self._label, "connected%s", " (TLS %s, %s)" % tls if tls else "")
        return self

    def _current_timeout(self) -> Optional[float]:
        return self.timeout

    @property  # type: ignore[misc]
    def timeout(self) -> Optional[float]:
        """Seconds each wait for the server may last (None: no limit). Setting it applies from
        the next wait on, whichever TLS carries the bytes (rustls, or the event loop's with a
        ``context``); the connection holds the one value."""
        conn = self._conn
        timeout: Optional[float] = conn.timeout if conn is not None else self._options["timeout"]
        return timeout

    @timeout.setter
    def timeout(self, value: Optional[float]) -> None:
        value = resolve_timeout(value)
        self._options["timeout"] = value
        if self._conn is not None:
            self._conn.timeout = value

    async def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        conn = self._check_open()
        self._bridge.check()
        self._before(conn)
        try:
            if self._driver is not None:
                return await self._driver.run(getattr(conn, name)(None, 0, *args, **kwargs), self._stls_context)
            return await self._bridge.call(getattr(conn, name), *args, **kwargs)
        finally:
            self._after()

    async def _run(self, flow: _flows.Flow) -> Any:
        runner = _flows.Runner(flow)
        while not runner.done:
            op = runner.op
            try:
                if isinstance(op, _flows.DropStream):
                    result = self._check_open().drop_stream(op.stream)
                elif isinstance(op, _flows.Offload):
                    result = await asyncio.to_thread(op.call)
                else:
                    result = await self._dispatch(op)
            except Exception as exc:
                runner.throw(exc)
            else:
                runner.send(result)
        return runner.value

    def _batch(self, numbers: List[Any], commands: List[_core.Command], keep_errors: bool = False) -> AsyncIterator[Any]:
        return _Batch(self, numbers, commands, keep_errors)

    async def _collect(self, items: AsyncIterator[Any], finish: Callable[[List[Tuple[Any, Any]]], Any]) -> Any:
        return finish([item async for item in items])

    async def _stream(self, command: _core.Command, chunk_size: int) -> AsyncIterator[bytes]:
        _, stream = await self._call("open_stream", command)
        conn = self._conn
        try:
            while True:
                chunk = await self._call("chunk", stream, chunk_size)
                if chunk is None:
                    return
                yield chunk
        finally:
            conn.drop_stream(stream)

    async def quit(self) -> bytes:
        """QUIT (RFC 1939 §6): the server deletes the messages marked deleted and ends the
        session; returns its ``+OK`` line. The connection is closed even if QUIT fails (a
        ServerError for ``-ERR``: some deletions could not be made)."""
        try:
            return await self._shortcmd("QUIT")
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Close the connection without QUIT (nothing is deleted: RFC 1939 §6): TLS
        close_notify, then FIN. Safe to call twice; from another task it interrupts a call in
        progress, which then raises."""
        conn, self._conn = self._conn, None
        driver, self._driver = self._driver, None
        if conn is not None:
            _trace.event(logging.INFO, self._label, "closed")
        if conn is not None and not self._bridge.owns_running_loop():
            # Its loop is gone or elsewhere: close at once, awaiting nothing of that loop.
            conn.abort()
            owner = self._bridge.loop
            if driver is not None and owner is not None and not owner.is_closed():
                # Transports are not thread-safe: their own loop aborts it.
                with contextlib.suppress(RuntimeError):  # closed meanwhile
                    owner.call_soon_threadsafe(driver.abort)
        elif conn is not None and driver is None:
            await self._bridge.call(conn.close)
        elif conn is not None:
            # A call in progress holds the session, or an error already closed it: stop at
            # once, without waiting for a stalled server's close_notify.
            busy = conn.busy or conn.closed is not None
            conn.abort()
            await driver.close(abort=busy)

    def _abort(self) -> None:
        conn, self._conn = self._conn, None
        driver, self._driver = self._driver, None
        if conn is not None:
            conn.abort()
        if driver is not None:
            driver.abort()

    async def stls(
        self,
        context: Optional[ssl.SSLContext] = None,
        *,
        cafile: Optional[StrPath] = None,
        cadata: Optional[Union[str, bytes]] = None,
        certfile: Optional[StrPath] = None,
        keyfile: Optional[StrPath] = None,
        fingerprint: Optional[str] = None,
    ) -> bytes:
        """STLS (RFC 2595): upgrade to TLS and return the server's ``+OK`` line; verified by
        default (bundled Mozilla roots and the system store or ``SSL_CERT_FILE``/
        ``SSL_CERT_DIR``, or ``cafile=``/``cadata=``, or pinned with ``fingerprint=``, as in
        :class:`POP3_SSL`; ``certfile=``/``keyfile=`` for a client certificate). A ``context``
        is used by the event loop's TLS exactly as given. Plaintext that arrives after the
        ``+OK`` is refused (RemoteProtocolError); CAPA is read again. Raises error_proto if
        TLS is already up or the server has no STLS, CertificateVerificationError (an
        ``ssl.SSLCertVerificationError``) when the certificate is not trusted, TLSError for
        another handshake failure."""
        tls: Any = dict(cafile=cafile, cadata=cadata, certfile=certfile, keyfile=keyfile, fingerprint=fingerprint)
        if context is not None:
            _tls.check_context(context)
            if fingerprint is not None:
                raise ValueError("context and fingerprint are mutually exclusive")
            if self._driver is None and not self._tls_up:
                fd = self._check_open().detach()
                self._driver = await _wire.StreamDriver.connect(self.host, self._current_timeout, sock=socket.socket(fileno=fd))
        if self._driver is not None:
            self._stls_context = context or _tls.default_context(**tls)
            settings = None
        else:
            settings = _tls.settings(**tls)
        resp = await self._run(_flows.stls(settings, self._tls_up))
        # RFC 2595: what was advertised in plaintext cannot be trusted; the session forgot it.
        await self._run(_flows.capabilities(self))
        return resp  # type: ignore[no-any-return]

    @property
    def tls_info(self) -> Optional[Tuple[str, str]]:
        """``(protocol version, cipher suite)`` while TLS is active, else ``None``; never
        waits for a call in progress."""
        if self._closed:
            return None
        info: Optional[Tuple[str, str]] = self._driver.tls_info() if self._driver is not None else self._conn.tls_info()
        return info

    def _not_opened(self) -> str:
        name = type(self).__name__
        return (
            f"not connected yet: use `pop = await {name}.connect(host, ...)` or "
            f"`async with {name}(host, ...) as pop:` to open the connection"
        )

    async def __aenter__(self: T) -> T:
        """``async with``: opens the connection if it is not open yet."""
        if self._conn is None:
            await self._open()
        return self

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException] = None,
        tb: Optional[TracebackType] = None,
    ) -> None:
        """QUIT (deletions applied) when the block ends normally on an open connection; an
        immediate close (nothing deleted, no waiting) after an exception or cancellation."""
        if self._conn is None:
            return
        if exc_type is None and self._conn.closed is None:
            await self.quit()
        else:
            # A cancelled or failed block may have left a reply half-read: do not wait on it.
            self._abort()


def _local_addr(source: Optional[Tuple[str, int]]) -> Optional[Tuple[Optional[str], int]]:
    """``source_address`` as the event loop takes it: ``""`` (any address, to
    ``socket.create_connection``) is ``None`` to ``loop.create_connection``."""
    if source is None:
        return None
    host, port = source
    return (host or None, port)


def _coroutine(name: str) -> Callable[..., Coroutine[Any, Any, Any]]:
    """POP3Base's command ``name`` as a coroutine function (``help()`` shows its docstring)."""
    method = getattr(POP3Base, name)

    @functools.wraps(method)
    async def command(self: AsyncPOP3, *args: Any, **kwargs: Any) -> Any:
        return await method(self, *args, **kwargs)

    command.__qualname__ = f"AsyncPOP3.{name}"
    command.__module__ = __name__
    return command


# Every command that runs a flow (retr_many, top_many and retr_iter return async iterators).
for _name in (
    "user pass_ apop rpop auth login stat list retr top uidl dele noop rset utf8 lang capa "
    "dele_many retr_bytes retr_to retr_message top_headers messages _shortcmd _longcmd"
).split():
    setattr(AsyncPOP3, _name, _coroutine(_name))
del _name


class AsyncPOP3_SSL(AsyncPOP3):  # noqa: N801 - mirrors POP3_SSL
    """asyncio POP3 over implicit TLS (port 995), the certificate verified by default: see
    :meth:`connect`."""

    @classmethod
    def connect(
        cls: Type[T],
        host: str,
        port: int = POP3_SSL_PORT,
        timeout: Optional[float] = None,
        *,
        context: Optional[ssl.SSLContext] = None,
        cafile: Optional[StrPath] = None,
        cadata: Optional[Union[str, bytes]] = None,
        certfile: Optional[StrPath] = None,
        keyfile: Optional[StrPath] = None,
        source_address: Optional[Tuple[str, int]] = None,
        max_line_length: int = MAX_LINE_LENGTH,
        max_response_size: int = MAX_RESPONSE_SIZE,
        fingerprint: Optional[str] = None,
    ) -> _Connecting[T]:
        """Connect, do the TLS handshake and read the greeting (await it or use it in
        ``async with``). Without ``context``, rustls verifies the certificate against the
        bundled Mozilla roots and the system store (or ``SSL_CERT_FILE``/``SSL_CERT_DIR``),
        or only ``cafile``/``cadata`` (PEM), or accepts exactly the certificate pinned by
        ``fingerprint="SHA256:..."`` (as :class:`fastpoplib.POP3_SSL`);
        ``certfile``/``keyfile`` select a client certificate. A ``context`` is handed to the
        event loop's TLS as is (exclusive with those keywords: ValueError). Raises, when
        awaited, CertificateVerificationError (an ``ssl.SSLCertVerificationError``), TLSError
        and what :meth:`AsyncPOP3.connect` raises."""
        kwargs: Any = dict(source_address=source_address, max_line_length=max_line_length, max_response_size=max_response_size)
        if context is not None:
            if any(v is not None for v in (cafile, cadata, certfile, keyfile, fingerprint)):
                raise ValueError(
                    "context and cafile/cadata/certfile/keyfile/fingerprint are mutually exclusive: load them into the context"
                )
            return _Connecting(cls(host, port, timeout, _context=_tls.check_context(context), **kwargs))
        settings = _tls.settings(cafile=cafile, cadata=cadata, certfile=certfile, keyfile=keyfile, fingerprint=fingerprint)
        return _Connecting(cls(host, port, timeout, _tls_settings=settings, **kwargs))


