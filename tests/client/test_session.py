"""The session core, each behaviour on the blocking (``POP3``) and the asyncio (``AsyncPOP3``)
classes, against the shipped test server: commands inside a batch loop, batches and streams
left early or held, messages() when LIST fails, accessors while a call waits, a second call
refused, Ctrl-C and timeouts, invalid arguments, asyncio after fork, memory per wire byte.

No ``sleep`` synchronises anything: tests wait on events, on worker threads with a bounded join,
or on the server's own record of what it received (polled until a deadline). Every wait is
bounded, so a regression fails instead of hanging.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import poplib
import select
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Iterator, List, Optional, Tuple

import pytest

import fastpoplib
from support.clients import FAST_KINDS, connect, iterate, logged_in
from support.processes import wait_child
from fastpoplib.testing import Fault, Mailbox, Message, POP3TestServer, sample_mailbox

USER, PASSWORD = "user", "password"
SIGNAL_AFTER = 0.3  # seconds from the start of a call to the SIGINT
CTRL_C_BOUND = 0.5  # KeyboardInterrupt must come out within this of the signal
ACCESSOR_BOUND = 0.5  # an accessor must answer within this while a call waits
_POLL = threading.Event()  # never set: `_POLL.wait(t)` is the interval of a bounded poll


# -- helpers ------------------------------------------------------------------------------------


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    """Polls ``condition`` until it holds; fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        _POLL.wait(0.005)


def received(srv: POP3TestServer, line: bytes, timeout: float = 5.0) -> None:
    """Waits until the server's latest session has received the command ``line``."""
    wait_for(lambda: bool(srv.sessions) and line in srv.sessions[-1].commands, f"the server to receive {line!r}", timeout)


def retr_reply(message: Message) -> Tuple[bytes, List[bytes], int]:
    """What ``retr()`` must return for ``message`` of the test server (poplib's shape)."""
    return (b"+OK %d octets" % message.size, message.lines, message.size)


def total_size(messages: List[Message]) -> int:
    return sum(m.size for m in messages)


class Worker(threading.Thread):
    """Runs ``fn(*args)`` in a daemon thread, keeping its result or exception and when it ended."""

    def __init__(self, fn: Callable[..., Any], *args: Any) -> None:
        super().__init__(daemon=True)
        self.fn, self.args = fn, args
        self.result: Any = None
        self.error: Optional[BaseException] = None
        self.ended: Optional[float] = None

    def run(self) -> None:
        try:
            self.result = self.fn(*self.args)
        except BaseException as exc:  # kept for the test to inspect
            self.error = exc
        finally:
            self.ended = time.monotonic()

    def finish(self, timeout: float) -> None:
        self.join(timeout)
        assert not self.is_alive(), f"{self.fn!r} still running after {timeout} s"

    def outcome(self, timeout: float) -> Any:
        """The result; re-raises the exception; fails if not finished within ``timeout``."""
        self.finish(timeout)
        if self.error is not None:
            raise self.error
        return self.result


def sync_login(srv: POP3TestServer, **kw: Any) -> fastpoplib.POP3:
    p = fastpoplib.POP3(srv.host, srv.port, timeout=10, **kw)
    p.user(USER)
    p.pass_(PASSWORD)
    return p


async def async_login(srv: POP3TestServer, **kw: Any) -> fastpoplib.AsyncPOP3:
    p = await fastpoplib.AsyncPOP3.connect(srv.host, srv.port, 10, **kw)
    await p.user(USER)
    await p.pass_(PASSWORD)
    return p


def run_async(coro: Any, timeout: float = 20.0) -> Any:
    """``asyncio.run`` with an overall bound."""

    async def bounded() -> Any:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


def _ignore_signal(signum: int, frame: Any) -> None:
    pass


def ctrl_c_delay(call: Callable[[], Any], after: float = SIGNAL_AFTER, *, process: bool = False) -> float:
    """Runs ``call()`` in the main thread with SIGINT ``after`` seconds later (Python's default
    handler, as a user's Ctrl-C). Returns how long after the signal KeyboardInterrupt came out
    of ``call``; fails if ``call`` ended any other way.

    By default the signal goes to another thread (the timer's): the main thread's system call
    is then not interrupted (no EINTR), as when Ctrl-C lands while it is not blocked, so only
    a driver that runs signal handlers between its waits sees it. ``process=True`` sends it to
    the process (asyncio only notices a signal the main thread receives)."""
    assert threading.current_thread() is threading.main_thread()
    sent: List[float] = []

    def kill() -> None:
        sent.append(time.monotonic())
        if process:
            os.kill(os.getpid(), signal.SIGINT)
        else:
            signal.pthread_kill(threading.get_ident(), signal.SIGINT)

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(after, kill)
    outcome: Any = None
    try:
        try:
            timer.start()
            try:
                call()
                outcome = "a normal return"
            except KeyboardInterrupt:
                outcome = time.monotonic()
            except BaseException as exc:  # reported below
                outcome = exc
        finally:
            # A signal arriving from now on must not end the whole pytest run.
            signal.signal(signal.SIGINT, _ignore_signal)
            timer.cancel()
            timer.join()
            signal.signal(signal.SIGINT, previous)
    except KeyboardInterrupt:
        outcome = f"{outcome!r}, and KeyboardInterrupt only after the call"
    assert isinstance(outcome, float), f"expected KeyboardInterrupt, got {outcome}"
    assert sent, "the signal was never sent"
    return outcome - sent[0]


# -- a command inside a batch loop -------------------------------------------------------------


def _check_fetch_store_delete(srv: POP3TestServer, box: List[Message], got: Any, deleted: Any, stat: Any, bye: bytes) -> None:
    assert got == [(n, retr_reply(box[n - 1])) for n in (1, 2, 3)]
    assert deleted == [b"+OK message %d deleted" % n for n in (1, 2, 3)]
    assert stat == (9, total_size(box[3:]))
    assert bye == b"+OK fastpoplib test server signing off (9 messages left)"
    assert srv.mailbox.uids == [m.uid for m in box[3:]]
    commands = srv.sessions[-1].commands
    # The hard case was exercised: RETR 2 and 3 were in flight when DELE 1 was sent.
    assert commands.index(b"RETR 3") < commands.index(b"DELE 1"), commands


def test_dele_inside_retr_many_loop(kind: str, pop3_server: POP3TestServer) -> None:
    box = pop3_server.mailbox.snapshot()
    p = logged_in(kind, pop3_server.host, pop3_server.port)
    got, deleted = [], []
    for n, r in iterate(kind, p, p.retr_many([1, 2, 3])):
        got.append((n, r))
        deleted.append(p.dele(n))
    stat = p.stat()
    _check_fetch_store_delete(pop3_server, box, got, deleted, stat, p.quit())


# -- a batch left or held, another command in between ------------------------------------------


def test_break_out_of_retr_many_then_retr(kind: str, pop3_server: POP3TestServer) -> None:
    box = pop3_server.mailbox.snapshot()
    p = logged_in(kind, pop3_server.host, pop3_server.port)
    for item in iterate(kind, p, p.retr_many([1, 2, 3, 4, 5])):
        assert item == (1, retr_reply(box[0]))
        break
    assert p.retr(5) == retr_reply(box[4])
    assert p.stat() == (12, total_size(box))
    p.quit()
    # The batch's own RETR 5 was in flight (pipelined) when retr(5) sent another.
    assert pop3_server.sessions[-1].commands.count(b"RETR 5") == 2


