"""Existing poplib code runs unchanged on fastpoplib.

Each scenario runs against the shipped test server on stdlib poplib (the reference, where it
applies), fastpoplib's blocking classes and its asyncio classes (through ``support.clients``);
TLS set up with an ``ssl.SSLContext`` or a self-signed certificate is in
``tests/tls/test_tls_context.py``:

1. poplib subclasses that bring their own socket, plain and TLS, a whole session;
2. after a fatal error: ``quit()``/``close()`` fallbacks and ``with`` blocks exit quietly;
3. APOP with a greeting timestamp without ``@``; the byte restriction stays;
4. a stalled read interrupted by ``close()``/``sock.shutdown()`` from a thread, ``aclose()``
   from a task;
5. ``set_debuglevel(2)`` output and the ``poplib.*`` audit events, secrets masked.

Synchronisation with a stalled server uses the fault's ``fired`` counter (set when the server
has received the command and starts stalling), never a fixed sleep.
"""
from __future__ import annotations

import asyncio
import hashlib
import poplib
import re
import socket
import ssl
import sys
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import pytest

import fastpoplib
from support import clients
from support.clients import KINDS
from fastpoplib.testing import Fault, POP3TestServer

pytest.importorskip("trustme", reason="the TLS test server needs trustme")

USER, PASSWORD = "user", "password"
TRANSPORTS = ("plain", "rustls", "context")  # no TLS, TLS by rustls, TLS by Python's ssl
# Every client on every transport it has (stdlib poplib has no rustls).
KIND_TRANSPORTS = [(k, t) for k in KINDS for t in TRANSPORTS if not (k == "stdlib" and t == "rustls")]
INTERRUPT_BOUND = 1.0  # seconds from the interrupting call to the stalled call's end

Factory = Callable[..., POP3TestServer]


