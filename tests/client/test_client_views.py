"""poplib's views over the session: ``timeout`` is the connection's live timeout, ``file``
reads lines (whole or in parts, io's ``readline(size)``) through the session and refuses the
rest with a sentence; and a cancelled operation closes the connection with the same sentence
on every asyncio driver."""

from __future__ import annotations

import asyncio
import io
import socket
import time
from typing import Any, Callable, Dict

import pytest

import fastpoplib
from support.clients import logged_in
from fastpoplib.testing import Fault

USER, PASSWORD = "user", "password"
DRIVERS = ("plain", "rustls", "context", "own socket")


@pytest.fixture
def servers(pop3_server_factory: Any) -> Dict[str, Any]:
    pytest.importorskip("trustme")
    return {"plain": pop3_server_factory(), "tls": pop3_server_factory(tls="implicit")}


def opened(driver: str, servers: Dict[str, Any], timeout: float = 5) -> Any:
    """A logged-in POP3 on `driver`, and the server it talks to."""
    plain, tls = servers["plain"], servers["tls"]
    if driver == "plain":
        p, srv = fastpoplib.POP3(plain.host, plain.port, timeout=timeout), plain
    elif driver == "rustls":
        p, srv = fastpoplib.POP3_SSL(tls.host, tls.port, timeout=timeout, cafile=tls.cafile), tls
    elif driver == "context":
        p, srv = fastpoplib.POP3_SSL(tls.host, tls.port, timeout=timeout, context=tls.client_context()), tls
    else:

        class OwnSocket(fastpoplib.POP3):
            def __init__(self) -> None:  # poplib's subclass pattern
                self.host, self.port = plain.host, plain.port
                self.sock = socket.create_connection((plain.host, plain.port), timeout)
                self.file = self.sock.makefile("rb")
                self._debugging = 0
                self.welcome = self._getresp()

        p, srv = OwnSocket(), plain
    p.user(USER)
    p.pass_(PASSWORD)
    return p, srv


# -- timeout --------------------------------------------------------------------------------


@pytest.mark.parametrize("driver", DRIVERS)
def test_timeout_is_the_live_connection_timeout(driver: str, servers: Dict[str, Any]) -> None:
    """poplib code sets ``sock.settimeout()`` and reads ``timeout``: both say the same, and
    an assignment bounds the next wait (the old attribute was only the constructor value)."""
    p, srv = opened(driver, servers)
    try:
        assert p.timeout == p.sock.gettimeout() == 5
        p.sock.settimeout(2.5)
        assert p.timeout == 2.5
        p.timeout = None
        assert p.sock.gettimeout() is None
        with pytest.raises(ValueError):
            p.timeout = 0
        p.timeout = 0.5
        assert p.sock.gettimeout() == 0.5
        srv.add_fault(Fault.stall(10, on="NOOP"))
        started = time.monotonic()
        with pytest.raises(fastpoplib.POP3TimeoutError):
            p.noop()
        assert time.monotonic() - started < 3
    finally:
        p.close()
    assert p.timeout == 0.5


def test_assigned_timeout_bounds_the_next_wait(kind: str, pop3_server: Any) -> None:
    p = logged_in(kind, pop3_server.host, pop3_server.port, timeout=30)
    client = p.client if kind == "async" else p
    client.timeout = 0.5
    assert client.timeout == 0.5
    pop3_server.add_fault(Fault.stall(10, on="STAT"))
    started = time.monotonic()
    with pytest.raises(fastpoplib.POP3TimeoutError):
        p.stat()
    assert time.monotonic() - started < 3
    p.close()


def test_timeout_before_connecting_is_the_one_given(pop3_server: Any) -> None:
    """A poplib subclass reads ``self.timeout`` in ``_create_socket`` before any socket."""
    seen = []

    class Proxy(fastpoplib.POP3):
        def _create_socket(self, timeout: Any) -> socket.socket:
            seen.append((timeout, self.timeout))
            return socket.create_connection((self.host, self.port), timeout)

    p = Proxy(pop3_server.host, pop3_server.port, timeout=4)
    assert seen == [(4, 4)] and p.timeout == 4
    p.close()


# -- file -------------------------------------------------------------------------------------


