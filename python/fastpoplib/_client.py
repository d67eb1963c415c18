"""The blocking clients ``POP3`` and ``POP3_SSL`` (drop-in for ``poplib``'s)."""

from __future__ import annotations

import io
import logging
import operator
import os  # noqa: F401 - resolves StrPath's "os.PathLike[str]" for typing.get_type_hints()
import socket
import ssl
import sys
import warnings
from types import TracebackType
from typing import Any, Callable, Iterator, List, Optional, Tuple, Type, TypeVar, Union

from . import _core, _flows, _idna, _tls, _trace, _wire
from ._base import (
    MAX_LINE_LENGTH,
    MAX_RESPONSE_SIZE,
    POP3_PORT,
    POP3_SSL_PORT,
    BatchReplies,
    POP3Base,
    current_maxline,
    resolve_timeout,
)
from ._tls import StrPath
from ._types import LongResponse, SocketLike

_GLOBAL_DEFAULT_TIMEOUT: Any = socket._GLOBAL_DEFAULT_TIMEOUT  # type: ignore[attr-defined]

_P = TypeVar("_P", bound="POP3")


class _SocketView:
    """Stands in for poplib's ``sock`` attribute: the parts of ``socket.socket`` that code
    reads (timeout, file descriptor, addresses). I/O goes through the client, not here; none
    of these waits for a call in progress in another thread."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def gettimeout(self) -> Optional[float]:
        """The connection's timeout in seconds (None: wait forever)."""
        timeout: Optional[float] = self._conn.timeout
        return timeout

    def settimeout(self, value: Optional[float]) -> None:
        """Change the timeout (seconds) of the following waits; ``0`` is refused (ValueError)."""
        self._conn.timeout = resolve_timeout(value)

    def fileno(self) -> int:
        """The socket's file descriptor (``-1`` once closed)."""
        fd: int = self._conn.fileno()
        return fd

    def getpeername(self) -> Tuple[str, int]:
        """The server's address, ``(host, port)``."""
        peer: Tuple[str, int] = self._conn.peername()
        return peer

    def getsockname(self) -> Tuple[str, int]:
        """The local address, ``(host, port)``."""
        local: Tuple[str, int] = self._conn.sockname()
        return local

    def close(self) -> None:
        """Close the connection (as :meth:`POP3.close` does, without the bookkeeping)."""
        self._conn.close(None, 0)

    def shutdown(self, how: int) -> None:
        """poplib's watchdog idiom: interrupts a call in progress in another thread, which
        then raises; the connection is closed."""
        self._conn.close(None, 0)

    def __repr__(self) -> str:
        return f"<fastpoplib socket fd={self.fileno()} peer={self._conn.peername()}>"


def _unsupported(name: str) -> Callable[..., Any]:
    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        raise io.UnsupportedOperation(
            f"POP3.file reads lines through the session only: {name}() is not supported; use readline() or iterate over it"
        )

    method.__name__ = method.__qualname__ = name
    return method