# -- helpers -----------------------------------------------------------------------------------


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Polls a condition set by another thread (the server's), failing after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail("condition not reached in time")
        time.sleep(0.002)


async def async_wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail("condition not reached in time")
        await asyncio.sleep(0.002)


def server_for(factory: Factory, transport: str, **kw: Any) -> POP3TestServer:
    return factory(tls="none" if transport == "plain" else "implicit", **kw)


def open_client(kind: str, transport: str, srv: POP3TestServer, timeout: float = 10) -> Any:
    """A client of ``kind`` (through ``clients``) over ``transport``."""
    if transport == "plain":
        return clients.connect(kind, srv.host, srv.port, timeout=timeout)
    if transport == "rustls":
        assert kind != "stdlib"
        return clients.connect(kind, srv.host, srv.port, tls=True, timeout=timeout, cafile=srv.cafile)
    return clients.connect(kind, srv.host, srv.port, tls=True, timeout=timeout, context=srv.client_context())


def open_sync(transport: str, srv: POP3TestServer, timeout: float = 10) -> fastpoplib.POP3:
    if transport == "plain":
        return fastpoplib.POP3(srv.host, srv.port, timeout=timeout)
    if transport == "rustls":
        return fastpoplib.POP3_SSL(srv.host, srv.port, timeout=timeout, cafile=srv.cafile)
    return fastpoplib.POP3_SSL(srv.host, srv.port, timeout=timeout, context=srv.client_context())


def open_async(transport: str, srv: POP3TestServer, timeout: Optional[float] = 10) -> Any:
    """``AsyncPOP3[_SSL].connect(...)``: awaitable, or an async context manager."""
    if transport == "plain":
        return fastpoplib.AsyncPOP3.connect(srv.host, srv.port, timeout)
    if transport == "rustls":
        return fastpoplib.AsyncPOP3_SSL.connect(srv.host, srv.port, timeout, cafile=srv.cafile)
    return fastpoplib.AsyncPOP3_SSL.connect(srv.host, srv.port, timeout, context=srv.client_context())


def assert_server_saw_close(srv: POP3TestServer, transport: str, stalled: bool) -> None:
    """The client closed the connection, as the server sees it. During a stall the test
    server notices a FIN by peeking at the raw TCP stream; a TLS close_notify that comes
    before the FIN hides it (the peek sees the record's first byte), so the server sees a
    TLS client's close only when the stall ends: then only the client side is checked."""
    if transport == "plain" or not stalled:
        assert srv.sessions[-1].wait_closed(3)


# == 1. poplib subclasses that bring their own socket ===========================================


def retriever_class(lib: Any, tls: bool) -> Any:
    """The real-world retriever pattern, written once for poplib and fastpoplib: skip the
    base ``__init__``, connect and wrap the socket yourself, then read the greeting."""
    base = lib.POP3_SSL if tls else lib.POP3

    class Retriever(base):  # type: ignore[misc, valid-type]
        def __init__(self, host: str, port: int, context: Optional[ssl.SSLContext] = None) -> None:
            self.host = host
            self.port = port
            sock = socket.create_connection((host, port), 10)  # e.g. from a proxy library
            if context is not None:
                sock = context.wrap_socket(sock, server_hostname=host)
            self.sock = sock
            self.file = self.sock.makefile("rb")
            self._debugging = 0
            self.welcome = self._getresp()

    return Retriever


def retriever_session(lib: Any, tls: bool, srv: POP3TestServer) -> List[Any]:
    cls = retriever_class(lib, tls)

    def context() -> Optional[ssl.SSLContext]:
        if not tls:
            return None
        ctx = ssl.create_default_context(cafile=srv.cafile)
        ctx.set_ciphers("ECDHE+AESGCM:ECDHE+CHACHA20")
        return ctx

    p = cls(srv.host, srv.port, context())
    sock = p.sock
    out: List[Any] = [p.welcome[:4], type(sock).__name__]
    out += [p.user(USER), p.pass_(PASSWORD), p.stat(), p.list(), p.uidl(), p.retr(1), p.list(2), p.uidl(2)]
    out += [p.dele(1), clients.outcome(p.retr, 1), p._shortcmd("NOOP"), p.stat()]
    if lib is fastpoplib and tls:
        assert p.tls_info == (sock.version(), sock.cipher()[0])
    out += [p.sock is sock, p.quit(), sock.fileno()]  # quit() closed the subclass's own socket
    q = cls(srv.host, srv.port, context())
    out += [q.apop(USER, PASSWORD), q.stat(), q.uidl(1), q.quit()]
    return out


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_subclass_bringing_its_own_socket_runs_a_whole_session(tls: bool, pop3_server_factory: Factory) -> None:
    results = {lib.__name__: retriever_session(lib, tls, server_for(pop3_server_factory, "context" if tls else "plain")) for lib in (poplib, fastpoplib)}
    assert results["fastpoplib"] == results["poplib"]
    assert results["poplib"][1] == ("SSLSocket" if tls else "socket")
    assert results["poplib"][-1] == b"+OK fastpoplib test server signing off (11 messages left)"


def own_socket_session(lib: Any, srv: Any) -> List[Any]:
    """poplib's other subclass pattern: ``_create_socket`` overridden (a proxy, say)."""
    made: List[str] = []

    class ViaHook(lib.POP3):  # type: ignore[name-defined,misc]
        def _create_socket(self, timeout: Any) -> socket.socket:
            made.append(self.host)
            return socket.create_connection((self.host, self.port), timeout)

    p = ViaHook(srv.host, srv.port, timeout=5)
    out: List[Any] = [made, type(p.sock).__name__, p.user(USER), p.pass_(PASSWORD), p.stat(), p.retr(2)]
    return out + [p.quit()]


def test_subclass_overriding_create_socket_is_used(pop3_server_factory: Factory) -> None:
    srv = server_for(pop3_server_factory, "plain")
    results = {lib.__name__: own_socket_session(lib, srv) for lib in (poplib, fastpoplib)}
    assert results["fastpoplib"] == results["poplib"]
    assert results["poplib"][0] == [srv.host]


# == 2. after a fatal error =====================================================================

FATAL_FAULTS = {
    "line too long": (lambda: Fault.reply(b"+OK " + b"x" * 3000 + b"\r\n", on="NOOP"), "noop", 5.0),
    # The client timeout bounds every wait, connect and login included: not too tight on a busy machine.
    "timeout": (lambda: Fault.stall(10, on="RETR"), "retr", 1.0),
}


def provoke(p: Any, fatal: str) -> None:
    _, command, _ = FATAL_FAULTS[fatal]
    if command == "noop":
        p.noop()
    else:
        p.retr(1)


# poplib's own quit() after a timeout waits for the stalled reply again (TimeoutError, not
# error_proto): the idiom is only poplib's after a line too long.
QUIT_BOUND = 0.5  # quit() on a connection an error already closed: no waiting on the server


def fatal_cases() -> Iterator[Any]:
    for kind, transport in KIND_TRANSPORTS:
        for fatal in FATAL_FAULTS:
            if kind == "stdlib" and fatal == "timeout":
                continue
            yield pytest.param(kind, transport, fatal)


@pytest.mark.parametrize("kind,transport,fatal", list(fatal_cases()))
def test_quit_after_a_fatal_error_falls_back_to_close(kind: str, transport: str, fatal: str, pop3_server_factory: Factory) -> None:
    make_fault, _, timeout = FATAL_FAULTS[fatal]
    srv = server_for(pop3_server_factory, transport, faults=[make_fault()])
    p = open_client(kind, transport, srv, timeout=timeout)
    p.user(USER)
    p.pass_(PASSWORD)
    first = {"stdlib": poplib.error_proto, "line too long": fastpoplib.RemoteProtocolError, "timeout": fastpoplib.POP3TimeoutError}
    with pytest.raises(first["stdlib" if kind == "stdlib" else fatal]):
        provoke(p, fatal)
    started = time.monotonic()
    caught: Optional[BaseException] = None
    try:  # the poplib idiom
        p.quit()
    except poplib.error_proto as exc:
        caught = exc
        p.close()
    assert caught is not None, "quit() after a fatal error should raise error_proto"
    assert time.monotonic() - started < QUIT_BOUND
    if kind != "stdlib":
        assert isinstance(caught, fastpoplib.ConnectionClosedError), repr(caught)
        p.close()  # twice is harmless
    assert_server_saw_close(srv, transport, stalled=fatal == "timeout")


@pytest.mark.parametrize("fatal", list(FATAL_FAULTS))
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_with_block_that_caught_the_error_exits_quietly(transport: str, fatal: str, pop3_server_factory: Factory) -> None:
    make_fault, _, timeout = FATAL_FAULTS[fatal]
    srv = server_for(pop3_server_factory, transport, faults=[make_fault()])
    error = {"line too long": fastpoplib.RemoteProtocolError, "timeout": fastpoplib.POP3TimeoutError}[fatal]
    handled = False
    with open_sync(transport, srv, timeout) as pop:
        pop.user(USER)
        pop.pass_(PASSWORD)
        try:
            provoke(pop, fatal)
        except error:
            handled = True
    assert handled
    assert pop.sock is None and pop.tls_info is None
    assert_server_saw_close(srv, transport, stalled=fatal == "timeout")


@pytest.mark.parametrize("fatal", list(FATAL_FAULTS))
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_async_with_block_that_caught_the_error_exits_quietly(transport: str, fatal: str, pop3_server_factory: Factory) -> None:
    make_fault, _, timeout = FATAL_FAULTS[fatal]
    error = {"line too long": fastpoplib.RemoteProtocolError, "timeout": fastpoplib.POP3TimeoutError}[fatal]
    srv = server_for(pop3_server_factory, transport, faults=[make_fault()])

    async def main() -> bool:
        handled = False
        async with open_async(transport, srv, timeout) as pop:
            await pop.user(USER)
            await pop.pass_(PASSWORD)
            try:
                if fatal == "timeout":
                    await pop.retr(1)
                else:
                    await pop.noop()
            except error:
                handled = True
        assert pop.tls_info is None
        return handled

    assert asyncio.run(asyncio.wait_for(main(), 5))
    assert_server_saw_close(srv, transport, stalled=fatal == "timeout")


WAIT_FOR_ROUNDS = 40

@pytest.mark.parametrize("transport", ["plain", "rustls", "context"])
def test_async_with_block_that_caught_a_wait_for_timeout_exits_quietly(transport: str, pop3_server_factory: Factory) -> None:
    """``async with`` + ``asyncio.wait_for`` around a stalled call, caught in the block. The
    outcome depends on a race inside the library, so the scenario runs many times."""
    srv = server_for(pop3_server_factory, transport, faults=[Fault.stall(10, on="RETR", times=None)], allow_concurrent=True)

    async def once() -> Optional[str]:
        try:
            async with open_async(transport, srv, 10) as pop:
                await pop.user(USER)
                await pop.pass_(PASSWORD)
                try:
                    await asyncio.wait_for(pop.retr(1), 0.02)
                except asyncio.TimeoutError:
                    pass
            return None if pop.tls_info is None else "still open"
        except Exception as exc:
            return repr(exc)

    async def main() -> List[Optional[str]]:
        return [await once() for _ in range(WAIT_FOR_ROUNDS)]

    assert asyncio.run(asyncio.wait_for(main(), 10)) == [None] * WAIT_FOR_ROUNDS


# == 3. APOP timestamps without '@' =============================================================


@pytest.mark.parametrize("stamp", [b"<1896.697170952dbc>", b"<timestamp>"])
@pytest.mark.parametrize("kind,transport", [(k, t) for k, t in KIND_TRANSPORTS if t != "rustls"])
def test_apop_with_a_timestamp_without_at(kind: str, transport: str, stamp: bytes, pop3_server_factory: Factory) -> None:
    srv = server_for(pop3_server_factory, transport, greeting=b"+OK POP3 server ready " + stamp)
    p = open_client(kind, transport, srv)
    try:
        result = [p.getwelcome(), p.apop(USER, PASSWORD), p.stat()]
    finally:
        p.quit()
    assert result == [
        b"+OK POP3 server ready " + stamp,
        b"+OK logged in, maildrop has 12 messages (10475 octets)",
        (12, 10475),
    ]
    digest = hashlib.md5(stamp + PASSWORD.encode()).hexdigest()
    assert srv.sessions[-1].commands[0] == f"APOP {USER} {digest}".encode()


@pytest.mark.parametrize(
    "stamp",
    [b"<" + b"1" * 511 + b">", b"<12 34@host>", b"<a\x01b@host>", b"<a<b@host>", b"<a\xe9b@host>"],
    ids=["513 bytes", "space", "control", "angle bracket", "non-ascii"],
)
def test_apop_timestamp_byte_restriction_stays(kind: str, stamp: bytes, pop3_server_factory: Factory) -> None:
    srv = pop3_server_factory(greeting=b"+OK ready " + stamp)
    p = clients.connect(kind, srv.host, srv.port)
    try:
        with pytest.raises(poplib.error_proto, match="APOP timestamp refused"):
            p.apop(USER, PASSWORD)
        assert p.user(USER) == b"+OK send PASS"  # refused before sending anything: the session goes on
    finally:
        p.quit()
    assert srv.sessions[-1].commands == [b"USER user", b"QUIT"]


def test_apop_timestamp_of_512_bytes_is_accepted(pop3_server_factory: Factory) -> None:
    stamp = b"<" + b"1" * 510 + b">"
    srv = pop3_server_factory(greeting=b"+OK ready " + stamp)
    p = fastpoplib.POP3(srv.host, srv.port)
    assert p.apop(USER, PASSWORD).startswith(b"+OK logged in")
    p.quit()


# == 4. a stalled read interrupted from elsewhere ===============================================


def stalled_retr(p: Any, fault: Fault) -> Tuple[threading.Thread, Dict[str, Any]]:
    """``p.retr(1)`` in a thread, returned once the server holds the RETR (stalling)."""
    outcome: Dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["value"] = p.retr(1)
        except BaseException as exc:  # noqa: B036 - recorded for the assertions
            outcome["error"] = exc
        outcome["ended"] = time.monotonic()

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    wait_until(lambda: fault.fired == 1)
    return worker, outcome


def interrupt_and_measure(p: Any, fault: Fault, interrupt: Callable[[], None]) -> Tuple[float, BaseException]:
    worker, outcome = stalled_retr(p, fault)
    started = time.monotonic()
    interrupt()
    worker.join(INTERRUPT_BOUND + 1)
    assert not worker.is_alive(), "the stalled retr() was not interrupted"
    assert "value" not in outcome, "retr() returned although its connection was closed"
    return outcome["ended"] - started, outcome["error"]


@pytest.mark.parametrize("transport", ["plain", "rustls", "context"])
def test_close_from_another_thread_interrupts_a_stalled_retr(transport: str, pop3_server_factory: Factory) -> None:
    fault = Fault.stall(10, on="RETR")
    srv = server_for(pop3_server_factory, transport, faults=[fault])
    p = open_sync(transport, srv)
    p.user(USER)
    p.pass_(PASSWORD)
    took, error = interrupt_and_measure(p, fault, p.close)
    assert took < INTERRUPT_BOUND
    assert isinstance(error, fastpoplib.ConnectionClosedError), repr(error)
    assert_server_saw_close(srv, transport, stalled=True)


@pytest.mark.parametrize("kind,transport", [(k, t) for k, t in KIND_TRANSPORTS if k != "async"])
def test_sock_shutdown_interrupts_a_stalled_retr(kind: str, transport: str, pop3_server_factory: Factory) -> None:
    fault = Fault.stall(10, on="RETR")
    srv = server_for(pop3_server_factory, transport, faults=[fault])
    p = open_client(kind, transport, srv)
    p.user(USER)
    p.pass_(PASSWORD)
    took, error = interrupt_and_measure(p, fault, lambda: p.sock.shutdown(socket.SHUT_RDWR))
    assert took < INTERRUPT_BOUND
    # poplib raises error_proto('-ERR EOF'); fastpoplib an error_proto too.
    assert isinstance(error, poplib.error_proto), repr(error)
    if kind != "stdlib":
        assert isinstance(error, fastpoplib.ConnectionClosedError), repr(error)
        with pytest.raises(fastpoplib.ConnectionClosedError):
            p.noop()
    p.close()
    assert_server_saw_close(srv, transport, stalled=True)


@pytest.mark.parametrize(
    "transport",
    ["plain", "rustls", "context"],
)
def test_aclose_from_another_task_interrupts_a_stalled_retr(transport: str, pop3_server_factory: Factory) -> None:
    fault = Fault.stall(10, on="RETR")
    srv = server_for(pop3_server_factory, transport, faults=[fault])

    async def main() -> Tuple[float, BaseException]:
        pop = await open_async(transport, srv, 10)
        await pop.user(USER)
        await pop.pass_(PASSWORD)
        call = asyncio.ensure_future(pop.retr(1))
        await async_wait_until(lambda: fault.fired == 1)
        started = time.monotonic()
        await asyncio.wait_for(pop.aclose(), 2)
        try:
            await asyncio.wait_for(call, 2)
        except fastpoplib.POP3Error as exc:
            return time.monotonic() - started, exc
        pytest.fail("retr() returned although its connection was closed")

    took, error = asyncio.run(main())
    assert took < INTERRUPT_BOUND
    assert isinstance(error, fastpoplib.ConnectionClosedError), repr(error)


# == 5. debug output and audit events ===========================================================


def debug_session(kind: str, transport: str, srv: POP3TestServer) -> None:
    """A session of status-line commands with ``set_debuglevel(2)``."""
    p = open_client(kind, transport, srv)
    p.set_debuglevel(2)
    p.user(USER)
    p.pass_(PASSWORD)
    p.stat()
    p.list(1)
    p.quit()


@pytest.mark.parametrize("kind,transport", [(k, t) for k, t in KIND_TRANSPORTS if k != "stdlib"])
def test_debuglevel_2_prints_get_and_stat_lines_without_the_password(kind: str, transport: str, pop3_server_factory: Factory, capsys: Any) -> None:
    srv = server_for(pop3_server_factory, transport)
    debug_session(kind, transport, srv)
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert PASSWORD not in captured.out + captured.err
    assert "*cmd* 'PASS ****'" in lines and "*put* b'PASS ****'" in lines
    assert "*resp* b'+OK 12 10475'" in lines
    assert [line.startswith("*get* b'+OK 12 10475") for line in lines].count(True) == 1
    assert [line.startswith("*stat* ") for line in lines].count(True) == 1
    assert lines.index("*resp* b'+OK 12 10475'") < [line.startswith("*stat* ") for line in lines].index(True)


def test_debuglevel_2_output_is_poplibs_with_the_password_masked(kind: str, pop3_server: POP3TestServer, capsys: Any) -> None:
    def transcript(k: str) -> str:
        p = clients.connect(k, pop3_server.host, pop3_server.port)
        p.set_debuglevel(2)
        p.getwelcome()
        p.user(USER)
        p.pass_(PASSWORD)
        p.stat()
        p.list(1)
        p.quit()
        return capsys.readouterr().out

    expected = transcript("stdlib").replace(f"PASS {PASSWORD}", "PASS ****")
    assert transcript(kind) == expected


_AUDIT: List[Tuple[str, Tuple[Any, ...]]] = []
_AUDITING = threading.Event()


def _audit_hook(event: str, args: Tuple[Any, ...]) -> None:
    if _AUDITING.is_set() and event.startswith("poplib."):
        _AUDIT.append((event, args))


sys.addaudithook(_audit_hook)  # hooks cannot be removed: one per module, recording on demand


@pytest.fixture
def audit() -> Iterator[List[Tuple[str, Tuple[Any, ...]]]]:
    _AUDIT.clear()
    _AUDITING.set()
    try:
        yield _AUDIT
    finally:
        _AUDITING.clear()
        _AUDIT.clear()


def audited_session(kind: str, transport: str, srv: POP3TestServer, audit: List[Tuple[str, Tuple[Any, ...]]]) -> List[Tuple[Any, ...]]:
    """The audit events of one session, with the client object replaced by ``"self"``."""
    audit.clear()
    p = open_client(kind, transport, srv)
    client = p.client if kind == "async" else p
    p.user(USER)
    p.pass_(PASSWORD)
    p.stat()
    p.list(1)
    p.quit()
    events = list(audit)
    assert all(args[0] is client for _, args in events), events
    return [(name, "self", *args[1:]) for name, args in events]


@pytest.mark.parametrize("kind,transport", [(k, t) for k, t in KIND_TRANSPORTS if k != "stdlib"])
def test_audit_events_are_poplibs_with_the_password_masked(kind: str, transport: str, pop3_server_factory: Factory, audit: Any) -> None:
    srv = server_for(pop3_server_factory, transport)
    expected = audited_session("stdlib", "context" if transport == "rustls" else transport, srv, audit)
    assert expected[2] == ("poplib.putline", "self", f"PASS {PASSWORD}".encode())
    expected[2] = ("poplib.putline", "self", b"PASS ****")
    assert audited_session(kind, transport, srv, audit) == expected
    assert expected[0] == ("poplib.connect", "self", srv.host, srv.port)


def test_audit_putline_masks_the_apop_digest(kind: str, pop3_server: POP3TestServer, audit: Any) -> None:
    p = clients.connect(kind, pop3_server.host, pop3_server.port)
    stamp = re.search(rb"<[^<>]*>", p.getwelcome()).group()  # type: ignore[union-attr]
    digest = hashlib.md5(stamp + PASSWORD.encode()).hexdigest().encode()
    p.apop(USER, PASSWORD)
    p.quit()
    lines = [args[1] for name, args in audit if name == "poplib.putline"]
    assert len(lines) == 2 and lines[0].startswith(b"APOP user ") and lines[1] == b"QUIT", lines
    assert digest not in lines[0]
    assert pop3_server.sessions[-1].commands[0] == b"APOP user " + digest  # the real one was sent
