"""Python's own sockets as the session's driver: used when the caller passes an
``ssl.SSLContext`` (TLS is then done by Python's ``ssl`` with exactly that context, as poplib
does) and when a subclass brings its own socket. Framing and every piece of session state
stay in the Rust session; only the bytes pass through here, in large reads.

Each session operation is a ``Job``: ``step()`` says what to do (write these bytes, read,
do the TLS handshake) until it gives the result. The blocking and asyncio pumps below are
the only two loops over it."""

from __future__ import annotations

import asyncio
import select
import socket
import ssl
import time
from typing import Any, Callable, List, Optional

from .exceptions import (
    CertificateVerificationError,
    ConnectionClosedError,
    POP3ConnectionError,
    POP3Error,
    POP3TimeoutError,
    RemoteProtocolError,
    TLSError,
)

WRITE, READ, HANDSHAKE, DONE = 0, 1, 2, 3

# OpenSSL's X509_V_ERR_* codes that get their own explanation.
_NAME_MISMATCH = {62, 64}  # host name, IP address
_UNKNOWN_ISSUER = {2, 18, 19, 20, 21}
_CERTIFICATE_REQUIRED = {"TLSV13_ALERT_CERTIFICATE_REQUIRED"}
# OpenSSL's reason when a plain-text reply ("+OK ...") arrives instead of a TLS record.
_PLAINTEXT_REPLY = {"WRONG_VERSION_NUMBER"}

# Large reads: the per-call cost of Python I/O is paid per 256 KiB, not per line.
READ_SIZE = 256 * 1024

# How often a read waiting for the server looks whether another thread closed the socket:
# close() alone does not wake a thread blocked in recv() on that descriptor.
CLOSE_CHECK_SECONDS = 0.5


def translate(exc: BaseException, host: str, timeout: Optional[float] = None) -> BaseException:
    """The library's exception for an I/O failure of Python's socket or ssl modules;
    ``timeout`` (seconds, None if unknown) is the wait that ran out, named as the Rust
    transport names it."""
    if isinstance(exc, POP3Error) or not isinstance(exc, Exception):
        return exc  # ours already, or KeyboardInterrupt and the like
    if isinstance(exc, ssl.SSLCertVerificationError):
        if exc.verify_code in _NAME_MISMATCH:
            err = CertificateVerificationError(f"certificate is not valid for the name {host} (hostname mismatch)")
        else:
            hint = ""
            if exc.verify_code in _UNKNOWN_ISSUER:
                hint = "; trust its CA in the context you pass (context.load_verify_locations(cafile=...))"
            err = CertificateVerificationError(f"certificate verify failed for {host}: {exc.verify_message}{hint}")
        return _with_ssl_details(err, exc)
    if isinstance(exc, ssl.SSLError):
        if exc.reason in _CERTIFICATE_REQUIRED:
            text = f"the server {host} requires a client certificate; load one into the context (context.load_cert_chain(...))"
        elif exc.reason in _PLAINTEXT_REPLY:
            text = (
                f"the server {host} answered in plain text, not TLS: is this a plain POP3 port? Connect without"
                " TLS there (upgrading with STLS), or use the server's POP3S port (usually 995)"
            )
        else:
            text = f"TLS error with {host}: {exc.reason or exc}"
        return _with_ssl_details(TLSError(text), exc)
    if isinstance(exc, (socket.timeout, asyncio.TimeoutError)):
        waited = f" after {timeout:.3f} s" if timeout is not None else ""
        return POP3TimeoutError(f"timed out{waited} waiting for the server {host}")
    if isinstance(exc, OSError):
        return POP3ConnectionError(f"connection to {host} failed: {exc.strerror or exc}")
    return exc


def _with_ssl_details(err: Any, exc: ssl.SSLError) -> BaseException:
    """Keeps what code written for poplib reads from ``ssl`` errors (``reason``, ``library``,
    ``verify_code``, ``verify_message``)."""
    for name in ("reason", "library", "verify_code", "verify_message"):
        if hasattr(exc, name):
            setattr(err, name, getattr(exc, name))
    return err


