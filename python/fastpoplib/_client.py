"""The blocking clients ``POP3`` and ``POP3_SSL`` (drop-in for ``poplib``'s)."""

from __future__ import annotations

import socket
import ssl
import warnings
from typing import Any, Generator, Iterator, List, Optional, Tuple

from . import _core, _flows, _tls, _trace
from ._base import MAX_LINE_LENGTH, MAX_RESPONSE_SIZE, POP3_PORT, POP3_SSL_PORT, POP3Base, resolve_timeout

_GLOBAL_DEFAULT_TIMEOUT: Any = socket._GLOBAL_DEFAULT_TIMEOUT  # type: ignore[attr-defined]


class _SocketView:
    """Stands in for poplib's ``sock`` attribute: the parts of ``socket.socket`` that code
    reads (timeout, file descriptor, addresses). I/O goes through the client, not here."""

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
        self._conn.close()

    def __repr__(self) -> str:
        return f"<fastpoplib socket fd={self.fileno()} peer={self._conn.peername()}>"


class _FileView:
    """Stands in for poplib's ``file`` attribute (buffered reading happens in Rust)."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def close(self) -> None:
        self._conn.close()


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
        self._conn = _core.Connection(
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
    def _drive(self, flow: _flows.Flow) -> Generator[Any, None, Any]:
        return self._steps(_flows.Runner(flow))

    def _steps(self, runner: _flows.Runner) -> Generator[Any, None, Any]:
        while not runner.done:
            op = runner.op
            if isinstance(op, _flows.Emit):
                try:
                    yield op.value
                except GeneratorExit:
                    self._abandon(runner)
                    raise
                runner.send(None)
                continue
            try:
                result = self._completed(op, self._dispatch(op))
            except Exception as exc:
                runner.throw(exc)
            else:
                runner.send(result)
        return runner.value

    def _abandon(self, runner: _flows.Runner) -> None:
        """The caller left a batch early: let the flow drain the replies in flight."""
        try:
            runner.throw(_flows.Abandon())
            for _ in self._steps(runner):
                pass
        except _flows.Abandon:
            pass

    def _run(self, flow: _flows.Flow) -> Any:
        gen = self._drive(flow)
        while True:
            try:
                next(gen)
            except StopIteration as stop:
                return stop.value

    def _iter(self, flow: _flows.Flow) -> Iterator[Any]:
        return self._drive(flow)

    def _collect(self, flow: _flows.Flow) -> List[Any]:
        return list(self._drive(flow))

    # -- poplib's low-level methods, used by real code ---------------------------------------
    def _putline(self, line: bytes) -> None:
        _trace.command(self._debugging, line, False)
        self._check_open().putline(line)

    def _putcmd(self, line: str) -> None:
        self._putline(self._line(line))

    def _getline(self) -> Tuple[bytes, int]:
        return self._check_open().getline()

    def _getresp(self) -> bytes:
        resp = self._check_open().getresp()
        _trace.response(self._debugging, resp)
        return resp

    def _getlongresp(self) -> Tuple[bytes, list, int]:
        return self._check_open().getlongresp()

    # -- session end ------------------------------------------------------------------------------
    def quit(self) -> bytes:
        """QUIT (the server applies deletions), then close. The socket is closed even if the
        QUIT fails."""
        try:
            return self._shortcmd("QUIT")
        finally:
            self.close()

    def close(self) -> None:
        """Close the connection without assuming anything about it."""
        conn, self._conn = self._conn, None
        self.file = None
        self.sock = None
        if conn is not None:
            conn.close()

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

    def stls(self, context: Optional[ssl.SSLContext] = None, **tls: Any) -> bytes:
        from .exceptions import error_proto

        raise error_proto("-ERR TLS session already established")