def test_held_batch_iterator_with_retr_in_between(kind: str, pop3_server: POP3TestServer) -> None:
    box = pop3_server.mailbox.snapshot()
    p = logged_in(kind, pop3_server.host, pop3_server.port)
    it = iterate(kind, p, p.retr_many([1, 2, 3, 4, 5]))
    assert next(it) == (1, retr_reply(box[0]))
    assert p.retr(5) == retr_reply(box[4])
    assert list(it) == [(n, retr_reply(box[n - 1])) for n in (2, 3, 4, 5)]
    assert p.noop() == b"+OK"
    p.quit()


def test_second_thread_between_batch_items(pop3_server: POP3TestServer) -> None:
    box = pop3_server.mailbox.snapshot()
    p = sync_login(pop3_server)
    it = p.retr_many([1, 2, 3, 4, 5])
    first = next(it)
    other = Worker(p.retr, 5)
    other.start()
    assert other.outcome(10) == retr_reply(box[4])
    assert [first, *it] == [(n, retr_reply(box[n - 1])) for n in (1, 2, 3, 4, 5)]
    p.quit()


def test_second_task_between_batch_items(pop3_server: POP3TestServer) -> None:
    box = pop3_server.mailbox.snapshot()

    async def main() -> Any:
        p = await async_login(pop3_server)
        between, resumed = asyncio.Event(), asyncio.Event()

        async def iterate_all() -> List[Any]:
            got = []
            async for item in p.retr_many([1, 2, 3, 4, 5]):
                got.append(item)
                if len(got) == 1:
                    between.set()
                    await resumed.wait()
            return got

        async def other() -> Any:
            await between.wait()
            try:
                return await p.retr(5)
            finally:
                resumed.set()

        got, five = await asyncio.gather(iterate_all(), other())
        await p.quit()
        return got, five

    got, five = run_async(main())
    assert five == retr_reply(box[4])
    assert got == [(n, retr_reply(box[n - 1])) for n in (1, 2, 3, 4, 5)]


# -- a stream left early; body bytes are never a reply -----------------------------------------

# Message 1: its body holds a line that looks like a RETR status, then forged headers.
FORGED = (
    b"From: sender@example.org\r\n"
    b"Subject: innocent looking\r\n"
    b"\r\n"
    b"This first body line is long enough to end the first chunk of sixty bytes.\r\n"
    b"+OK 99 octets\r\n"
    b"From: attacker@example.net\r\n"
    b"Subject: forged message 5\r\n"
    b"\r\n"
    b"Send your password to attacker@example.net\r\n"
    b".\r\n"
    b"..leading dot\r\n" + b"".join(b"filler line %d of the forged message\r\n" % i for i in range(40))
)


@pytest.fixture
def forged_server(pop3_server_factory: Callable[..., POP3TestServer]) -> POP3TestServer:
    """Five messages; message 1 is :data:`FORGED`, 2-5 come from the sample mailbox."""
    return pop3_server_factory(mailbox=Mailbox([FORGED] + sample_mailbox(5).messages[1:]))


def _check_first_chunk(chunk: bytes) -> None:
    # The fake status line is still unread when the stream is left.
    assert FORGED.startswith(chunk) and 0 < len(chunk) <= FORGED.index(b"+OK 99")


def test_stream_left_early_then_retr(kind: str, forged_server: POP3TestServer) -> None:
    box = forged_server.mailbox.snapshot()
    assert box[0].data == FORGED
    p = logged_in(kind, forged_server.host, forged_server.port)
    for chunk in iterate(kind, p, p.retr_iter(1, chunk_size=60)):
        _check_first_chunk(chunk)
        break
    assert p.retr(5) == retr_reply(box[4])
    assert p.stat() == (5, total_size(box))
    assert b"".join(iterate(kind, p, p.retr_iter(1, chunk_size=60))) == FORGED  # the fake reply was body data
    p.quit()


def test_resuming_superseded_stream_raises(kind: str, forged_server: POP3TestServer) -> None:
    box = forged_server.mailbox.snapshot()
    p = logged_in(kind, forged_server.host, forged_server.port)
    it = iterate(kind, p, p.retr_iter(1, chunk_size=60))
    _check_first_chunk(next(it))
    assert p.retr(5) == retr_reply(box[4])
    with pytest.raises(fastpoplib.LocalProtocolError):
        next(it)
    assert p.noop() == b"+OK"
    assert p.retr(2) == retr_reply(box[1])
    p.quit()


# -- messages() when LIST fails ----------------------------------------------------------------


def test_messages_before_login_leaves_no_reply_behind(kind: str, pop3_server: POP3TestServer) -> None:
    box = pop3_server.mailbox.snapshot()
    p = connect(kind, pop3_server.host, pop3_server.port)
    try:
        with pytest.raises(fastpoplib.ServerError) as info:
            p.messages()
        assert type(info.value) is fastpoplib.ServerError
        assert info.value.args == (b"-ERR Command not valid in this state",)
        # Each next call gets its own reply, not UIDL's -ERR still in flight.
        assert p.user(USER) == b"+OK send PASS"
        assert p.pass_(PASSWORD) == b"+OK logged in, maildrop has 12 messages (%d octets)" % total_size(box)
        assert p.stat() == (12, total_size(box))
        assert p.noop() == b"+OK"
    finally:
        p.close()


def test_messages_with_failing_list_leaves_no_reply_behind(kind: str, pop3_server: POP3TestServer) -> None:
    box = pop3_server.mailbox.snapshot()
    p = logged_in(kind, pop3_server.host, pop3_server.port)
    try:
        pop3_server.add_fault(Fault.reply(b"-ERR [SYS/TEMP] try again later\r\n", on="LIST"))
        with pytest.raises(fastpoplib.SysTempError) as info:
            p.messages()
        assert info.value.args == (b"-ERR [SYS/TEMP] try again later",)
        # UIDL's multi-line reply, if it was pipelined, is not anybody else's reply.
        assert p.stat() == (12, total_size(box))
        assert p.noop() == b"+OK"
        assert [tuple(i) for i in p.messages()] == [(n, m.size, m.uid) for n, m in enumerate(box, 1)]
    finally:
        p.close()


# -- accessors never block; close() from another thread ----------------------------------------


def _open_for_stall(srv: POP3TestServer, tls: bool) -> fastpoplib.POP3:
    if tls:
        p: fastpoplib.POP3 = fastpoplib.POP3_SSL(srv.host, srv.port, timeout=10, cafile=srv.cafile)
    else:
        p = fastpoplib.POP3(srv.host, srv.port, timeout=10)
    p.user(USER)
    p.pass_(PASSWORD)
    return p


def _accessors(p: Any) -> List[Tuple[str, Callable[[], Any]]]:
    sock = p.sock
    return [
        ("getpeername", sock.getpeername),
        ("getsockname", sock.getsockname),
        ("fileno", sock.fileno),
        ("gettimeout", sock.gettimeout),
        ("repr(sock)", lambda: repr(sock)),
        ("tls_info", lambda: p.tls_info),
        ("repr(pop)", lambda: repr(p)),
    ]