def _failed(job: Any, exc: BaseException, host: str, timeout: Optional[float], close: Callable[[], None]) -> BaseException:
    """After a failure. An error the session itself gave (a ``-ERR``, a refused request, a
    broken reply) has already ended the job, and the session's one policy decided whether the
    connection stays usable. Anything else (Python's own I/O, a STARTTLS injection seen here,
    a timeout, a cancel, Ctrl-C) may have left a reply half-read: ``fail`` closes the session
    for that reason, worded as the other drivers word it (it does nothing to a job already
    ended), and every later call repeats the error's sentence. The socket is closed whenever
    the session is."""
    err = translate(exc, host, timeout)
    job.fail(err)
    if job.closed:
        close()
    return err


def _injected(count: int) -> RemoteProtocolError:
    return RemoteProtocolError(
        f"STARTTLS response injection: {count} bytes arrived in plaintext after the STLS reply; "
        "the connection was closed"
    )


class SocketDriver:
    """Moves a job's bytes over a blocking socket (``socket.socket`` or ``ssl.SSLSocket``)."""

    def __init__(self, sock: socket.socket, host: str) -> None:
        self.sock = sock
        self.host = host

    def run(self, job: Any, wrap: Callable[[socket.socket], socket.socket]) -> Any:
        try:
            while True:
                action, value = job.step()
                if action == WRITE:
                    self.sock.sendall(value)
                elif action == READ:
                    self._wait_readable()
                    job.feed(self.sock.recv(READ_SIZE))
                elif action == HANDSHAKE:
                    self.sock = wrap(self.sock)
                    job.tls_started()
                else:
                    return value
        except BaseException as exc:
            err = _failed(job, exc, self.host, self.sock.gettimeout(), self._close)
            if err is exc:
                raise
            raise err from exc

    def _wait_readable(self) -> None:
        """Until the socket has something to read, within its timeout (socket.timeout
        otherwise); ConnectionClosedError once another thread closed it."""
        sock = self.sock
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return  # decrypted bytes already wait in ssl's buffer
        timeout = sock.gettimeout()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            fd = sock.fileno()
            if fd < 0:
                raise ConnectionClosedError("the connection is closed; open a new one")
            wait = CLOSE_CHECK_SECONDS if deadline is None else min(CLOSE_CHECK_SECONDS, deadline - time.monotonic())
            if wait <= 0:
                raise socket.timeout("timed out")
            try:
                readable = _readable(fd, wait)
            except OSError:
                readable = False  # closed meanwhile: seen at the next turn
            if readable and sock.fileno() >= 0:
                return

    def _close(self) -> None:
        for step in (lambda: self.sock.shutdown(socket.SHUT_RDWR), self.sock.close):
            try:
                step()
            except OSError:
                pass  # closing anyway

    def fileno(self) -> int:
        """The socket's descriptor (``-1`` once closed)."""
        return self.sock.fileno()

    def tls_info(self) -> Optional[tuple]:
        sock = self.sock
        cipher = sock.cipher() if isinstance(sock, ssl.SSLSocket) else None
        if cipher is None or not isinstance(sock, ssl.SSLSocket):
            return None
        return sock.version(), cipher[0]


def _readable(fd: int, seconds: float) -> bool:
    """Whether ``fd`` becomes readable within ``seconds`` (poll() where there is one: select()
    refuses descriptors above FD_SETSIZE)."""
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(seconds * 1000))
    return bool(select.select([fd], [], [], seconds)[0])


class _Pipe(asyncio.Protocol):
    """The connection's only reader on the asyncio path: every byte the transport delivers
    lands in ``buffer`` until the session takes it, so what is buffered when TLS starts is
    known (a STARTTLS injection), and no stream object reads ahead beside the session."""

    def __init__(self) -> None:
        self.transport: Any = None
        self.buffer = bytearray()
        self.eof = False
        self.error: Optional[BaseException] = None
        self.lost = False
        self._reading = True
        self._writable = True
        self._waiter: Optional[asyncio.Future] = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) >= READ_SIZE and self._reading:
            self._reading = False  # bounded memory: the server waits until the session reads
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        self.eof = True
        self.lost = True
        self.error = exc
        self._writable = True
        self._wake()

    def pause_writing(self) -> None:
        self._writable = False

    def resume_writing(self) -> None:
        self._writable = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def _wait(self) -> None:
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    async def read(self) -> bytes:
        """What arrived since the last read (``b""``: the server closed the connection)."""
        while not self.buffer and not self.eof:
            await self._wait()
        data = bytes(self.buffer)
        self.buffer.clear()
        if not self._reading and not self.eof:
            self._reading = True
            self.transport.resume_reading()
        if not data and self.error is not None:
            raise self.error
        return data

    async def drain(self) -> None:
        while not self._writable and not self.eof:
            await self._wait()
        if self.error is not None:
            raise self.error

    async def drain_closed(self) -> None:
        """Until the transport is gone (after ``close()``: TLS close_notify, then FIN)."""
        while not self.lost:
            await self._wait()


