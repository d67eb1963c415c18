"""The blocking clients ``POP3`` and ``POP3_SSL`` (drop-in for ``poplib``'s)."""

from __future__ import annotations

import socket
import ssl
import warnings
from typing import Any, Iterator, List, Optional, Tuple

from . import _core, _flows, _tls
from ._base import (
    LINES,
    MAX_LINE_LENGTH,
    MAX_RESPONSE_SIZE,
    POP3_PORT,
    POP3_SSL_PORT,
    STATUS,
    BatchReplies,
    POP3Base,
    resolve_timeout,
)

_GLOBAL_DEFAULT_TIMEOUT: Any = socket._GLOBAL_DEFAULT_TIMEOUT  # type: ignore[attr-defined]


class _SocketView:
    """Stands in for poplib's ``sock`` attribute: the parts of ``socket.socket`` that code
    reads (timeout, file descriptor, addresses). I/O goes through the client, not here; none
    of these waits for a call in progress in another thread."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def gettimeout(self) -> Optional[float]:
        return self._conn.timeout

    def settimeout(self, value: Optional[float]) -> None:
        self._conn.timeout = resolve_timeout(value)

    def fileno(self) -> int:
        return self._conn.fileno()

    def getpeername(self) -> Tuple[str, int]:
        return self._conn.peername()

    def getsockname(self) -> Tuple[str, int]:
        return self._conn.sockname()

    def close(self) -> None:
        self._conn.close(None, 0)

    def shutdown(self, how: int) -> None:
        """poplib's watchdog idiom: interrupts a call in progress in another thread, which
        then raises; the connection is closed."""
        self._conn.close(None, 0)

    def __repr__(self) -> str:
        return f"<fastpoplib socket fd={self.fileno()} peer={self._conn.peername()}>"


class _FileView:
    """Stands in for poplib's ``file`` attribute (buffered reading happens in Rust)."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def close(self) -> None:
        self._conn.close(None, 0)


class _Batch(BatchReplies):
    def __iter__(self) -> "_Batch":
        return self

    def __next__(self) -> Any:
        if self._done:
            raise StopIteration
        item = self._item(self._client._call("batch_next", self._id))
        if item is None:
            raise StopIteration
        return item