def _read_all(accessors: List[Tuple[str, Callable[[], Any]]]) -> Tuple[dict, dict]:
    values, took = {}, {}
    for name, fn in accessors:
        start = time.monotonic()
        values[name] = fn()
        took[name] = time.monotonic() - start
    return values, took


@pytest.mark.parametrize("stop", ["close", "sock.shutdown"])
@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_accessors_and_close_while_a_call_waits(tls: bool, stop: str, pop3_server_factory: Callable[..., POP3TestServer]) -> None:
    if tls:
        pytest.importorskip("trustme")
    srv = pop3_server_factory(tls="implicit") if tls else pop3_server_factory()
    p = _open_for_stall(srv, tls)
    accessors = _accessors(p)
    idle, _ = _read_all(accessors)
    assert idle["getpeername"] == (srv.host, srv.port)
    assert idle["gettimeout"] == 10.0
    assert idle["fileno"] >= 0
    assert (idle["tls_info"] is not None) == tls
    if tls:
        version, cipher = idle["tls_info"]
        assert version in ("TLSv1.2", "TLSv1.3") and cipher

    srv.add_fault(Fault.stall(10, on="RETR"))
    call = Worker(p.retr, 1)
    call.start()
    received(srv, b"RETR 1")
    probe = Worker(_read_all, accessors)
    probe.start()
    values, took = probe.outcome(3)
    assert call.is_alive(), "the stalled RETR ended before the accessors were read"
    assert values == idle
    assert max(took.values()) < ACCESSOR_BOUND, took

    sock = p.sock
    assert sock is not None
    started = time.monotonic()
    closer = Worker(p.close) if stop == "close" else Worker(sock.shutdown, socket.SHUT_RDWR)
    closer.start()
    closer.outcome(2)
    call.finish(2)
    assert call.ended is not None and call.ended - started < 1.0
    assert isinstance(call.error, fastpoplib.POP3ConnectionError), repr(call.error)
    with pytest.raises(fastpoplib.POP3Error):
        p.noop()


def test_accessors_in_a_signal_handler_during_a_call(pop3_server: POP3TestServer) -> None:
    box = pop3_server.mailbox.snapshot()
    p = sync_login(pop3_server)
    accessors = _accessors(p)
    idle, _ = _read_all(accessors)
    pop3_server.add_fault(Fault.stall(1.0, on="RETR"))
    seen: dict = {}
    in_call = threading.Event()

    def handler(signum: int, frame: Any) -> None:
        seen["during the call"] = in_call.is_set()
        seen["values"], seen["took"] = _read_all(accessors)

    def poke() -> None:
        received(pop3_server, b"RETR 1")
        os.kill(os.getpid(), signal.SIGUSR1)

    previous = signal.signal(signal.SIGUSR1, handler)
    try:
        poker = Worker(poke)
        poker.start()
        in_call.set()
        got = p.retr(1)
        in_call.clear()
    finally:
        signal.signal(signal.SIGUSR1, previous)
    poker.outcome(5)
    assert seen.get("during the call"), seen
    assert got == retr_reply(box[0])
    assert seen["values"] == idle
    assert max(seen["took"].values()) < ACCESSOR_BOUND, seen["took"]
    assert p.noop() == b"+OK"
    p.quit()


async def _async_open(srv: POP3TestServer, tls: bool) -> fastpoplib.AsyncPOP3:
    if tls:
        p = await fastpoplib.AsyncPOP3_SSL.connect(srv.host, srv.port, 10, cafile=srv.cafile)
    else:
        p = await fastpoplib.AsyncPOP3.connect(srv.host, srv.port, 10)
    await p.user(USER)
    await p.pass_(PASSWORD)
    return p


async def _stalled_retr(srv: POP3TestServer, p: fastpoplib.AsyncPOP3) -> "asyncio.Future[Any]":
    """Starts ``p.retr(1)`` on a server that stalls it; returns once the server has the RETR."""
    srv.add_fault(Fault.stall(10, on="RETR"))
    call = asyncio.ensure_future(p.retr(1))
    # Wait off the loop thread, so the RETR really is in flight meanwhile.
    await asyncio.get_running_loop().run_in_executor(None, received, srv, b"RETR 1")
    assert not call.done()
    return call


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_async_accessors_while_a_call_waits(tls: bool, pop3_server_factory: Callable[..., POP3TestServer]) -> None:
    if tls:
        pytest.importorskip("trustme")
    srv = pop3_server_factory(tls="implicit") if tls else pop3_server_factory()

    async def main() -> Any:
        p = await _async_open(srv, tls)
        accessors = [("tls_info", lambda: p.tls_info), ("repr", lambda: repr(p))]
        idle, _ = _read_all(accessors)
        call = await _stalled_retr(srv, p)
        # From another thread, with a bounded join (a blocking accessor must fail, not hang).
        probe = Worker(_read_all, accessors)
        probe.start()
        values, took = probe.outcome(3)
        still_waiting = not call.done()
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        return idle, values, took, still_waiting

    idle, values, took, still_waiting = run_async(main())
    assert still_waiting
    assert (idle["tls_info"] is not None) == tls
    assert idle["repr"] == f"<AsyncPOP3{'_SSL' if tls else ''} {srv.host}:{srv.port} {'TLS' if tls else 'plaintext'}>"
    assert values == idle
    assert max(took.values()) < ACCESSOR_BOUND, took


def test_async_aclose_interrupts_a_waiting_call(pop3_server: POP3TestServer) -> None:
    async def main() -> Any:
        p = await _async_open(pop3_server, False)
        call = await _stalled_retr(pop3_server, p)
        started = time.monotonic()
        await asyncio.wait_for(p.aclose(), 2)
        with pytest.raises(fastpoplib.POP3Error):
            await asyncio.wait_for(call, 2)
        return time.monotonic() - started

    assert run_async(main()) < 1.0


# -- a second call in I/O on one connection is refused, deterministically ----------------------


def test_gather_refuses_exactly_the_second_call(pop3_server: POP3TestServer) -> None:
    box = pop3_server.mailbox.snapshot()

    async def main() -> Any:
        p = await async_login(pop3_server)
        stat_first = [await asyncio.gather(p.stat(), p.noop(), return_exceptions=True) for _ in range(30)]
        noop_first = [await asyncio.gather(p.noop(), p.stat(), return_exceptions=True) for _ in range(5)]
        after = await p.stat()
        await p.quit()
        return stat_first, noop_first, after

    stat_first, noop_first, after = run_async(main())
    for first, second in stat_first:
        assert first == (12, total_size(box))
        assert isinstance(second, fastpoplib.LocalProtocolError) and "busy with another call" in str(second)
    for first, second in noop_first:
        assert first == b"+OK"
        assert isinstance(second, fastpoplib.LocalProtocolError) and "busy with another call" in str(second)
    assert after == (12, total_size(box))
    commands = pop3_server.sessions[-1].commands
    # A refused call sent nothing.
    assert commands.count(b"STAT") == 31 and commands.count(b"NOOP") == 5