class _FileView:
    """Stands in for poplib's ``file`` attribute on every driver: lines are read through the
    session (the connection's only reader), so a reply read here is never read again. It
    reads lines (``readline``, iteration); anything else raises io.UnsupportedOperation."""

    def __init__(self, client: "POP3") -> None:
        self._client = client

    def readline(self, size: Optional[int] = -1) -> bytes:
        """The next line as it arrived, line end included (what poplib's ``_getline``
        reads). With ``size`` >= 0, at most ``size`` bytes of it, as io's ``readline(size)``:
        the next call goes on with the rest of that line (a command sent in between drops
        the rest of its reply, line included). Lines are bounded by the session's limits,
        whatever ``size``: ``fastpoplib._MAXLINE`` for a status line, ``max_line_length``
        for a body line (RemoteProtocolError beyond)."""
        size = -1 if size is None else operator.index(size)
        if size == 0:
            return b""
        line: bytes = self._client._call("raw_line", None if size < 0 else size)
        return line

    def __iter__(self) -> "_FileView":
        return self

    def __next__(self) -> bytes:
        """The next line, as :meth:`readline` reads it (the server gives no end of file: a
        loop over the lines of a reply stops at its terminator itself)."""
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    def flush(self) -> None:
        """Nothing to flush: the view only reads."""

    def close(self) -> None:
        """Close the connection."""
        self._client.close()

    # What a binary file offers beyond reading lines: refused with a sentence (``readlines()``
    # too: the server never ends the stream).
    read = _unsupported("read")
    read1 = _unsupported("read1")
    readall = _unsupported("readall")
    readinto = _unsupported("readinto")
    readlines = _unsupported("readlines")
    peek = _unsupported("peek")
    write = _unsupported("write")
    writelines = _unsupported("writelines")
    seek = _unsupported("seek")
    tell = _unsupported("tell")
    truncate = _unsupported("truncate")
    fileno = _unsupported("fileno")


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
    """A POP3 connection (RFC 1939), API-compatible with ``poplib.POP3``.

    Connects to ``host:port`` and reads the greeting. ``timeout`` (seconds) bounds the connect,
    a TLS handshake and each wait for the server; Ctrl-C interrupts any wait. Beyond poplib:
    ``with POP3(...) as p:``, ``source_address``, verified TLS in ``stls()``, typed
    exceptions, and separate limits for message lines and response size (in bytes).

    A subclass may skip this ``__init__`` and bring its own connected socket, as poplib
    subclasses do: set ``host``, ``port``, ``sock`` (and ``file``), then call ``_getresp()``.
    """

    #: poplib's socket: a view of the Rust-owned socket (``gettimeout``, ``settimeout``,
    #: ``fileno``, ``getpeername``, ``getsockname``, ``shutdown``, ``close``), or the real
    #: ``ssl.SSLSocket``/``socket.socket`` when a ``context`` is used or a subclass brings
    #: its own. None once closed, as in poplib.
    sock: SocketLike
    _source_address: Optional[Tuple[str, int]] = None

    @property
    def file(self) -> Any:
        """poplib's ``file``: ``readline([size])``, iteration over lines and ``close()``, read
        through the session on every driver (a file a subclass assigns is only closed with the
        connection); other file methods raise io.UnsupportedOperation. None once closed."""
        return self.__dict__.get("_file")

    @file.setter
    def file(self, value: Any) -> None:
        if value is not None and not isinstance(value, _FileView):
            self.__dict__["_own_file"] = value
            value = _FileView(self)
        self.__dict__["_file"] = value

    def __init__(
        self,
        host: str,
        port: int = POP3_PORT,
        timeout: Optional[float] = _GLOBAL_DEFAULT_TIMEOUT,
        *,
        source_address: Optional[Tuple[str, int]] = None,
        max_line_length: int = MAX_LINE_LENGTH,
        max_response_size: int = MAX_RESPONSE_SIZE,
    ) -> None:
        """Connect to ``host:port`` over TCP and read the greeting (RFC 1939 §4), kept in
        ``welcome``.

        ``timeout`` (seconds; default ``socket.getdefaulttimeout()``, None waits forever,
        ``0`` raises ValueError) bounds the connect, a TLS handshake and each wait for the
        server. ``source_address``: the local ``(host, port)`` to bind. ``max_line_length``
        (bytes, default 1 MiB) bounds a line of a multi-line reply; ``max_response_size``
        (bytes, default 256 MiB) a whole multi-line reply held in memory; status lines are
        bounded by ``fastpoplib._MAXLINE`` (2048) as in poplib.

        Raises POP3ConnectionError (a ``ConnectionError``) when the connection cannot be
        made, POP3TimeoutError (a ``TimeoutError``) on timeout, ServerError if the greeting
        is ``-ERR``, RemoteProtocolError for a malformed greeting; ValueError for an empty
        host, TypeError/OverflowError for a bad port."""
        super().__init__(host, port)
        self.timeout = timeout
        limits = dict(max_status_line=self._maxline, max_line_length=max_line_length, max_response_size=max_response_size)
        self._source_address = source_address
        context = self._context()
        sys.audit("poplib.connect", self, host, port)
        if context is None and not self._own_socket():
            self._attach(
                _core.Connection.connect(
                    None, 0, _idna.ascii_host(host), port, timeout=self.timeout, source_address=source_address, tls=self._implicit_tls(), **limits
                )
            )
            self.sock = _SocketView(self._conn)
        else:
            try:
                self.sock = self._create_socket(self.timeout)
            except BaseException as exc:
                err = _wire.translate(exc, host, self.timeout)
                if err is exc:
                    raise
                raise err from exc
            self._attach(_core.Connection.external(tls=isinstance(self.sock, ssl.SSLSocket), **limits))
            self._driver = _wire.SocketDriver(self.sock, host)
        self.file = _FileView(self)
        try:
            self._getresp()
        except BaseException:
            self.close()
            raise
        _trace.event(logging.INFO, self._label, "connected%s", " (TLS %s, %s)" % self.tls_info if self.tls_info else "")

    @property
    def timeout(self) -> Optional[float]:
        """The connection's timeout in seconds (None: none), live: what ``sock.gettimeout()``
        says on every driver. It bounds each wait for the server (a read, a write, a TLS
        handshake); assigning it (or ``sock.settimeout()``) applies to the next wait. ``0`` is
        refused (ValueError). Once closed, the value it had then."""
        sock = self.__dict__.get("sock")
        if sock is not None:
            live: Optional[float] = sock.gettimeout()
            return live
        stored: Optional[float] = self.__dict__.get("_timeout")
        return stored

    @timeout.setter
    def timeout(self, value: Optional[float]) -> None:
        value = resolve_timeout(value)
        self.__dict__["_timeout"] = value
        sock = self.__dict__.get("sock")
        if sock is not None:
            sock.settimeout(value)

    def _create_socket(self, timeout: Optional[float]) -> socket.socket:
        """poplib's hook for a subclass that makes its own socket (through a proxy, say): when
        overridden, the socket it returns (plain or ``ssl.SSLSocket``) carries the session,
        read and written through Python. Here: a TCP connection to ``host:port`` (from
        ``source_address`` when given), for ``super()._create_socket(timeout)``."""
        return socket.create_connection((self.host, self.port), timeout, self._source_address)

    @classmethod
    def _own_socket(cls) -> bool:
        """Whether a subclass overrides ``_create_socket`` (its socket is then driven by Python)."""
        return cls._create_socket not in _STOCK_CREATE_SOCKET

    def _implicit_tls(self) -> Optional[_core.TlsSettings]:
        return None

    def _context(self) -> Optional[ssl.SSLContext]:
        return None

    # -- the blocking driver -------------------------------------------------------------------
    def _adopt(self) -> Any:
        """poplib's subclass pattern: ``sock`` was set by the subclass; drive it from Python."""
        sock = self.__dict__.get("sock")
        if not isinstance(sock, socket.socket) or sock.fileno() < 0:
            return None
        self._driver = _wire.SocketDriver(sock, getattr(self, "host", "the server"))
        return _core.Connection.external(
            max_status_line=current_maxline(),
            max_line_length=MAX_LINE_LENGTH,
            max_response_size=MAX_RESPONSE_SIZE,
            tls=isinstance(sock, ssl.SSLSocket),
        )

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        conn = self._check_open()
        self._before(conn)
        try:
            result = getattr(conn, name)(None, 0, *args, **kwargs)
            if self._driver is not None:
                result = self._driver.run(result, self._wrap_tls)
            return result
        finally:
            self._after()

    def _wrap_tls(self, sock: socket.socket) -> socket.socket:
        context = self._stls_context or _tls.default_context()
        self.sock = context.wrap_socket(sock, server_hostname=self.host)
        return self.sock

    def _run(self, flow: _flows.Flow) -> Any:
        runner = _flows.Runner(flow)
        while not runner.done:
            op = runner.op
            try:
                if isinstance(op, _flows.DropStream):
                    result = self._check_open().drop_stream(op.stream)
                elif isinstance(op, _flows.Offload):
                    result = op.call()
                else:
                    result = self._dispatch(op)
            except Exception as exc:
                runner.throw(exc)
            else:
                runner.send(result)
        return runner.value

    def _batch(self, numbers: List[Any], commands: List[_core.Command], keep_errors: bool = False) -> Iterator[Any]:
        return _Batch(self, numbers, commands, keep_errors)

    def _collect(self, items: Iterator[Any], finish: Callable[[List[Tuple[Any, Any]]], Any]) -> Any:
        return finish(list(items))

    def _stream(self, command: _core.Command, chunk_size: int) -> Iterator[bytes]:
        _, stream = self._call("open_stream", command)
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
        self._call("put", _core.Command.raw(line))

    def _putcmd(self, line: str) -> None:
        self._putline(self._line(line))

    def _getline(self) -> Tuple[bytes, int]:
        """poplib's ``_getline``: the next line of the oldest reply not yet read (line end
        stripped as poplib strips it) and the octets it took. For code that frames replies
        itself after ``_putcmd``; the session skips the rest of that reply at the next command."""
        line = self._call("raw_line")
        octets = len(line)
        if line[-2:] == b"\r\n":
            return line[:-2], octets
        if line[:1] == b"\r":
            return line[1:-1], octets
        return line[:-1], octets

    def _getresp(self) -> bytes:
        return self._call("claim")  # type: ignore[no-any-return]

    def _getlongresp(self) -> LongResponse:
        return self._call("claim", multiline=True)  # type: ignore[no-any-return]

    # -- session end ------------------------------------------------------------------------------
    def quit(self) -> bytes:
        """QUIT (RFC 1939 §6): the server deletes the messages marked deleted and ends the
        session; returns its ``+OK`` line. The connection is closed even if QUIT fails (a
        ServerError for ``-ERR``: some deletions could not be made)."""
        try:
            return self._shortcmd("QUIT")
        finally:
            self.close()

    def close(self) -> None:
        """Close the connection without sending QUIT (nothing is deleted: RFC 1939 §6) and
        without assuming anything about its state. Safe to call twice; from another thread it
        interrupts a call in progress, which then raises. Never raises for I/O errors."""
        conn, self._conn = self._conn, None
        sock, file = self.__dict__.get("sock"), self.__dict__.pop("_own_file", None)
        self.file = None
        if sock is not None:
            self.__dict__["_timeout"] = sock.gettimeout()  # what `timeout` says once closed
        self.sock = None  # type: ignore[assignment]  # None once closed, as in poplib
        if conn is not None:
            conn.close(None, 0)
        if isinstance(sock, socket.socket):
            _close_socket(sock, file)
        if conn is not None:
            _trace.event(logging.INFO, self._label, "closed")

    def stls(
        self,
        context: Optional[ssl.SSLContext] = None,
        *,
        cafile: Optional[StrPath] = None,
        cadata: Optional[Union[str, bytes]] = None,
        certfile: Optional[StrPath] = None,
        keyfile: Optional[StrPath] = None,
        fingerprint: Optional[str] = None,
    ) -> bytes:
        """STLS (RFC 2595): upgrade to TLS and return the server's ``+OK`` line.

        Without ``context`` the certificate is verified (bundled Mozilla roots and the system
        store, or ``SSL_CERT_FILE``/``SSL_CERT_DIR``, or ``cafile=``/``cadata=``; or pinned with
        ``fingerprint="SHA256:..."``: exactly that certificate, whoever signed it;
        ``certfile=``/``keyfile=`` for a client certificate). A ``context`` is used by Python's ``ssl`` exactly as given, as poplib
        does; ``sock`` is then that ``ssl.SSLSocket``. Plaintext that arrives after the
        ``+OK`` is refused (response injection, RemoteProtocolError); CAPA is read again.
        Raises error_proto if TLS is already up or the server has no STLS (CAPA is read
        first, RFC 2449), CertificateVerificationError (an ``ssl.SSLCertVerificationError``)
        when the certificate is not trusted, TLSError for another handshake failure; TypeError
        or ValueError for a ``context`` that is not a client ``ssl.SSLContext`` (given one,
        the keywords are not used)."""
        tls: Any = dict(cafile=cafile, cadata=cadata, certfile=certfile, keyfile=keyfile, fingerprint=fingerprint)
        if context is not None:
            _tls.check_context(context)
            if fingerprint is not None:
                raise ValueError("context and fingerprint are mutually exclusive")
            if self._driver is None and not self._tls_up:
                self._take_socket()
        if self._driver is not None:
            self._stls_context = context or _tls.default_context(**tls)
            settings = None
        else:
            settings = _tls.settings(**tls)
        resp = self._run(_flows.stls(settings, self._tls_up))
        # RFC 2595: what was advertised in plaintext cannot be trusted; the session forgot it.
        self._run(_flows.capabilities(self))
        return resp  # type: ignore[no-any-return]

    def _take_socket(self) -> None:
        """From here on Python drives the socket (TLS with the caller's context), with the
        connection's current timeout (``sock.settimeout()`` included)."""
        conn = self._check_open()
        timeout = conn.timeout
        sock = socket.socket(fileno=conn.detach())
        sock.settimeout(timeout)
        self.sock = sock
        self._driver = _wire.SocketDriver(sock, self.host)

    @property
    def tls_info(self) -> Optional[Tuple[str, str]]:
        """``(protocol version, cipher suite)`` while TLS is active (e.g. ``("TLSv1.3",
        "TLS_AES_256_GCM_SHA384")``), else ``None``; never waits for a call in progress."""
        if self._closed:
            return None
        info: Optional[Tuple[str, str]] = self._driver.tls_info() if self._driver is not None else self._conn.tls_info()
        return info

    def __enter__(self: _P) -> _P:
        """``with POP3(...) as pop:``: the connection itself."""
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException] = None,
        tb: Optional[TracebackType] = None,
    ) -> None:
        """QUIT (deletions applied) when the block ends normally on an open connection;
        :meth:`close` (nothing deleted) after an exception or an earlier error."""
        if self._conn is None:
            return
        if exc_type is None and self._conn.closed is None:
            self.quit()
        else:
            # An exception, or the connection was already closed by an error the block caught.
            self.close()


