"""The asyncio clients ``AsyncPOP3`` and ``AsyncPOP3_SSL``: the same commands as the blocking
classes (run from the same flows), as coroutines, on tokio + rustls.

Open a connection with ``AsyncPOP3.connect(...)``, which can be awaited or used directly as an
async context manager::

    async with AsyncPOP3_SSL.connect("pop.example.com") as pop:
        await pop.user("me"); await pop.pass_(secret)
        resp, lines, octets = await pop.retr(1)
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import sys
from typing import Any, AsyncIterator, Generator, List, Optional, Tuple, Type, TypeVar

from . import _bridge, _core, _flows, _tls, _wire
from ._base import MAX_LINE_LENGTH, MAX_RESPONSE_SIZE, POP3_PORT, POP3_SSL_PORT, STATUS, BatchReplies, POP3Base, resolve_timeout

T = TypeVar("T", bound="AsyncPOP3")


class _Connecting:
    """What ``connect()`` returns: awaitable, or usable in ``async with``."""

    def __init__(self, client: "AsyncPOP3") -> None:
        self._client = client

    def __await__(self) -> Generator[Any, None, Any]:
        return self._client._open().__await__()

    async def __aenter__(self) -> Any:
        return await self._client._open()

    async def __aexit__(self, exc_type: Any, *exc: Any) -> None:
        await self._client.__aexit__(exc_type, *exc)


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
    """An asyncio POP3 connection. Create it with ``await AsyncPOP3.connect(host, ...)``."""

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
        super().__init__(host, port)
        self.timeout = resolve_timeout(timeout)
        self._ssl_context = _context
        self._options = dict(
            timeout=resolve_timeout(timeout),
            source_address=source_address,
            tls=_tls_settings,
            max_data_line=max_line_length,
            max_response=max_response_size,
        )

    @classmethod
    def connect(cls: Type[T], host: str, port: int = POP3_PORT, timeout: Optional[float] = None, **kwargs: Any) -> Any:
        """Connect and read the greeting: ``await AsyncPOP3.connect(...)`` or
        ``async with AsyncPOP3.connect(...) as pop:``."""
        return _Connecting(cls(host, port, timeout, **kwargs))

    async def _open(self: T) -> T:
        self._bridge = _bridge.current()
        sys.audit("poplib.connect", self, self.host, self.port)
        if self._ssl_context is None:
            self._conn = await self._bridge.call(_core.Connection.connect, self.host, self.port, max_line=self._maxline, **self._options)
            self._tls_established = self._options["tls"] is not None
        else:
            limits = {k: self._options[k] for k in ("max_data_line", "max_response")}
            self._conn = _core.Connection.external(max_line=self._maxline, **limits)
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(
                        self.host, self.port, ssl=self._ssl_context, server_hostname=self.host, local_addr=self._options["source_address"]
                    ),
                    self.timeout,
                )
            except BaseException as exc:
                self._conn = None
                err = _wire.translate(exc, self.host)
                if err is exc:
                    raise
                raise err from exc
            self._driver = _wire.StreamDriver(reader, writer, self.host, self.timeout)
            self._tls_established = True
        try:
            self.welcome = await self._call("claim", STATUS)
        except BaseException:
            self._abort()
            raise
        return self

    async def _call(self, name: str, *args: Any) -> Any:
        conn = self._check_open()
        self._before(conn)
        try:
            if self._driver is not None:
                return await self._driver.run(getattr(conn, name)(None, 0, *args), self._stls_context)
            return await self._bridge.call(getattr(conn, name), *args)
        finally:
            self._after()

    async def _run(self, flow: _flows.Flow) -> Any:
        runner = _flows.Runner(flow)
        while not runner.done:
            op = runner.op
            try:
                if isinstance(op, _flows.DropStream):
                    result = self._check_open().drop_stream(op.stream)
                else:
                    result = self._completed(op, await self._dispatch(op))
            except Exception as exc:
                runner.throw(exc)
            else:
                runner.send(result)
        return runner.value

    def _batch(self, numbers: List[Any], lines: List[bytes], kind: int) -> AsyncIterator[Any]:
        return _Batch(self, numbers, lines, kind)

    async def _collect(self, items: AsyncIterator[Any]) -> List[Any]:
        return [reply async for _, reply in items]

    async def _stream(self, line: bytes, chunk_size: int) -> AsyncIterator[bytes]:
        _, stream = await self._call("open_stream", line)
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
        """QUIT (the server applies deletions), then close, even if QUIT fails."""
        try:
            return await self._shortcmd("QUIT")
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Close the connection (TLS close_notify, then FIN). Safe to call twice; from
        another task it interrupts a call in progress, which then raises."""
        conn, self._conn = self._conn, None
        driver, self._driver = self._driver, None
        if conn is not None and driver is None:
            await self._bridge.call(conn.close)
        elif conn is not None:
            conn.abort()
            await driver.close()

    def _abort(self) -> None:
        conn, self._conn = self._conn, None
        driver, self._driver = self._driver, None
        if conn is not None:
            conn.abort()
        if driver is not None:
            driver.writer.close()

    async def stls(self, context: Optional[ssl.SSLContext] = None, **tls: Any) -> bytes:
        """STLS (RFC 2595): upgrade to TLS, verified by default (``cafile=``/``cadata=``);
        a ``context`` is used by the event loop's TLS exactly as given (Python 3.11+).
        Re-reads CAPA afterwards; raises error_proto if TLS is up or STLS is not offered."""
        if context is not None:
            _tls.check_context(context)
            if self._driver is None and not self._tls_established:
                fd = self._check_open().detach()
                reader, writer = await asyncio.open_connection(sock=socket.socket(fileno=fd))
                self._driver = _wire.StreamDriver(reader, writer, self.host, self.timeout)
        if self._driver is not None:
            self._stls_context = context or _tls.default_context(**tls)
            settings = None
        else:
            settings = _tls.settings(**tls)
        resp = await self._run(_flows.stls(settings, self._tls_established))
        self._tls_established = True
        # RFC 2595: what was advertised in plaintext cannot be trusted; ask again.
        self.capabilities = None
        await self._run(_flows.capabilities(self))
        return resp

    @property
    def tls_info(self) -> Optional[Tuple[str, str]]:
        """``(protocol version, cipher suite)`` while TLS is active, else ``None``."""
        if self._conn is None:
            return None
        return self._driver.tls_info() if self._driver is not None else self._conn.tls_info()

    async def __aenter__(self: T) -> T:
        if self._conn is None:
            await self._open()
        return self

    async def __aexit__(self, exc_type: Any, *exc: Any) -> None:
        if self._conn is None:
            return
        if exc_type is None and self._conn.closed is None:
            await self.quit()
        else:
            # A cancelled or failed block may have left a reply half-read: do not wait on it.
            self._abort()


class AsyncPOP3_SSL(AsyncPOP3):  # noqa: N801 - mirrors POP3_SSL
    """asyncio POP3 over implicit TLS (port 995), verified by default."""

    @classmethod
    def connect(  # type: ignore[override]
        cls,
        host: str,
        port: int = POP3_SSL_PORT,
        timeout: Optional[float] = None,
        *,
        context: Optional[ssl.SSLContext] = None,
        cafile: Optional[str] = None,
        cadata: Any = None,
        certfile: Optional[str] = None,
        keyfile: Optional[str] = None,
        **kwargs: Any,
    ) -> Any:
        if context is not None:
            if any(v is not None for v in (cafile, cadata, certfile, keyfile)):
                raise ValueError("context and cafile/cadata/certfile/keyfile are mutually exclusive: load them into the context")
            return _Connecting(cls(host, port, timeout, _context=_tls.check_context(context), **kwargs))
        settings = _tls.settings(cafile=cafile, cadata=cadata, certfile=certfile, keyfile=keyfile)
        return _Connecting(cls(host, port, timeout, _tls_settings=settings, **kwargs))