def test_second_thread_is_refused_at_once(pop3_server: POP3TestServer) -> None:
    box = pop3_server.mailbox.snapshot()
    p = sync_login(pop3_server)
    pop3_server.add_fault(Fault.stall(1.5, on="STAT"))
    first = Worker(p.stat)
    first.start()
    received(pop3_server, b"STAT")
    started = time.monotonic()
    with pytest.raises(fastpoplib.LocalProtocolError, match="busy with another call"):
        p.noop()
    assert time.monotonic() - started < ACCESSOR_BOUND
    assert first.is_alive()
    assert first.outcome(5) == (12, total_size(box))
    assert p.noop() == b"+OK"
    assert pop3_server.sessions[-1].commands.count(b"NOOP") == 1
    p.quit()


# -- Ctrl-C and timeouts in the blocking driver (and their asyncio twins) ----------------------


@contextlib.contextmanager
def unconnectable() -> Iterator[Tuple[str, int]]:
    """A loopback address where a TCP connect never completes: a listener whose backlog is
    full and who never accepts. Skips the test where the kernel does not behave so."""
    listener = socket.socket()
    fillers: List[socket.socket] = []
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        address = listener.getsockname()
        for _ in range(8):
            s = socket.socket()
            fillers.append(s)
            s.setblocking(False)
            s.connect_ex(address)
            _, writable, _ = select.select([], [s], [], 0.3)
            if not writable:
                break  # this connect hangs: so will the client's
        else:
            pytest.skip("a listener with a full backlog still completes connects here")
        yield address
    finally:
        for s in fillers:
            s.close()
        listener.close()


@contextlib.contextmanager
def silent_listener() -> Iterator[Tuple[str, int]]:
    """A loopback address that completes TCP connects (the kernel does) and then never sends
    a byte: a TLS handshake there never gets an answer."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=8)
    try:
        yield listener.getsockname()
    finally:
        listener.close()


@contextlib.contextmanager
def trickle_server(serve: Callable[[socket.socket, threading.Event], None], lifetime: float = 4.0) -> Iterator[Tuple[str, int]]:
    """Runs ``serve(conn, stop)`` on the first connection to a loopback listener, in a thread
    bounded by ``lifetime`` seconds (``stop`` is set then, and when the test ends)."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(lifetime)
    stop = threading.Event()
    timer = threading.Timer(lifetime, stop.set)

    def run() -> None:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(lifetime)
            # Each byte leaves at once: with Nagle's algorithm waiting for the client's delayed
            # ACKs, the stream would have gaps of 40 ms and more.
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                serve(conn, stop)
            except (OSError, ssl.SSLError):
                pass  # the client went away

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    timer.start()
    try:
        yield listener.getsockname()
    finally:
        stop.set()
        timer.cancel()
        listener.close()
        thread.join(lifetime + 2)


# Much faster than the 30 ms, so that a scheduling hiccup on a loaded machine does not
# make a 50 ms gap in the stream: every interval under the blocking driver's wait slice counts.
TRICKLE_INTERVAL = 0.002


def _trickle(conn: socket.socket, data: bytes, stop: threading.Event, interval: float = TRICKLE_INTERVAL) -> None:
    for i in range(len(data)):
        conn.sendall(data[i : i + 1])
        if stop.wait(interval):  # the server's pace, not a synchronisation
            return


def trickle_handshake(conn: socket.socket, stop: threading.Event) -> None:
    """Reads the ClientHello, then sends a TLS record header announcing 16 KiB and its
    payload one byte at a time: the handshake never ends, but bytes keep coming."""
    conn.recv(65536)
    _trickle(conn, b"\x16\x03\x03\x40\x00" + b"\x00" * 16384, stop)


def trickle_tls_record(certificates: Any) -> Callable[[socket.socket, threading.Event], None]:
    """A real TLS handshake, then one application-data record (the greeting) sent one byte at
    a time: nothing is decrypted until the record is complete."""

    def serve(conn: socket.socket, stop: threading.Event) -> None:
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = certificates.server_context().wrap_bio(incoming, outgoing, server_side=True)
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                conn.sendall(outgoing.read())
                data = conn.recv(65536)
                if not data:
                    return
                incoming.write(data)
        conn.sendall(outgoing.read())  # the end of the handshake and session tickets, whole
        tls.write(b"+OK " + b"x" * 16000 + b"\r\n")  # one record: about 30 s to trickle in
        _trickle(conn, outgoing.read(), stop)

    return serve



def test_ctrl_c_during_a_connect_that_never_completes(kind: str) -> None:
    with unconnectable() as (host, port):
        if kind == "sync":
            assert ctrl_c_delay(lambda: fastpoplib.POP3(host, port, timeout=10)) < CTRL_C_BOUND
        else:
            call = _async_call(lambda: fastpoplib.AsyncPOP3.connect(host, port, 10))
            assert ctrl_c_delay(call, process=True) < CTRL_C_BOUND


def test_ctrl_c_during_an_unanswered_tls_handshake(kind: str) -> None:
    with silent_listener() as (host, port):
        if kind == "sync":
            assert ctrl_c_delay(lambda: fastpoplib.POP3_SSL(host, port, timeout=10)) < CTRL_C_BOUND
        else:
            call = _async_call(lambda: fastpoplib.AsyncPOP3_SSL.connect(host, port, 10))
            assert ctrl_c_delay(call, process=True) < CTRL_C_BOUND


def test_ctrl_c_during_a_stalled_retr(kind: str, pop3_server: POP3TestServer) -> None:
    if kind == "sync":
        p = sync_login(pop3_server)
        pop3_server.add_fault(Fault.stall(10, on="RETR"))
        assert ctrl_c_delay(lambda: p.retr(1)) < CTRL_C_BOUND
        p.close()
        return

    async def session() -> Any:
        p = await async_login(pop3_server)
        pop3_server.add_fault(Fault.stall(10, on="RETR"))
        return await p.retr(1)

    assert ctrl_c_delay(_async_call(session), process=True) < CTRL_C_BOUND


def test_ctrl_c_during_a_trickling_tls_handshake() -> None:
    with trickle_server(trickle_handshake) as (host, port):
        assert ctrl_c_delay(lambda: fastpoplib.POP3_SSL(host, port, timeout=10)) < CTRL_C_BOUND


def test_ctrl_c_during_a_trickling_tls_record() -> None:
    certs = _certificates()
    with trickle_server(trickle_tls_record(certs)) as (host, port):
        assert ctrl_c_delay(lambda: fastpoplib.POP3_SSL(host, port, timeout=10, cafile=certs.cafile)) < CTRL_C_BOUND


def _certificates() -> Any:
    pytest.importorskip("trustme", reason="TLS test material needs trustme")
    from fastpoplib.testing import TLSCertificates

    return TLSCertificates()


def _async_call(make: Callable[[], Any]) -> Callable[[], Any]:
    """``asyncio.run`` of an awaitable made by ``make()``: asyncio's own Ctrl-C handling
    (cancel the main task, then raise KeyboardInterrupt) is what is tested."""

    async def main() -> Any:
        return await make()

    return lambda: asyncio.run(main())


def _timed_out_within(call: Callable[[], Any], bound: float) -> None:
    started = time.monotonic()
    with pytest.raises(fastpoplib.POP3TimeoutError):
        call()
    assert time.monotonic() - started < bound