def _close_socket(sock: socket.socket, file: Any) -> None:
    # shutdown() first: it wakes a read blocked in another thread, which close() alone does
    # not (the watchdog pattern).
    for step in (lambda: sock.shutdown(socket.SHUT_RDWR), file.close if file is not None else None, sock.close):
        try:
            if step is not None:
                step()
        except OSError:
            pass  # closing anyway


class POP3_SSL(POP3):  # noqa: N801 - poplib's name
    """POP3 over implicit TLS (port 995), with the certificate verified by default.

    Without ``context``, rustls verifies the server against the bundled Mozilla roots and the
    system store, or against ``cafile``/``cadata`` (PEM; a self-signed certificate given
    there is trusted as is, as OpenSSL does). A ``context`` is used by Python's ``ssl``
    exactly as given, as poplib does (``sock`` is then its ``ssl.SSLSocket``).
    ``keyfile``/``certfile`` (deprecated, as in poplib) select a client certificate.
    Raises CertificateVerificationError when the certificate is not trusted.

    A subclass overriding ``_create_socket`` (poplib's hook, for logging or a proxy) gets
    poplib's behaviour: ``super()._create_socket(timeout)`` returns the TCP connection wrapped
    by ``self.context`` (TLS from the first byte, RFC 8314 §3), driven by Python's ``ssl``."""

    def __init__(
        self,
        host: str,
        port: int = POP3_SSL_PORT,
        keyfile: Optional[StrPath] = None,
        certfile: Optional[StrPath] = None,
        timeout: Optional[float] = _GLOBAL_DEFAULT_TIMEOUT,
        context: Optional[ssl.SSLContext] = None,
        *,
        cafile: Optional[StrPath] = None,
        cadata: Optional[Union[str, bytes]] = None,
        source_address: Optional[Tuple[str, int]] = None,
        max_line_length: int = MAX_LINE_LENGTH,
        max_response_size: int = MAX_RESPONSE_SIZE,
        fingerprint: Optional[str] = None,
    ) -> None:
        """Connect to ``host:port`` (default 995), do the TLS handshake and read the greeting.

        Without ``context``, rustls verifies the certificate and host name against the
        bundled Mozilla roots and the system store (or only the certificates named by
        ``SSL_CERT_FILE``/``SSL_CERT_DIR`` when set, as ``ssl.create_default_context()``
        does), or only against ``cafile``/``cadata`` (PEM; a self-signed certificate given
        there, or listed in ``SSL_CERT_FILE``, is trusted as is). ``fingerprint="SHA256:AB:..."``
        pins the server's certificate instead: exactly the one with that SHA-256 digest is
        accepted, whoever signed it and whatever name it bears (the fingerprint a refused
        certificate's error shows; exclusive with ``cafile``/``cadata``). ``context``: an
        ``ssl.SSLContext`` used by Python's ``ssl`` exactly as poplib uses it (exclusive with
        ``keyfile``, ``certfile``, ``cafile`` and ``cadata``: ValueError). ``keyfile`` and
        ``certfile`` (deprecated, DeprecationWarning, as in poplib) select a client
        certificate. ``timeout`` (seconds, bounding the connect, the whole handshake and each
        wait), ``source_address`` and the limits are :class:`POP3`'s.

        ``self.context`` is, as in poplib, always an ``ssl.SSLContext``: the ``context`` given,
        else a verified one equivalent to these keywords (``ssl.create_default_context()``
        with ``cafile``/``cadata`` and the client certificate). The default connection is
        still made by rustls; that context is what a subclass's ``_create_socket`` uses
        (built at construction then), and otherwise built on first access.

        Raises CertificateVerificationError (an ``ssl.SSLCertVerificationError``) when the
        certificate is not trusted or does not match ``host``, TLSError (an
        ``ssl.SSLError``) for another handshake failure, and what :class:`POP3` raises;
        ValueError for ``fingerprint`` in a subclass overriding ``_create_socket`` (an
        ``ssl.SSLContext`` cannot pin a certificate: trust it with ``cafile=``)."""
        if keyfile is not None or certfile is not None:
            warnings.warn(
                "keyfile and certfile are deprecated (removed from poplib in 3.12); "
                "they still select a client certificate here",
                DeprecationWarning,
                stacklevel=2,
            )
        if context is not None:
            if keyfile is not None:
                raise ValueError("context and keyfile arguments are mutually exclusive")
            if certfile is not None:
                raise ValueError("context and certfile arguments are mutually exclusive")
            if cafile is not None or cadata is not None or fingerprint is not None:
                raise ValueError("context and cafile/cadata/fingerprint are mutually exclusive: load the CA into the context")
            self._ssl_context: Optional[ssl.SSLContext] = _tls.check_context(context)
            self._tls = None
        else:
            self._ssl_context = None
            self._tls = _tls.settings(cafile=cafile, cadata=cadata, certfile=certfile, keyfile=keyfile, fingerprint=fingerprint)
            self._tls_options: Any = dict(cafile=cafile, cadata=cadata, certfile=certfile, keyfile=keyfile, fingerprint=fingerprint)
            if self._own_socket():
                self.context = _tls.default_context(**self._tls_options)
        super().__init__(
            host, port, timeout, source_address=source_address, max_line_length=max_line_length, max_response_size=max_response_size
        )

    @property
    def context(self) -> ssl.SSLContext:
        """poplib's ``context`` (see :meth:`__init__`): the one given, else a verified
        equivalent of the TLS keywords. ValueError when the connection pins a fingerprint
        (no ``ssl.SSLContext`` can express that)."""
        context = self.__dict__.get("_context_attr") or self._ssl_context
        if context is None:
            if self._tls_options["fingerprint"] is not None:
                raise ValueError(
                    "this connection pins a certificate fingerprint, which fastpoplib's own TLS checks;"
                    " no ssl.SSLContext can express that: pass context= or cafile= to get one"
                )
            context = self.__dict__["_context_attr"] = _tls.default_context(**self._tls_options)
        return context

    @context.setter
    def context(self, value: ssl.SSLContext) -> None:
        self.__dict__["_context_attr"] = _tls.check_context(value)

    def _create_socket(self, timeout: Optional[float]) -> socket.socket:
        """As poplib's: the TCP connection of :meth:`POP3._create_socket`, wrapped by
        ``self.context`` for ``host`` (an ``ssl.SSLSocket``, handshake done)."""
        sock = super()._create_socket(timeout)
        try:
            return self.context.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise

    def _implicit_tls(self) -> Optional[_core.TlsSettings]:
        return self._tls

    def _context(self) -> Optional[ssl.SSLContext]:
        return self._ssl_context


# The ``_create_socket`` methods that keep the default path (rustls unless a context is given).
_STOCK_CREATE_SOCKET = (POP3._create_socket, POP3_SSL._create_socket)
