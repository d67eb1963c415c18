"""Python's own sockets as the session's driver: used when the caller passes an
``ssl.SSLContext`` (TLS is then done by Python's ``ssl`` with exactly that context, as poplib
does) and when a subclass brings its own socket. Framing and every piece of session state
stay in the Rust session; only the bytes pass through here, in large reads.

Each session operation is a ``Job``: ``step()`` says what to do (write these bytes, read,
do the TLS handshake) until it gives the result. The blocking and asyncio pumps below are
the only two loops over it."""

from __future__ import annotations

import asyncio
import socket
import ssl
from typing import Any, Callable, Optional

from .exceptions import (
    CertificateVerificationError,
    LocalProtocolError,
    POP3ConnectionError,
    POP3Error,
    POP3TimeoutError,
    ServerError,
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


def translate(exc: BaseException, host: str) -> BaseException:
    """The library's exception for an I/O failure of Python's socket or ssl modules."""
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
        return POP3TimeoutError(f"timed out waiting for the server {host}")
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


def _failed(job: Any, exc: BaseException, host: str, close: Callable[[], None]) -> BaseException:
    """After a failure: a `-ERR` or a refused request leaves the session usable; anything else
    (I/O, a broken reply, Ctrl-C) may have left a reply half-read, so the session and the
    socket are closed, and the reply is never taken for another's."""
    job.fail(type(exc).__name__)
    if not isinstance(exc, (ServerError, LocalProtocolError)):
        close()
    return translate(exc, host)


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
                    job.feed(self.sock.recv(READ_SIZE))
                elif action == HANDSHAKE:
                    self.sock = wrap(self.sock)
                    job.tls_started()
                else:
                    return value
        except BaseException as exc:
            err = _failed(job, exc, self.host, self._close)
            if err is exc:
                raise
            raise err from exc

    def _close(self) -> None:
        for step in (lambda: self.sock.shutdown(socket.SHUT_RDWR), self.sock.close):
            try:
                step()
            except OSError:
                pass  # closing anyway

    def tls_info(self) -> Optional[tuple]:
        sock = self.sock
        cipher = sock.cipher() if isinstance(sock, ssl.SSLSocket) else None
        if cipher is None or not isinstance(sock, ssl.SSLSocket):
            return None
        return sock.version(), cipher[0]


class StreamDriver:
    """Moves a job's bytes over an asyncio stream (TLS by the loop, with the caller's context)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, timeout: Optional[float]) -> None:
        self.reader = reader
        self.writer = writer
        self.host = host
        self.timeout = timeout

    async def run(self, job: Any, context: Optional[ssl.SSLContext]) -> Any:
        try:
            while True:
                action, value = job.step()
                if action == WRITE:
                    self.writer.write(value)
                    await asyncio.wait_for(self.writer.drain(), self.timeout)
                elif action == READ:
                    job.feed(await asyncio.wait_for(self.reader.read(READ_SIZE), self.timeout))
                elif action == HANDSHAKE:
                    await self._start_tls(context)
                    job.tls_started()
                else:
                    return value
        except BaseException as exc:
            err = _failed(job, exc, self.host, self.writer.transport.abort)
            if err is exc:
                raise
            raise err from exc

    async def _start_tls(self, context: Optional[ssl.SSLContext]) -> None:
        start_tls = getattr(self.writer, "start_tls", None)
        if start_tls is None:  # Python < 3.11
            raise TLSError("stls(context=...) on AsyncPOP3 needs Python 3.11 or later; use AsyncPOP3_SSL or stls() without a context")
        await asyncio.wait_for(start_tls(context, server_hostname=self.host), self.timeout)

    def tls_info(self) -> Optional[tuple]:
        obj = self.writer.get_extra_info("ssl_object")
        if obj is not None and obj.cipher() is not None:
            return obj.version(), obj.cipher()[0]
        return None

    async def close(self, abort: bool = False) -> None:
        if abort:
            self.writer.transport.abort()
            return
        self.writer.close()
        try:
            await asyncio.wait_for(self.writer.wait_closed(), self.timeout or 5)
        except (OSError, asyncio.TimeoutError, ssl.SSLError):
            pass  # closing anyway: a peer that does not answer close_notify changes nothing