def test_timeout_bounds_a_trickling_tls_handshake(kind: str) -> None:
    with trickle_server(trickle_handshake) as (host, port):
        if kind == "sync":
            _timed_out_within(lambda: fastpoplib.POP3_SSL(host, port, timeout=1), 2.0)
        else:
            _timed_out_within(_async_call(lambda: fastpoplib.AsyncPOP3_SSL.connect(host, port, 1)), 2.0)


def test_timeout_bounds_a_trickling_tls_record(kind: str) -> None:
    certs = _certificates()
    with trickle_server(trickle_tls_record(certs)) as (host, port):
        if kind == "sync":
            _timed_out_within(lambda: fastpoplib.POP3_SSL(host, port, timeout=1, cafile=certs.cafile), 2.0)
        else:
            call = _async_call(lambda: fastpoplib.AsyncPOP3_SSL.connect(host, port, 1, cafile=certs.cafile))
            _timed_out_within(call, 2.0)


def test_timeout_bounds_a_stalled_plain_read(kind: str, pop3_server: POP3TestServer) -> None:
    p = logged_in(kind, pop3_server.host, pop3_server.port, timeout=1)
    try:
        pop3_server.add_fault(Fault.stall(10, on="RETR"))
        _timed_out_within(lambda: p.retr(1), 2.0)
    finally:
        p.close()


# -- invalid arguments raise Python exceptions, never a panic or an abort ----------------------

# (timeout, what poplib raises for it): fastpoplib must raise the same.
INVALID_TIMEOUTS = [
    pytest.param(1e20, OverflowError, id="1e20"),
    pytest.param(float("inf"), OverflowError, id="inf"),
    pytest.param(float("-inf"), (ValueError, OverflowError), id="-inf"),  # poplib: OverflowError
    pytest.param(float("nan"), ValueError, id="nan"),
    pytest.param(-1, ValueError, id="-1"),
    pytest.param(0, ValueError, id="0"),
    pytest.param("a", TypeError, id="str-a"),
    pytest.param("1", TypeError, id="str-1"),
]


@pytest.mark.parametrize("timeout,error", INVALID_TIMEOUTS)
def test_invalid_timeouts_raise_as_poplib_does(kind: str, timeout: Any, error: Any, pop3_server: POP3TestServer) -> None:
    with pytest.raises(error):
        poplib.POP3(pop3_server.host, pop3_server.port, timeout=timeout)
    with pytest.raises(error):
        connect(kind, pop3_server.host, pop3_server.port, timeout=timeout)


@pytest.mark.parametrize("timeout,error", INVALID_TIMEOUTS)
def test_invalid_timeouts_on_an_open_connection(timeout: Any, error: Any, pop3_server: POP3TestServer) -> None:
    """``sock.settimeout`` refuses what ``socket.settimeout`` refuses, and the connection keeps
    working with its old timeout."""
    p = sync_login(pop3_server)
    assert p.sock is not None
    with pytest.raises(error):
        p.sock.settimeout(timeout)
    assert p.sock.gettimeout() == 10.0
    assert p.noop() == b"+OK"
    p.quit()


# Too large for poplib (OverflowError), not for fastpoplib's own rule: either an OverflowError or
# a working session is fine; a panic is not.
HUGE_TIMEOUTS = [1e10, 9.3e18, 1e19, 1.8e19]


@pytest.mark.parametrize("timeout", HUGE_TIMEOUTS)
def test_huge_timeouts_never_panic(kind: str, timeout: float, pop3_server: POP3TestServer) -> None:
    box = pop3_server.mailbox.snapshot()
    try:
        p = logged_in(kind, pop3_server.host, pop3_server.port, timeout=timeout)
    except OverflowError:
        return
    try:
        assert p.stat() == (12, total_size(box))
    finally:
        p.close()


@pytest.mark.parametrize("timeout", [t if t < 9e18 else pytest.param(t) for t in HUGE_TIMEOUTS])
def test_huge_timeouts_on_an_open_connection_never_panic(timeout: float, pop3_server: POP3TestServer) -> None:
    p = sync_login(pop3_server)
    assert p.sock is not None
    try:
        p.sock.settimeout(timeout)
    except OverflowError:
        assert p.sock.gettimeout() == 10.0
    else:
        assert p.sock.gettimeout() == timeout
    assert p.noop() == b"+OK"
    p.quit()


@pytest.mark.parametrize("port,error", [(-1, OverflowError), (65536, OverflowError), (2**64, OverflowError), (1.5, TypeError)])
def test_extreme_ports(port: Any, error: type) -> None:
    with pytest.raises(error):
        fastpoplib.POP3("127.0.0.1", port, timeout=1)


# (chunk_size, exception): also after each, the connection still works.
CHUNK_SIZES = [(0, ValueError), (-1, ValueError), (-(2**70), ValueError), (2**40, ValueError), ("a", TypeError), (1.5, TypeError), (None, TypeError)]


def test_extreme_chunk_sizes_keep_the_connection(kind: str, pop3_server: POP3TestServer, tmp_path: Any) -> None:
    box = pop3_server.mailbox.snapshot()
    p = logged_in(kind, pop3_server.host, pop3_server.port)
    try:
        for size, error in CHUNK_SIZES:
            with pytest.raises(error):
                next(iterate(kind, p, p.retr_iter(1, chunk_size=size)))
            assert p.noop() == b"+OK", size
            with pytest.raises(error):
                p.retr_to(1, tmp_path / "out.eml", chunk_size=size)
            assert p.noop() == b"+OK", size
        for size in (2**63, 2**64, 2**200):
            with pytest.raises((ValueError, OverflowError)):
                next(iterate(kind, p, p.retr_iter(1, chunk_size=size)))
            assert p.noop() == b"+OK", size
        with pytest.raises(ValueError):
            next(iterate(kind, p, p.top_many([1], -1)))
        with pytest.raises(TypeError):
            next(iterate(kind, p, p.top_many([1], "a")))
        assert p.retr(1) == retr_reply(box[0])
        assert b"".join(iterate(kind, p, p.retr_iter(1, chunk_size=1))) == box[0].data
    finally:
        p.close()


@pytest.mark.parametrize(
    "option,value,error",
    [
        ("max_line_length", 0, ValueError),
        ("max_line_length", -1, OverflowError),
        ("max_line_length", 2**64, OverflowError),
        ("max_response_size", 0, ValueError),
        ("max_response_size", -1, OverflowError),
        ("max_response_size", 2**64, OverflowError),
        ("max_response_size", "a", TypeError),
    ],
)
def test_extreme_limits(kind: str, option: str, value: Any, error: type, pop3_server: POP3TestServer) -> None:
    with pytest.raises(error):
        connect(kind, pop3_server.host, pop3_server.port, **{option: value})


# -- asyncio after fork ------------------------------------------------------------------------