class POP3(POP3Base):
    """A POP3 connection, API-compatible with ``poplib.POP3``.

    Beyond poplib: ``with POP3(...) as p:``, ``source_address``, verified TLS in ``stls()``,
    typed exceptions, and separate limits for message lines and response size.
    """

    def __init__(
        self,
        host: str,
        port: int = POP3_PORT,
        timeout: Any = _GLOBAL_DEFAULT_TIMEOUT,
        *,
        source_address: Optional[Tuple[str, int]] = None,
        max_line_length: int = MAX_LINE_LENGTH,
        max_response_size: int = MAX_RESPONSE_SIZE,
    ) -> None:
        super().__init__(host, port)
        self.sock: Optional[_SocketView] = None
        self.file: Optional[_FileView] = None
        self._conn = _core.Connection.connect(
            None,
            0,
            host,
            port,
            timeout=resolve_timeout(timeout),
            source_address=source_address,
            tls=self._implicit_tls(),
            max_line=self._maxline,
            max_data_line=max_line_length,
            max_response=max_response_size,
        )
        self.sock = _SocketView(self._conn)
        self.file = _FileView(self._conn)
        try:
            self.welcome = self._getresp()
        except BaseException:
            self.close()
            raise

    def _implicit_tls(self) -> Optional[_core.TlsSettings]:
        return None

    # -- the blocking driver -------------------------------------------------------------------
    def _call(self, name: str, *args: Any) -> Any:
        conn = self._check_open()
        self._before(conn)
        try:
            return getattr(conn, name)(None, 0, *args)
        finally:
            self._after()

    def _run(self, flow: _flows.Flow) -> Any:
        runner = _flows.Runner(flow)
        while not runner.done:
            op = runner.op
            try:
                if isinstance(op, _flows.DropStream):
                    result = self._check_open().drop_stream(op.stream)
                else:
                    result = self._completed(op, self._dispatch(op))
            except Exception as exc:
                runner.throw(exc)
            else:
                runner.send(result)
        return runner.value

    def _batch(self, numbers: List[Any], lines: List[bytes], kind: int) -> Iterator[Any]:
        return _Batch(self, numbers, lines, kind)

    def _collect(self, items: Iterator[Any]) -> List[Any]:
        return [reply for _, reply in items]

    def _stream(self, line: bytes, chunk_size: int) -> Iterator[bytes]:
        _, stream = self._call("open_stream", line)
        conn = self._conn
        try:
            while True:
                chunk = self._call("chunk", stream, chunk_size)
                if chunk is None:
                    return
                yield chunk
        finally:
            conn.drop_stream(stream)

    # -- poplib's low-level methods, used by real code ---------------------------------------
    def _putline(self, line: bytes) -> None:
        self._call("put", line)

    def _putcmd(self, line: str) -> None:
        self._putline(self._line(line))

    def _getline(self) -> Tuple[bytes, int]:
        resp = self._call("claim", STATUS)
        return resp, len(resp) + 2

    def _getresp(self) -> bytes:
        return self._call("claim", STATUS)

    def _getlongresp(self) -> Tuple[bytes, list, int]:
        return self._call("claim", LINES)

    # -- session end ------------------------------------------------------------------------------
    def quit(self) -> bytes:
        """QUIT (the server applies deletions), then close. The socket is closed even if the
        QUIT fails."""
        try:
            return self._shortcmd("QUIT")
        finally:
            self.close()

    def close(self) -> None:
        """Close the connection without assuming anything about it. From another thread it
        interrupts a call in progress, which then raises."""
        conn, self._conn = self._conn, None
        self.file = None
        self.sock = None
        if conn is not None:
            conn.close(None, 0)

    def stls(self, context: Optional[ssl.SSLContext] = None, **tls: Any) -> bytes:
        """Upgrade to TLS (RFC 2595), verifying the certificate unless ``context`` says not
        to. Refuses plaintext that arrives after the ``+OK`` and re-reads CAPA afterwards."""
        resp = self._run(_flows.stls(_tls.settings(context, **tls), self._tls_established))
        # RFC 2595: what was advertised in plaintext cannot be trusted; ask again.
        self.capabilities = None
        self._run(_flows.capabilities(self))
        return resp

    def __enter__(self) -> "POP3":
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if self._conn is None:
            return
        if exc_type is None:
            self.quit()
        else:
            self.close()


class POP3_SSL(POP3):  # noqa: N801 - poplib's name
    """POP3 over implicit TLS (port 995), with the certificate verified by default."""

    def __init__(
        self,
        host: str,
        port: int = POP3_SSL_PORT,
        keyfile: Optional[str] = None,
        certfile: Optional[str] = None,
        timeout: Any = _GLOBAL_DEFAULT_TIMEOUT,
        context: Optional[ssl.SSLContext] = None,
        *,
        cafile: Optional[str] = None,
        cadata: Optional[str | bytes] = None,
        **kwargs: Any,
    ) -> None:
        if keyfile is not None or certfile is not None:
            warnings.warn(
                "keyfile and certfile are deprecated (removed from poplib in 3.12); "
                "they still select a client certificate here",
                DeprecationWarning,
                stacklevel=2,
            )
            if context is not None and keyfile is not None:
                raise ValueError("context and keyfile arguments are mutually exclusive")
            if context is not None and certfile is not None:
                raise ValueError("context and certfile arguments are mutually exclusive")
        self._tls = _tls.settings(context, cafile=cafile, cadata=cadata, certfile=certfile, keyfile=keyfile)
        super().__init__(host, port, timeout, **kwargs)
        self._tls_established = True

    def _implicit_tls(self) -> Optional[_core.TlsSettings]:
        return self._tls