class StreamDriver:
    """Moves a job's bytes over an asyncio transport (TLS by the loop, with the caller's
    context). ``timeout`` is read at each wait, so a change applies to the next one."""

    def __init__(self, pipe: _Pipe, host: str, timeout: Callable[[], Optional[float]]) -> None:
        self.pipe = pipe
        self.host = host
        self.timeout = timeout

    @classmethod
    async def connect(cls, name: str, timeout: Callable[[], Optional[float]], **kwargs: Any) -> "StreamDriver":
        """``loop.create_connection(**kwargs)`` to the server ``name``, bounded by the timeout."""
        pipe = _Pipe()
        loop = asyncio.get_running_loop()
        await asyncio.wait_for(loop.create_connection(lambda: pipe, **kwargs), timeout())
        return cls(pipe, name, timeout)

    async def run(self, job: Any, context: Optional[ssl.SSLContext]) -> Any:
        try:
            while True:
                action, value = job.step()
                if action == WRITE:
                    self.pipe.transport.write(value)
                    await asyncio.wait_for(self.pipe.drain(), self.timeout())
                elif action == READ:
                    job.feed(await asyncio.wait_for(self.pipe.read(), self.timeout()))
                elif action == HANDSHAKE:
                    await self._start_tls(context)
                    job.tls_started()
                else:
                    return value
        except BaseException as exc:
            err = _failed(job, exc, self.host, self.timeout(), self.pipe.transport.abort)
            if err is exc:
                raise
            raise err from exc

    async def _start_tls(self, context: Optional[ssl.SSLContext]) -> None:
        # Checked with no await before `start_tls` pauses the plaintext transport: nothing can
        # arrive in between. Whatever is buffered came after the STLS reply, in plaintext.
        if self.pipe.buffer:
            raise _injected(len(self.pipe.buffer))
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        timeout = self.timeout()
        expired: List[bool] = []
        timer = None
        if timeout is not None and task is not None:
            running = task

            def expire() -> None:
                expired.append(True)
                running.cancel()

            timer = loop.call_later(timeout, expire)
        try:
            # Awaited directly (not in wait_for's task) so the check above still holds.
            transport = await loop.start_tls(self.pipe.transport, self.pipe, context or ssl.create_default_context(), server_hostname=self.host)
        except asyncio.CancelledError:
            if expired:
                raise POP3TimeoutError(f"timed out after {timeout:.3f} s waiting for the server {self.host} to complete the TLS handshake") from None
            raise
        finally:
            if timer is not None:
                timer.cancel()
        if transport is None:
            raise POP3ConnectionError(f"the connection to {self.host} was closed during the TLS handshake")
        self.pipe.transport = transport

    def tls_info(self) -> Optional[tuple]:
        obj = self.pipe.transport.get_extra_info("ssl_object")
        if obj is not None and obj.cipher() is not None:
            return obj.version(), obj.cipher()[0]
        return None

    def fileno(self) -> int:
        """The socket's descriptor (``-1`` once closed)."""
        sock = self.pipe.transport.get_extra_info("socket")
        return -1 if sock is None else int(sock.fileno())

    def abort(self) -> None:
        self.pipe.transport.abort()

    async def close(self, abort: bool = False) -> None:
        if abort:
            self.abort()
            return
        self.pipe.transport.close()
        try:
            await asyncio.wait_for(self.pipe.drain_closed(), self.timeout() or 5)
        except (OSError, asyncio.TimeoutError, ssl.SSLError):
            pass  # closing anyway: a peer that does not answer close_notify changes nothing