def test_new_session_in_a_forked_child(kind: str, pop3_server: POP3TestServer) -> None:
    expected = (12, total_size(pop3_server.mailbox.snapshot()))

    async def async_session() -> Any:
        p = await fastpoplib.AsyncPOP3.connect(pop3_server.host, pop3_server.port, 2)
        await p.user(USER)
        await p.pass_(PASSWORD)
        stat = await p.stat()
        await p.quit()
        return stat

    def sync_session() -> Any:
        p = fastpoplib.POP3(pop3_server.host, pop3_server.port, timeout=2)
        p.user(USER)
        p.pass_(PASSWORD)
        stat = p.stat()
        p.quit()
        return stat

    # The parent has used both drivers (the tokio runtime exists) before forking.
    assert asyncio.run(async_session()) == expected
    assert sync_session() == expected
    pid = os.fork()
    if pid == 0:  # the child: always leaves through os._exit, whatever happens
        code = 70
        try:
            got = asyncio.run(async_session()) if kind == "async" else sync_session()
            code = 0 if got == expected else 3
        except BaseException:
            code = 2
        finally:
            os._exit(code)
    assert wait_child(pid, 10) == 0
    assert pop3_server.sessions[-1].quit_received


# -- memory per wire byte ----------------------------------------------------------------------