@pytest.mark.parametrize("driver", DRIVERS)
def test_readline_size_reads_a_line_in_parts(driver: str, servers: Dict[str, Any]) -> None:
    p, _ = opened(driver, servers)
    try:
        count, total = p.stat()
        p._putcmd("STAT")
        assert p.file.readline(3) == b"+OK"
        assert p.file.readline(0) == b""
        assert p.file.readline() == b" %d %d\r\n" % (count, total)
        # Parts of a multi-line reply add up to the reply as it arrived.
        listing = p.list()[1]
        p._putcmd("LIST")
        parts = []
        while not b"".join(parts).endswith(b"\r\n.\r\n"):
            parts.append(p.file.readline(5))
            assert 0 < len(parts[-1]) <= 5
        lines = b"".join(parts).split(b"\r\n")
        assert lines[0].startswith(b"+OK") and lines[1:-2] == listing and lines[-2:] == [b".", b""]
        # A command after a part drops the rest of that reply, the line included.
        want = p.retr(2)
        p._putcmd("RETR 1")
        assert p.file.readline(2) == b"+O"
        assert p.retr(2) == want
        p._putcmd("RETR 1")
        assert p._getresp().startswith(b"+OK")
        first = p.file.readline(1) + p.file.readline()
        assert first == p.retr(1)[1][0] + b"\r\n"
        assert p.noop().startswith(b"+OK")
    finally:
        p.close()


@pytest.mark.parametrize("driver", DRIVERS)
def test_iterating_over_file_reads_lines(driver: str, servers: Dict[str, Any]) -> None:
    p, _ = opened(driver, servers)
    try:
        uids = p.uidl()[1]
        p._putcmd("UIDL")
        lines = []
        for line in p.file:
            lines.append(line)
            if line == b".\r\n":
                break
        assert lines[0].startswith(b"+OK") and [line[:-2] for line in lines[1:-1]] == uids
        assert p.stat()[0] == len(uids)
    finally:
        p.close()


@pytest.mark.parametrize("name", ["read", "readlines", "readinto", "write", "seek", "tell", "fileno"])
def test_other_file_methods_raise_unsupported_operation(name: str, pop3_server: Any) -> None:
    p = fastpoplib.POP3(pop3_server.host, pop3_server.port, timeout=5)
    assert hasattr(p.file, name) and p.file.readable() and not p.file.writable() and not p.file.seekable()
    with pytest.raises(io.UnsupportedOperation, match=f"{name}\\(\\) is not supported; use readline"):
        getattr(p.file, name)()
    assert p.capa()
    p.close()


def test_readline_size_must_be_an_integer(pop3_server: Any) -> None:
    p = fastpoplib.POP3(pop3_server.host, pop3_server.port, timeout=5)
    with pytest.raises(TypeError):
        p.file.readline("3")
    p._putcmd("CAPA")
    assert p.file.readline(None).startswith(b"+OK")
    p.close()


# -- a cancelled operation, on every asyncio driver -------------------------------------------


def test_a_cancelled_then_used_connection_says_the_same_on_every_driver(servers: Dict[str, Any]) -> None:
    plain, tls = servers["plain"], servers["tls"]
    makers: Dict[str, Callable[[], Any]] = {
        "rustls": lambda: fastpoplib.AsyncPOP3.connect(plain.host, plain.port, 5),
        "context": lambda: fastpoplib.AsyncPOP3_SSL.connect(tls.host, tls.port, 5, context=tls.client_context()),
    }

    async def cancelled_then_used(make: Callable[[], Any], srv: Any) -> BaseException:
        p = await make()
        await p.user(USER)
        await p.pass_(PASSWORD)
        srv.add_fault(Fault.stall(10, on="NOOP"))
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(p.noop(), 0.3)
        with pytest.raises(fastpoplib.POP3Error) as info:
            await p.stat()
        await p.aclose()
        return info.value

    errors = {name: asyncio.run(cancelled_then_used(make, tls if name == "context" else plain)) for name, make in makers.items()}
    rustls, context = errors["rustls"], errors["context"]
    assert type(rustls) is type(context) and str(rustls) == str(context)
    assert "closed because an operation was cancelled; open a new connection" in str(context)