def _reset_peak_rss() -> bool:
    """Resets the process's peak RSS (Linux ``clear_refs``); False where not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/self/status")


def test_capa_of_a_million_lines_is_refused_quickly(kind: str, pop3_server: POP3TestServer) -> None:
    payload = b"+OK capability list follows\r\n" + b"X\r\n" * 1_000_000 + b".\r\n"
    pop3_server.add_fault(Fault.reply(payload, on="CAPA"))
    p = connect(kind, pop3_server.host, pop3_server.port)
    try:
        measured = _reset_peak_rss()
        before = _peak_rss()
        started = time.monotonic()
        with pytest.raises(fastpoplib.RemoteProtocolError, match="too large"):
            p.capa()
        assert time.monotonic() - started < 2.0
        if measured:
            assert _peak_rss() - before < 64 << 20
    finally:
        p.close()


def test_response_limit_counts_a_cost_per_line(kind: str, pop3_server: POP3TestServer) -> None:
    """A LIST of short lines is refused where its octets plus 64 bytes per line cross
    ``max_response_size``, even though its wire size is far below it."""
    lines = [b"%d 1" % n for n in range(1, 2001)]
    body = b"".join(line + b"\r\n" for line in lines)
    cost = len(body) + 64 * len(lines)
    pop3_server.add_fault(Fault.reply(b"+OK 2000 messages\r\n" + body + b".\r\n", on="LIST", times=None))

    fits = logged_in(kind, pop3_server.host, pop3_server.port, max_response_size=cost)
    try:
        assert fits.list() == (b"+OK 2000 messages", lines, len(body))
        assert fits.noop() == b"+OK"
    finally:
        fits.quit()

    assert len(body) + 3 < cost - 1  # the wire size alone would fit
    refused = logged_in(kind, pop3_server.host, pop3_server.port, max_response_size=cost - 1)
    try:
        with pytest.raises(fastpoplib.RemoteProtocolError, match=f"more than {cost - 1} bytes"):
            refused.list()
    finally:
        refused.close()


# -- one owner for what the server said, one reader per connection --------------------------------


class InjectingServer:
    """A man in the middle after STLS: sends ``+OK Begin TLS`` and, in a second write, a forged
    CAPA reply in plaintext, then does TLS and answers over it. One connection at a time."""

    FORGED = b"+OK forged\r\nSASL PLAIN\r\n.\r\n"

    def __init__(self, stall_tls: bool = False) -> None:
        self.stall_tls = stall_tls  # after STLS's +OK, never start TLS (a stalled handshake)
        from fastpoplib.testing import TLSCertificates

        self.certificates = TLSCertificates()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.host, self.port = self.listener.getsockname()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @staticmethod
    def _line(sock: socket.socket) -> bytes:
        # Byte by byte: nothing of the client's TLS handshake may be read ahead here.
        line = b""
        while not line.endswith(b"\n"):
            byte = sock.recv(1)
            if not byte:
                return b""
            line += byte
        return line

    def _serve(self) -> None:
        context = self.certificates.server_context()
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                continue
            conn.settimeout(10)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with contextlib.suppress(OSError, ssl.SSLError), conn:
                self._session(conn, context)

    def _session(self, conn: socket.socket, context: ssl.SSLContext) -> None:
        conn.sendall(b"+OK ready\r\n")
        sock: Any = conn
        while True:
            line = self._line(sock).strip().upper()
            if not line:
                return
            if line == b"CAPA":
                sock.sendall(b"+OK\r\nUSER\r\n.\r\n" if sock is not conn else b"+OK\r\nSTLS\r\n.\r\n")
            elif line == b"STLS" and self.stall_tls:
                conn.sendall(b"+OK Begin TLS\r\n")
                self.stop.wait(10)
                return
            elif line == b"STLS":
                conn.sendall(b"+OK Begin TLS\r\n")
                conn.sendall(self.FORGED)
                sock = context.wrap_socket(conn, server_side=True)
            else:
                sock.sendall(b"+OK\r\n")

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.listener.close()


@pytest.fixture
def injecting_server() -> Iterator[InjectingServer]:
    pytest.importorskip("trustme")
    server = InjectingServer()
    yield server
    server.close()


INJECTION_TRIES = 12


@pytest.mark.parametrize("tls", ["rustls", "context"])
def test_plaintext_after_the_stls_reply_is_never_read_as_tls(kind: str, tls: str, injecting_server: InjectingServer) -> None:
    """Whether the forged bytes arrive with the +OK, or later while the event loop is busy
    elsewhere: STLS fails and the connection is closed; the forged CAPA is never accepted."""
    srv = injecting_server
    keywords: Any = {"context": srv.certificates.client_context()} if tls == "context" else {"cafile": srv.certificates.cafile}

    def attempt_sync() -> Any:
        p = fastpoplib.POP3(srv.host, srv.port, timeout=5)
        try:
            p.stls(**keywords)
        except fastpoplib.POP3Error as exc:
            return exc, p.capabilities
        finally:
            p.close()
        return None, p.capabilities

    async def attempt_async() -> Any:
        p = await fastpoplib.AsyncPOP3.connect(srv.host, srv.port, 5)

        async def spin() -> None:  # another task keeping the loop busy
            while True:
                await asyncio.sleep(0)

        busy = asyncio.create_task(spin())
        try:
            await p.stls(**keywords)
        except fastpoplib.POP3Error as exc:
            return exc, p.capabilities
        finally:
            busy.cancel()
            await p.aclose()
        return None, p.capabilities

    for _ in range(INJECTION_TRIES):
        error, caps = attempt_sync() if kind == "sync" else run_async(attempt_async())
        assert error is not None, f"the forged reply was accepted: capabilities {caps}"
        assert caps is None or "SASL" not in caps, caps
        assert isinstance(error, (fastpoplib.RemoteProtocolError, fastpoplib.TLSError, fastpoplib.POP3ConnectionError)), repr(error)


def test_multiline_reply_read_by_hand_stays_owned_to_its_end(forged_server: POP3TestServer) -> None:
    """``_getresp()`` after ``_putcmd("RETR 1")`` reads the status line only: the body is still
    message 1's, whoever wrote ``+OK`` into it. ``_getline()`` reads on in it as poplib does;
    the next command first discards what is left."""
    want = retr_reply(forged_server.mailbox.snapshot()[1])
    p = sync_login(forged_server)
    try:
        p._putcmd("RETR 1")
        assert p._getresp().startswith(b"+OK")
        first, _ = p._getline()
        second, _ = p._getline()
        assert FORGED.startswith(first + b"\r\n" + second + b"\r\n")
        assert p.retr(2) == want
        # Read to the end by hand: the lines as they arrived, then the terminator.
        p._putcmd("RETR 1")
        p._getresp()
        lines = []
        while True:
            line, _ = p._getline()
            if line == b".":
                break
            lines.append(line)
        assert b"\r\n".join(lines) + b"\r\n" == FORGED.replace(b"\r\n.", b"\r\n..")
        assert p.noop().startswith(b"+OK")
        assert p.retr(2) == want
        # `file.readline()` is the same reader.
        p._putcmd("RETR 1")
        p._getresp()
        assert FORGED.startswith(p.file.readline())
        assert p.retr(2) == want
    finally:
        p.close()


def _file_session(p: Any) -> List[Any]:
    p._putcmd("STAT")
    stat = p.file.readline()
    return [stat.startswith(b"+OK") and stat.endswith(b"\r\n"), p.noop(), [n for n, _ in p.retr_many([1, 2])], p.stat()]


def test_file_reads_through_the_session_on_every_driver(pop3_server_factory: Callable[..., POP3TestServer]) -> None:
    """``file.readline()`` after ``_putcmd`` reads the reply the session expects, on the rustls,
    context and own-socket paths: the next command and a pipelined batch stay in step."""
    tls_srv = pop3_server_factory(tls="implicit")
    plain = pop3_server_factory()
    want = [retr_reply(m) for m in plain.mailbox.snapshot()[:2]]

    def own_socket(tls: bool) -> fastpoplib.POP3:
        srv = tls_srv if tls else plain

        class OwnSocket(fastpoplib.POP3_SSL if tls else fastpoplib.POP3):  # type: ignore[misc]
            def __init__(self) -> None:  # poplib's subclass pattern
                self.host, self.port = srv.host, srv.port
                sock = socket.create_connection((srv.host, srv.port), 5)
                self.sock = srv.client_context().wrap_socket(sock, server_hostname=srv.host) if tls else sock
                self.file = self.sock.makefile("rb")
                self._debugging = 0
                self.welcome = self._getresp()

        return OwnSocket()

    makers = {
        "rustls": lambda: fastpoplib.POP3_SSL(tls_srv.host, tls_srv.port, timeout=5, cafile=tls_srv.cafile),
        "context": lambda: fastpoplib.POP3_SSL(tls_srv.host, tls_srv.port, timeout=5, context=tls_srv.client_context()),
        "own socket": lambda: own_socket(False),
        "own TLS socket": lambda: own_socket(True),
    }
    for name, make in makers.items():
        p = make()
        try:
            p.user(USER)
            p.pass_(PASSWORD)
            ok, noop, numbers, _ = _file_session(p)
            assert ok and noop.startswith(b"+OK") and numbers == [1, 2], name
            assert [reply for _, reply in p.retr_many([1, 2])] == want, name
        finally:
            p.close()


def test_capabilities_live_in_the_session(pop3_server_factory: Callable[..., POP3TestServer]) -> None:
    """CAPA read once, tolerant of a non-ASCII IMPLEMENTATION line, re-read after login, and
    read from the session as a property on both classes."""
    caps = ["IMPLEMENTATION Serveur-élégant", "SASL PLAIN", "USER", "PIPELINING", "UIDL", "TOP"]
    srv = pop3_server_factory(capabilities=caps, sasl=["PLAIN"])

    def check(p: Any, run: Callable[[Any], Any]) -> None:
        assert p.capabilities is None
        got = run(p.capa())
        assert got.implementation == "Serveur-élégant" and got.sasl == ["PLAIN"]
        assert p.capabilities == got
        run(p.login(USER, PASSWORD, allow_insecure=True))
        assert p.auth_mechanism == "PLAIN"  # SASL, not a silent fall back to USER/PASS
        commands = srv.sessions[-1].commands
        assert [c for c in commands if c.upper() == b"CAPA"] == [b"CAPA", b"CAPA"], commands  # before and after login
        assert p.capabilities == got  # this server advertises the same after login
        assert b"+OK" in p.welcome

    p = fastpoplib.POP3(srv.host, srv.port, timeout=5)
    try:
        check(p, lambda r: r)
    finally:
        p.close()

    async def main() -> None:
        p = await fastpoplib.AsyncPOP3.connect(srv.host, srv.port, 5)
        try:
            assert p.capabilities is None
            got = await p.capa()
            assert got.implementation == "Serveur-élégant" and p.capabilities == got
            await p.login(USER, PASSWORD, allow_insecure=True)
            assert p.auth_mechanism == "PLAIN"
            commands = srv.sessions[-1].commands
            assert [c for c in commands if c.upper() == b"CAPA"] == [b"CAPA", b"CAPA"], commands
        finally:
            await p.aclose()

    run_async(main())


def test_capabilities_after_login_are_the_reread_ones(kind: str, pop3_server: POP3TestServer) -> None:
    """RFC 2449 §5: the server may advertise less after login (the test server drops USER, SASL
    and STLS); ``capabilities`` is what the session re-read, not a copy kept from before."""
    p = connect(kind, pop3_server.host, pop3_server.port)
    try:
        before = p.capa()
        assert before.has("USER") and before.sasl
        p.login(USER, PASSWORD, allow_insecure=True)
        after = p.capabilities
        assert after is not None and not after.has("USER") and not after.sasl and not after.stls, after
        assert "plaintext" in repr(getattr(p, "client", p))
    finally:
        p.close()


def test_socket_timeout_is_the_connections_after_stls_with_a_context(pop3_server_factory: Callable[..., POP3TestServer]) -> None:
    """``sock.settimeout()`` on a connection opened without a timeout bounds the waits after
    ``stls(context=...)``: a stalled RETR times out instead of blocking forever."""
    srv = pop3_server_factory()
    p = fastpoplib.POP3(srv.host, srv.port, timeout=None)
    try:
        p.sock.settimeout(1.5)
        p.stls(context=srv.client_context())
        assert p.sock.gettimeout() == 1.5
        p.user(USER)
        p.pass_(PASSWORD)
        srv.add_fault(Fault.stall(10, on="RETR"))
        call = Worker(p.retr, 1)
        started = time.monotonic()
        call.start()
        call.finish(6)
        assert isinstance(call.error, fastpoplib.POP3TimeoutError), repr(call.error)
        assert call.ended is not None and call.ended - started < 4
    finally:
        p.close()


def test_socket_timeout_bounds_a_stalled_stls_with_a_context(pop3_server_factory: Callable[..., POP3TestServer]) -> None:
    srv = pop3_server_factory()
    p = fastpoplib.POP3(srv.host, srv.port, timeout=None)
    try:
        p.sock.settimeout(1.5)
        srv.add_fault(Fault.stall(10, on="STLS"))
        call = Worker(p.stls, srv.client_context())
        started = time.monotonic()
        call.start()
        call.finish(6)
        assert isinstance(call.error, fastpoplib.POP3TimeoutError), repr(call.error)
        assert call.ended is not None and call.ended - started < 4
    finally:
        p.close()


LONG_LINE = int(15.9 * (1 << 20))

LONG_LINE_CHILD = """
import asyncio, sys, fastpoplib

def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024

kind, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
limits = dict(max_line_length=16 << 20)

def measure(retr):
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak-RSS mark: measure the retrieval alone
    base = hwm()
    result = retr()  # held while the peak is read, as a caller holds it
    assert max(map(len, result[1])) > 15 << 20
    return hwm() - base

if kind == "sync":
    p = fastpoplib.POP3(host, port, timeout=60, **limits)
    p.user("user"); p.pass_("password")
    print(measure(lambda: p.retr(1)))
    p.close()
else:
    async def main():
        p = await fastpoplib.AsyncPOP3.connect(host, port, 60, **limits)
        await p.user("user"); await p.pass_("password")
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        base = hwm()
        result = await p.retr(1)
        assert max(map(len, result[1])) > 15 << 20
        print(hwm() - base)
        await p.aclose()
    asyncio.run(main())
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux /proc peak-RSS reset")
def test_one_long_line_peaks_at_about_twice_its_size(kind: str, pop3_server_factory: Callable[..., POP3TestServer]) -> None:
    """A 15.9 MiB line (``max_line_length`` raised to 16 MiB): the receive buffer, the session's
    copy and the Python ``bytes`` are never all alive at once."""
    srv = pop3_server_factory(mailbox=Mailbox([b"Subject: long\r\n\r\n" + b"x" * LONG_LINE + b"\r\n"]))
    out = subprocess.run(
        [sys.executable, "-c", LONG_LINE_CHILD, kind, srv.host, str(srv.port)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    peak = int(out.stdout.strip())
    assert peak < 2.4 * LONG_LINE, f"peak {peak / (1 << 20):.1f} MiB for a {LONG_LINE / (1 << 20):.1f} MiB line"


@pytest.mark.parametrize("path", ["rustls", "stls with a context"])
def test_async_timeout_set_after_connecting_bounds_a_stalled_retr(path: str, pop3_server_factory: Callable[..., POP3TestServer]) -> None:
    """``pop.timeout = 1.5`` on an AsyncPOP3 opened without one is the connection's timeout
    from the next wait on, on the rustls driver and after ``stls(context=...)``."""
    srv = pop3_server_factory()

    async def main() -> Any:
        p = await fastpoplib.AsyncPOP3.connect(srv.host, srv.port, None)
        try:
            p.timeout = 1.5
            if path != "rustls":
                await p.stls(context=srv.client_context())
            assert p.timeout == 1.5
            await p.user(USER)
            await p.pass_(PASSWORD)
            srv.add_fault(Fault.stall(10, on="RETR"))
            started = time.monotonic()
            with pytest.raises(fastpoplib.POP3TimeoutError):
                await p.retr(1)
            return time.monotonic() - started
        finally:
            await p.aclose()

    assert run_async(main(), timeout=8) < 4


def test_a_stalled_stls_handshake_with_a_context_times_out_and_closes(kind: str) -> None:
    """The server answers STLS and never starts TLS: ``stls(context=...)`` raises
    POP3TimeoutError within the timeout set on the open connection, and the connection is
    closed (the next call fails at once instead of reading a half-done handshake)."""
    pytest.importorskip("trustme")
    srv = InjectingServer(stall_tls=True)
    context = srv.certificates.client_context()
    try:
        if kind == "sync":
            p = fastpoplib.POP3(srv.host, srv.port, timeout=None)
            p.sock.settimeout(1.5)
            call = Worker(p.stls, context)
            started = time.monotonic()
            call.start()
            call.finish(6)
            assert isinstance(call.error, fastpoplib.POP3TimeoutError), repr(call.error)
            assert call.ended is not None and call.ended - started < 4
            with pytest.raises(fastpoplib.POP3Error):
                p.noop()
            p.close()
            return

        async def main() -> float:
            p = await fastpoplib.AsyncPOP3.connect(srv.host, srv.port, None)
            try:
                p.timeout = 1.5
                started = time.monotonic()
                with pytest.raises(fastpoplib.POP3TimeoutError):
                    await p.stls(context=context)
                took = time.monotonic() - started
                with pytest.raises(fastpoplib.POP3Error):
                    await asyncio.wait_for(p.noop(), 0.5)  # closed: refused at once
                return took
            finally:
                await p.aclose()

        assert run_async(main(), timeout=10) < 4
    finally:
        srv.close()


@pytest.mark.parametrize("order", ["ascending", "shuffled"])
@pytest.mark.parametrize("kind", [*FAST_KINDS, "context"])
def test_messages_rows_converted_while_uidl_arrives_are_exact(kind: str, order: str, pop3_server_factory: Callable[..., POP3TestServer]) -> None:
    """A listing long enough that rows are converted while UIDL is still arriving: the result
    equals LIST and UIDL paired by number, whatever the order of UIDL's lines (a message
    without one gets None; a number given twice is refused: test_client_listings.py)."""
    count = 4000
    tls = "implicit" if kind == "context" else "none"
    srv = pop3_server_factory(tls=tls, mailbox=Mailbox([b"Subject: %d\r\n\r\nbody\r\n" % i for i in range(count)]))
    uids = {n: "uid-%06d-%s" % (n, "x" * 20) for n in range(1, count + 1) if n % 97}  # some without
    lines = [b"%d %s" % (n, uid.encode()) for n, uid in uids.items()]
    if order == "shuffled":
        lines = lines[1::2] + lines[::2]
    srv.add_fault(Fault.reply(b"+OK\r\n" + b"".join(line + b"\r\n" for line in lines) + b".\r\n", on="UIDL"))
    if kind == "context":  # Python's ssl moves the bytes
        p: Any = fastpoplib.POP3_SSL(srv.host, srv.port, timeout=10, context=srv.client_context())
        p.user(USER)
        p.pass_(PASSWORD)
    else:
        p = logged_in(kind, srv.host, srv.port)
    try:
        sizes = [int(line.split()[1]) for line in p.list()[1]]
        rows = p.messages()
        assert [tuple(r) for r in rows] == [(n, sizes[n - 1], uids.get(n)) for n in range(1, count + 1)]
        assert p.noop().startswith(b"+OK")
    finally:
        p.close()


def test_body_lines_read_by_hand_are_bounded_as_body_lines() -> None:
    """After ``_getresp()`` of a RETR, ``file.readline()`` and ``_getline()`` read body lines:
    their limit is ``max_line_length``, not the status line's 2048 bytes (poplib reads a
    5,000-byte body line this way)."""
    long_line = b"z" * 5000
    message = b"Subject: a\r\n\r\n" + long_line + b"\r\nend\r\n"
    with POP3TestServer(mailbox=Mailbox([message]), users={"a": "pw"}, stls=False) as srv:
        p = fastpoplib.POP3(srv.host, srv.port, timeout=5)
        try:
            p.user("a")
            p.pass_("pw")
            p._putcmd("RETR 1")
            assert p._getresp().startswith(b"+OK")
            lines = []
            while (line := p.file.readline()) != b".\r\n":
                lines.append(line)
            assert lines == [b"Subject: a\r\n", b"\r\n", long_line + b"\r\n", b"end\r\n"]
            p._putcmd("RETR 1")
            p._getresp()
            assert [p._getline()[0] for _ in range(3)][-1] == long_line
            assert p.stat()[0] == 1
        finally:
            p.close()
