"""A threaded POP3 server for tests, with fault injection.

It implements the server side of RFC 1939 (POP3), RFC 2449 (CAPA, RESP-CODES, PIPELINING,
LOGIN-DELAY, EXPIRE), RFC 2595 (STLS), RFC 5034 (SASL AUTH: PLAIN, LOGIN, CRAM-MD5, XOAUTH2,
OAUTHBEARER, SCRAM-SHA-1/-256/-512) and RFC 6856 (UTF8) on its own, sharing no code with the
client, so each checks the other. It binds loopback addresses only.

Example::

    from fastpoplib.testing import POP3TestServer, Fault
    import poplib

    with POP3TestServer(users={"alice": "secret"}) as srv:
        srv.add_fault(Fault.stall(0.5, on="RETR"))
        p = poplib.POP3(srv.host, srv.port, timeout=5)
        p.user("alice"); p.pass_("secret")
        print(p.stat())
        p.quit()
    assert srv.sessions[0].quit_received

Every stall, drip and endless stream is bounded by :data:`MAX_FAULT_SECONDS`, threads are
daemons, and :meth:`POP3TestServer.stop` closes every connection, so a test cannot hang on it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import itertools
import json
import os
import re
import select
import secrets
import selectors
import socket
import ssl
import struct
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Generator, List, Mapping, Optional, Sequence, Set, Tuple, Union

from .certs import TLSCertificates, have_trustme
from .mailbox import Mailbox, Message, sample_mailbox

__all__ = ["POP3TestServer", "Session", "Fault", "MAX_FAULT_SECONDS", "SASL_MECHANISMS", "SASLQuirks"]

MAX_FAULT_SECONDS = 30.0
"""Upper bound on any fault's duration (stall, drip, endless stream)."""

SASL_MECHANISMS = ("PLAIN", "LOGIN", "CRAM-MD5", "XOAUTH2", "OAUTHBEARER", "SCRAM-SHA-1", "SCRAM-SHA-256", "SCRAM-SHA-512")
"""Every SASL mechanism the server implements; the ``sasl`` argument picks among them."""

_DEFAULT_SASL = ("PLAIN", "LOGIN", "CRAM-MD5", "XOAUTH2")
_CRLF = b"\r\n"
_AUTHORIZATION, _TRANSACTION = "AUTHORIZATION", "TRANSACTION"
_GREETING = "greeting"  # lower case, so no client verb (always upper-cased) can match it
_JOIN_SECONDS = 2.0  # how long stop() waits for session threads
_counter = itertools.count(1)

MailboxLike = Union[Mailbox, Sequence[bytes]]


def _unique_id() -> str:
    """An RFC 5322 msg-id, unique per process: APOP timestamps and CRAM-MD5 challenges."""
    return f"<{os.getpid()}.{next(_counter)}.{int(time.time())}@fastpoplib.test>"


def _as_mailbox(value: Optional[MailboxLike]) -> Mailbox:
    if value is None:
        return sample_mailbox()
    return value if isinstance(value, Mailbox) else Mailbox(value)


def _loopback(host: str) -> str:
    if host == "localhost":
        return "127.0.0.1"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"host must be a loopback IP address such as 127.0.0.1 or ::1, not {host!r}") from None
    if not ip.is_loopback:
        raise ValueError(f"the test server binds loopback addresses only, not {host!r}")
    return str(ip)


# --- faults ------------------------------------------------------------------------------------

_FAULT_ACTIONS = (
    "reply",
    "stall",
    "stall_after",
    "drip",
    "disconnect",
    "disconnect_after",
    "endless_lines",
    "inject_after_stls",
)


@dataclass(eq=False)
class Fault:
    """A misbehaviour of the server, triggered by the greeting or by a command verb.

    Build faults with the class methods (:meth:`reply`, :meth:`stall`, :meth:`stall_after`,
    :meth:`drip`, :meth:`disconnect`, :meth:`disconnect_after`, :meth:`endless_lines`,
    :meth:`inject_after_stls`) and pass them to ``POP3TestServer(faults=[...])`` or
    :meth:`POP3TestServer.add_fault`.

    Matching: ``on`` is a command verb (case-insensitive, e.g. ``"RETR"``), ``"*"`` for any
    command, or ``"greeting"``. SASL continuation lines are not commands and never match.
    The first ``skip`` matching events pass untouched (``on="*", skip=3`` fires on the fourth
    command); then the fault fires ``times`` times (``None``: every time). ``arg``, if given,
    limits the fault to commands with exactly that argument (``on="RETR", arg=b"3"``: message
    3 only, whatever order the client asks in). When several faults
    match, the first one added wins. ``fired`` counts how often it fired, across sessions.

    Faults that replace the reply do so without executing the command: a ``reply`` fault on
    ``PASS`` sends its bytes but does not log the client in.
    """

    action: str
    on: str = "*"
    data: bytes = b""
    line: bytes = b""
    interval: float = 0.0
    seconds: float = MAX_FAULT_SECONDS
    reset: bool = False
    times: Optional[int] = 1
    skip: int = 0
    arg: Optional[bytes] = None
    fired: int = field(default=0, init=False)
    _seen: int = field(default=0, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.action not in _FAULT_ACTIONS:
            raise ValueError(f"unknown fault action {self.action!r}; one of {', '.join(_FAULT_ACTIONS)}")
        if self.times is not None and self.times < 1:
            raise ValueError("times must be >= 1, or None for every time")
        if self.skip < 0:
            raise ValueError("skip must be >= 0")
        if self.seconds < 0 or self.interval < 0:
            raise ValueError("durations must be >= 0")
        self.on = _GREETING if self.on.lower() == _GREETING else self.on.upper()
        self.seconds = min(self.seconds, MAX_FAULT_SECONDS)
        self.interval = min(self.interval, MAX_FAULT_SECONDS)

    @classmethod
    def reply(cls, data: bytes, *, on: str = "*", times: Optional[int] = 1, skip: int = 0) -> "Fault":
        """Send exactly ``data`` (no CRLF added) instead of the normal reply or greeting.

        ``Fault.reply(b"+OK 3\\r\\n", on="STAT")`` sends a malformed STAT reply.
        """
        return cls("reply", on=on, data=data, times=times, skip=skip)

    @classmethod
    def stall(cls, seconds: float, *, on: str = "*", times: Optional[int] = 1, skip: int = 0) -> "Fault":
        """Wait ``seconds`` (at most :data:`MAX_FAULT_SECONDS`), then reply normally.

        ``Fault.stall(5, on="greeting")`` makes a client's connect time out.
        """
        return cls("stall", on=on, seconds=seconds, times=times, skip=skip)

    @classmethod
    def stall_after(
        cls,
        data: bytes,
        seconds: float = MAX_FAULT_SECONDS,
        *,
        on: str = "*",
        arg: Optional[bytes] = None,
        times: Optional[int] = 1,
        skip: int = 0,
    ) -> "Fault":
        """Send ``data`` (e.g. the start of a reply), go silent for ``seconds``, then close.

        ``Fault.stall_after(b"+OK\\r\\nSubject: x\\r\\n", on="RETR", arg=b"3", times=None)``:
        the server stops in the middle of message 3, every time (a client must time out).
        """
        return cls("stall_after", on=on, data=data, seconds=seconds, times=times, skip=skip, arg=arg)

    @classmethod
    def drip(
        cls,
        data: bytes,
        interval: float = 0.05,
        *,
        max_seconds: float = MAX_FAULT_SECONDS,
        on: str = "*",
        times: Optional[int] = 1,
        skip: int = 0,
    ) -> "Fault":
        """Send ``data`` instead of the reply, one byte every ``interval`` seconds.

        If that would take longer than ``max_seconds``, the connection is closed at that point.
        ``Fault.drip(b"+OK 1 100\\r\\n", 0.2, on="STAT")`` tests a client's overall deadline.
        """
        return cls("drip", on=on, data=data, interval=interval, seconds=max_seconds, times=times, skip=skip)

    @classmethod
    def disconnect(cls, *, reset: bool = False, on: str = "*", times: Optional[int] = 1, skip: int = 0) -> "Fault":
        """Close the connection without replying; with ``reset``, abort it (TCP RST).

        ``Fault.disconnect(on="RETR")`` drops the client in the middle of a session.
        """
        return cls("disconnect", on=on, reset=reset, times=times, skip=skip)

    @classmethod
    def disconnect_after(cls, data: bytes, *, on: str = "*", times: Optional[int] = 1, skip: int = 0) -> "Fault":
        """Send ``data`` (e.g. part of a reply), then close the connection.

        ``Fault.disconnect_after(b"+OK\\r\\nline 1\\r\\n", on="RETR")`` truncates a message.
        """
        return cls("disconnect_after", on=on, data=data, times=times, skip=skip)

    @classmethod
    def endless_lines(
        cls,
        *,
        line: bytes = b"x" * 70,
        status: bytes = b"+OK here it comes\r\n",
        interval: float = 0.0,
        max_seconds: float = 10.0,
        on: str = "RETR",
        times: Optional[int] = 1,
        skip: int = 0,
    ) -> "Fault":
        """Send ``status``, then ``line`` + CRLF over and over, never the terminating dot.

        Stops when the client goes away or after ``max_seconds``, then closes the connection.
        Tests that a client bounds the size of a multi-line response.
        """
        return cls(
            "endless_lines", on=on, data=status, line=line, interval=interval, seconds=max_seconds, times=times, skip=skip
        )

    @classmethod
    def inject_after_stls(cls, data: bytes, *, times: Optional[int] = 1, skip: int = 0) -> "Fault":
        """Send ``data`` in plaintext right after STLS's ``+OK``, in the same write, then do TLS.

        This is the STARTTLS command-injection attack (CVE-2011-0411 family): a client must
        not treat those bytes as a reply received over TLS.
        ``Fault.inject_after_stls(b"+OK injected\\r\\n")``.
        """
        return cls("inject_after_stls", on="STLS", data=data, times=times, skip=skip)

    def _claim(self, trigger: str, arg: bytes = b"") -> bool:
        """Count a matching event; True if the fault fires for it."""
        if self.on != trigger and not (self.on == "*" and trigger != _GREETING):
            return False
        if self.arg is not None and arg.strip() != self.arg:
            return False
        with self._lock:
            self._seen += 1
            if self._seen <= self.skip or (self.times is not None and self.fired >= self.times):
                return False
            self.fired += 1
            return True


# --- sessions ----------------------------------------------------------------------------------


class Session:
    """The record of one client connection, kept after it ends.

    Attributes:
        peer: the client's address.
        raw_lines: every line received, exactly as received (terminator included; a line
            longer than the limit is cut at the limit), SASL continuation lines included.
        user: who logged in, or ``None``.
        tls: whether the connection ended up under TLS (implicit TLS or STLS).
        utf8: whether the client sent ``UTF8``.
        quit_received: whether the session ended with a ``QUIT`` the server answered.
        closed: a :class:`threading.Event` set once the connection is closed.
    """

    def __init__(self, peer: Tuple[Any, ...]) -> None:
        self.peer = peer
        self.raw_lines: List[bytes] = []
        self.user: Optional[str] = None
        self.tls = False
        self.utf8 = False
        self.quit_received = False
        self.closed: threading.Event = threading.Event()

    @property
    def commands(self) -> List[bytes]:
        """:attr:`raw_lines` without their line terminators."""
        return [_strip_eol(line) for line in list(self.raw_lines)]

    def wait_closed(self, timeout: float = 5.0) -> bool:
        """Wait until the connection is closed; ``False`` on timeout."""
        return self.closed.wait(timeout)

    def __repr__(self) -> str:
        state = "closed" if self.closed.is_set() else "open"
        return f"<Session {self.peer} user={self.user!r} {state} quit={self.quit_received} commands={len(self.raw_lines)}>"


def _strip_eol(line: bytes) -> bytes:
    if line.endswith(b"\r\n"):
        return line[:-2]
    return line[:-1] if line.endswith(b"\n") else line


_UTF8_PLACEHOLDER = (
    b"Subject: message not shown\r\n\r\nThis message contains Unicode content that cannot be displayed;"
    b" use a client that supports UTF8 (RFC 6856).\r\n"
)


# --- the server --------------------------------------------------------------------------------


class POP3TestServer:
    """A POP3 server on a loopback address, one daemon thread per connection.

    Args:
        mailbox: the maildrop every user sees: a :class:`Mailbox` or a list of raw messages
            (LF or CRLF line endings); default :func:`sample_mailbox()`.
        users: user name -> password; default ``{"user": "password"}``.
        host: a loopback address: ``"127.0.0.1"``, ``"::1"`` or ``"localhost"`` (IPv4).
        port: 0 for an ephemeral port (see :attr:`port` after :meth:`start`).
        tls: ``"none"``, or ``"implicit"`` for POP3S (TLS from the first byte).
        stls: offer STLS on a plain server, when ``trustme`` is installed.
        apop: put a timestamp in the greeting and accept APOP.
        greeting: the greeting line without CRLF, e.g. ``b"+OK hi <1.2@x>"``; APOP uses the
            timestamp it contains, if any.
        capabilities: the exact CAPA lines to send in every state, instead of computed ones.
        sasl: SASL mechanisms offered, among :data:`SASL_MECHANISMS`; empty disables AUTH.
        oauth2_tokens: user -> bearer token accepted by XOAUTH2 and OAUTHBEARER; default: the
            user's password.
        utf8: offer and accept UTF8 (RFC 6856).
        utf8_placeholder: with ``utf8``, answer RETR and TOP of a message that is not ASCII
            with a "cannot display Unicode content" placeholder to a session that did not send
            ``UTF8``, as Courier does (RFC 6856 §2 lets a server do so).
        pipelining: advertise PIPELINING (commands are always answered in order).
        login_delay: advertise ``LOGIN-DELAY n`` and refuse a user's login within ``n``
            seconds of their previous one with ``-ERR [LOGIN-DELAY]``.
        expire: advertise ``EXPIRE`` with this value (days, or ``"NEVER"``).
        mailboxes: user -> maildrop for users that do not share ``mailbox``.
        allow_concurrent: let several sessions open the same maildrop at once, instead of
            refusing the second with ``-ERR [IN-USE]``.
        top: implement (and advertise) TOP; ``False`` answers it ``-ERR``, as some servers do.
        uidl: implement (and advertise) UIDL; ``False`` answers it ``-ERR``.
        list_text: text sent after the size on each line of a LIST listing, e.g.
            ``"(Subject: hello)"`` (RFC 1939 section 5 allows it).
        faults: :class:`Fault` objects to start with (see also :meth:`add_fault`).
        certificates: TLS material; default: a fresh :class:`TLSCertificates` when TLS is used.
        idle_timeout: seconds a session waits for a command before closing the connection.
        max_line_length: longest command line accepted, terminator included (RFC 2449: 255).
        max_auth_line_length: the limit for AUTH and its continuation lines; long, because
            OAuth2 tokens exceed 4 KiB and real servers accept them in an initial response.
        sasl_quirks: a :class:`SASLQuirks`: SASL as broken or hostile servers do it.

    """

    def __init__(
        self,
        mailbox: Optional[MailboxLike] = None,
        users: Optional[Mapping[str, str]] = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tls: str = "none",
        stls: bool = True,
        apop: bool = True,
        greeting: Optional[bytes] = None,
        capabilities: Optional[Sequence[str]] = None,
        sasl: Sequence[str] = _DEFAULT_SASL,
        oauth2_tokens: Optional[Mapping[str, str]] = None,
        utf8: bool = True,
        utf8_placeholder: bool = False,
        pipelining: bool = True,
        login_delay: Optional[int] = None,
        expire: Union[int, str, None] = None,
        mailboxes: Optional[Mapping[str, MailboxLike]] = None,
        allow_concurrent: bool = False,
        top: bool = True,
        uidl: bool = True,
        list_text: str = "",
        faults: Sequence[Fault] = (),
        certificates: Optional[TLSCertificates] = None,
        idle_timeout: float = 60.0,
        max_line_length: int = 255,
        max_auth_line_length: int = 65536,
        sasl_quirks: Optional["SASLQuirks"] = None,
    ) -> None:
        if tls not in ("none", "implicit"):
            raise ValueError(f"tls must be 'none' or 'implicit', not {tls!r}")
        unknown = [m for m in sasl if m.upper() not in SASL_MECHANISMS]
        if unknown:
            raise ValueError(f"unsupported SASL mechanisms {unknown}; supported: {', '.join(SASL_MECHANISMS)}")
        self._host = _loopback(host)
        self.mailbox: Mailbox = _as_mailbox(mailbox)
        self.mailboxes: Dict[str, Mailbox] = {user: _as_mailbox(box) for user, box in (mailboxes or {}).items()}
        self.users: Dict[str, str] = dict(users) if users is not None else {"user": "password"}
        self.tls = tls
        self.apop = apop
        self.greeting = greeting
        self.capabilities: Optional[List[str]] = list(capabilities) if capabilities is not None else None
        self.sasl: Tuple[str, ...] = tuple(m.upper() for m in sasl)
        self.oauth2_tokens: Optional[Dict[str, str]] = dict(oauth2_tokens) if oauth2_tokens is not None else None
        self.utf8 = utf8
        self.utf8_placeholder = utf8_placeholder
        self.pipelining = pipelining
        self.login_delay = login_delay
        self.expire = expire
        self.allow_concurrent = allow_concurrent
        self.top = top
        self.uidl = uidl
        self.list_text = list_text
        self.idle_timeout = idle_timeout
        self.max_line_length = max_line_length
        self.max_auth_line_length: int = max(max_auth_line_length, max_line_length)
        self.faults: List[Fault] = list(faults)
        self.sasl_quirks: SASLQuirks = sasl_quirks or SASLQuirks()

        if tls == "implicit" or (stls and (certificates is not None or have_trustme())):
            self.certificates: Optional[TLSCertificates] = certificates or TLSCertificates()
            self._tls_context: Optional[ssl.SSLContext] = self.certificates.server_context()
        else:
            self.certificates = None
            self._tls_context = None
        self.stls: bool = stls and tls == "none" and self._tls_context is not None

        self._port = port
        self._listener: Optional[socket.socket] = None
        self._wakeup: Optional[Tuple[socket.socket, socket.socket]] = None
        self._thread: Optional[threading.Thread] = None
        self._stopping = threading.Event()
        self._lock = threading.Condition()
        self._sessions: List[Session] = []
        self._active: Dict[Session, "_Connection"] = {}
        self._peak_sessions = 0
        self._in_progress: Set[Session] = set()  # accepted, QUIT not yet answered, not closed
        self._last_login: Dict[str, float] = {}

    # -- lifecycle

    def start(self) -> "POP3TestServer":
        """Bind and start accepting connections; returns ``self``."""
        if self._listener is not None:
            raise RuntimeError("server already started")
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        self._listener = socket.create_server((self._host, self._port), family=family, backlog=1024)
        self._listener.setblocking(False)
        # stop() writes to this pair to wake the accept loop: closing a socket does not
        # interrupt a blocked accept() on every platform.
        self._wakeup = socket.socketpair()
        self._port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, name=f"pop3-test-server-{self._port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, close every connection and wait (briefly) for the session threads."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        if self._wakeup is not None:
            self._wakeup[1].send(b"\0")
        if self._thread is not None:
            self._thread.join(_JOIN_SECONDS)
        for sock in (self._listener, *(self._wakeup or ())):
            if sock is not None:
                sock.close()
        with self._lock:
            connections = list(self._active.values())
        for conn in connections:
            conn.abort()
        deadline = time.monotonic() + _JOIN_SECONDS
        for conn in connections:
            conn.thread.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> "POP3TestServer":
        if self._listener is None:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- addresses and TLS material

    @property
    def host(self) -> str:
        """The address the server listens on, e.g. ``"127.0.0.1"``."""
        return self._host

    @property
    def port(self) -> int:
        """The port the server listens on (known after :meth:`start`)."""
        return self._port

    @property
    def address(self) -> Tuple[str, int]:
        """``(host, port)``."""
        return (self._host, self._port)

    def _require_tls(self) -> TLSCertificates:
        if self.certificates is None:
            raise RuntimeError("this server has no TLS: pass tls='implicit' or stls=True with trustme installed")
        return self.certificates

    @property
    def ca_pem(self) -> bytes:
        """PEM of the test CA that signed the server's certificate."""
        return self._require_tls().ca_pem

    @property
    def cafile(self) -> str:
        """Path of a temporary PEM file holding :attr:`ca_pem` (for ``cafile=`` arguments)."""
        return self._require_tls().cafile

    def client_context(self) -> ssl.SSLContext:
        """A client :class:`ssl.SSLContext` trusting the test CA, hostname checking on."""
        return self._require_tls().client_context()

    # -- mailboxes, faults, sessions

    def mailbox_for(self, user: str) -> Mailbox:
        """The maildrop ``user`` logs in to."""
        return self.mailboxes.get(user, self.mailbox)

    def add_fault(self, fault: Fault) -> Fault:
        """Arm ``fault`` for the following commands of every session; returns it."""
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        """Disarm every fault."""
        with self._lock:
            self.faults.clear()

    @property
    def peak_sessions(self) -> int:
        """The most sessions in progress at the same moment since :meth:`start` or the last
        reset (``srv.peak_sessions = 0``): accepted, and neither closed nor past QUIT's reply,
        so a client's bound on its connections can be checked against it."""
        with self._lock:
            return self._peak_sessions

    @peak_sessions.setter
    def peak_sessions(self, value: int) -> None:
        with self._lock:
            self._peak_sessions = value

    @property
    def sessions(self) -> List[Session]:
        """Every connection accepted so far, open or closed, in order of arrival."""
        with self._lock:
            return list(self._sessions)

    def wait_for_sessions(self, count: int = 1, timeout: float = 5.0) -> List[Session]:
        """Wait until at least ``count`` connections were accepted; returns :attr:`sessions`.

        Raises :class:`TimeoutError` if they do not arrive in time.
        """
        with self._lock:
            if not self._lock.wait_for(lambda: len(self._sessions) >= count, timeout):
                raise TimeoutError(f"{len(self._sessions)} of {count} sessions arrived within {timeout} s")
            return list(self._sessions)

    def wait_for_sessions_closed(self, timeout: float = 5.0) -> bool:
        """Wait until every connection accepted so far is closed; ``False`` on timeout."""
        deadline = time.monotonic() + timeout
        return all(s.closed.wait(max(0.0, deadline - time.monotonic())) for s in self.sessions)

    # -- what sessions ask of the server

    def _capabilities(self, logged_in: bool, tls_active: bool) -> List[str]:
        if self.capabilities is not None:
            return list(self.capabilities)
        caps = [c for c, on in (("TOP", self.top), ("UIDL", self.uidl)) if on] + ["RESP-CODES"]
        if self.pipelining:
            caps.append("PIPELINING")
        caps.append("AUTH-RESP-CODE")
        if self.login_delay is not None:
            caps.append(f"LOGIN-DELAY {self.login_delay}")
        if self.expire is not None:
            caps.append(f"EXPIRE {self.expire}")
        if not logged_in:
            caps.append("USER")
            if self.sasl:
                caps.append("SASL " + " ".join(self.sasl))
            if self.stls and not tls_active:
                caps.append("STLS")
        if self.utf8:
            caps.append("UTF8")
        return caps

    def _claim_fault(self, trigger: str, arg: bytes = b"") -> Optional[Fault]:
        with self._lock:
            faults = list(self.faults)
        return next((f for f in faults if f._claim(trigger, arg)), None)

    def _check_login_delay(self, user: str) -> None:
        if self.login_delay is None:
            return
        with self._lock:
            last = self._last_login.get(user)
            if last is not None and time.monotonic() - last < self.login_delay:
                raise _Err(f"[LOGIN-DELAY] wait {self.login_delay} seconds between logins")
            self._last_login[user] = time.monotonic()

    def _serve(self) -> None:
        assert self._listener is not None and self._wakeup is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self._listener, selectors.EVENT_READ)
            selector.register(self._wakeup[0], selectors.EVENT_READ)
            while True:
                selector.select()
                if self._stopping.is_set():
                    return
                try:
                    sock, peer = self._listener.accept()
                except (BlockingIOError, InterruptedError):  # the client gave up meanwhile
                    continue
                self._accepted(sock, peer)

    def _accepted(self, sock: socket.socket, peer: Tuple[Any, ...]) -> None:
        sock.settimeout(self.idle_timeout)
        session = Session(peer)
        conn = _Connection(self, sock, session)
        with self._lock:
            self._sessions.append(session)
            self._active[session] = conn
            self._in_progress.add(session)
            self._peak_sessions = max(self._peak_sessions, len(self._in_progress))
            self._lock.notify_all()
        conn.thread.start()

    def _finished(self, session: Session) -> None:
        with self._lock:
            self._active.pop(session, None)
            self._in_progress.discard(session)

    def _session_over(self, session: Session) -> None:
        with self._lock:
            self._in_progress.discard(session)

    def __repr__(self) -> str:
        return f"<POP3TestServer {self._host}:{self._port} tls={self.tls} stls={self.stls}>"


# --- one connection ----------------------------------------------------------------------------


class _Err(Exception):
    """A command failed: the session answers ``-ERR <message>`` and carries on."""


class _Hangup(Exception):
    """The session must end now (a fault closed it, or the server is stopping)."""


class _LineReader:
    """Reads lines from a socket, keeping the rest of what arrived for the next call.

    Pipelined commands therefore come out one at a time and are answered in order. Lines end
    with LF; the CR before it is kept in the line.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buf = bytearray()

    def readline(self, limit: int) -> Tuple[bytes, bool]:
        """The next line with its terminator, and whether it was longer than ``limit`` (then it
        is cut at ``limit`` and the rest of the line is skipped). ``b""`` at end of stream."""
        while True:
            end = self._buf.find(b"\n")
            if end >= 0:
                line = bytes(self._buf[: end + 1])
                del self._buf[: end + 1]
                return line[:limit], len(line) > limit
            if len(self._buf) > limit:
                head = bytes(self._buf[:limit])
                while b"\n" not in self._buf:
                    self._buf.clear()
                    if not self._fill():
                        return b"", False
                del self._buf[: self._buf.find(b"\n") + 1]
                return head, True
            if not self._fill():
                return b"", False

    def _fill(self) -> bool:
        data = self._sock.recv(65536)
        self._buf += data
        return bool(data)

    def discard_buffered(self) -> None:
        """Forget bytes received but not yet read (plaintext that followed STLS)."""
        self._buf.clear()


# SASL mechanisms are generators: they yield a challenge, receive the client's decoded
# response, and return the authenticated user name (or None). A mechanism whose first
# challenge is empty is client-first and may take an initial response.
_Mechanism = Generator[bytes, bytes, Optional[str]]


class _Connection:
    """Runs one session: AUTHORIZATION, TRANSACTION, UPDATE."""

    def __init__(self, server: POP3TestServer, sock: socket.socket, session: Session) -> None:
        self.server = server
        self.sock = sock
        self.session = session
        self.reader = _LineReader(sock)
        self.thread = threading.Thread(target=self.run, name=f"pop3-session-{session.peer}", daemon=True)
        self.state = _AUTHORIZATION
        self.timestamp: Optional[str] = None
        self.pending_user: Optional[str] = None
        self.maildrop: Optional[Mailbox] = None
        self.locked = False
        self.messages: List[Message] = []
        self.deleted: Set[int] = set()
        self.stls_extra = b""
        self.done = False

    # -- I/O

    def run(self) -> None:
        try:
            if self.server.tls == "implicit":
                self._start_tls()
            self._greet()
            while not self.done and not self.server._stopping.is_set():
                line, too_long = self.reader.readline(self.server.max_auth_line_length)
                if not line:
                    break
                self.session.raw_lines.append(line)
                self._handle(line, too_long)
        except (_Hangup, OSError, ValueError):
            pass  # the client went away, a fault hung up, TLS failed, or stop() closed the socket
        finally:
            self._finish()

    def abort(self) -> None:
        """Wake the session thread from any blocking call (from another thread)."""
        try:
            # socket.socket's own shutdown: SSLSocket.shutdown would tear down TLS state
            # that the session thread may be using at this very moment.
            socket.socket.shutdown(self.sock, socket.SHUT_RDWR)
        except OSError:
            pass

    def _finish(self) -> None:
        self._release()
        try:
            self.sock.close()
        finally:
            self.session.closed.set()
            self.server._finished(self.session)

    def _send(self, data: bytes) -> None:
        if data:
            self.sock.sendall(data)

    def _sleep(self, seconds: float) -> None:
        """Wait, but hang up as soon as the client closes its end (as a real server would
        notice), so tests can check that a cancelled client really closed the connection."""
        deadline = time.monotonic() + min(seconds, MAX_FAULT_SECONDS)
        while (left := deadline - time.monotonic()) > 0:
            if self.server._stopping.is_set() or self._peer_closed(min(left, 0.05)):
                raise _Hangup()

    def _peer_closed(self, wait: float) -> bool:
        """Whether the client closed its end, finding out within ``wait`` seconds."""
        readable, _, _ = select.select([self.sock], [], [], wait)
        if not readable:
            return False
        try:
            # Peek at the raw TCP stream (under TLS too): b"" means the client sent FIN.
            if socket.socket.recv(self.sock, 1, socket.MSG_PEEK) == b"":
                return True
        except BlockingIOError:
            return False
        except OSError:
            return True
        # Unread data (a pipelined command): select() would return at once again, so
        # wait out the slice here instead of spinning.
        self.server._stopping.wait(wait)
        return False

    def _start_tls(self) -> None:
        assert self.server._tls_context is not None
        self.sock = self.server._tls_context.wrap_socket(self.sock, server_side=True)
        self.reader = _LineReader(self.sock)
        self.session.tls = True

    def _greet(self) -> None:
        if self.server.greeting is not None:
            line = self.server.greeting
            found = re.search(rb"<[^<>]*>", line)
            self.timestamp = found.group().decode("ascii", "replace") if found and self.server.apop else None
        elif self.server.apop:
            self.timestamp = _unique_id()
            line = f"+OK fastpoplib test server ready {self.timestamp}".encode()
        else:
            line = b"+OK fastpoplib test server ready"
        if not self._fault(_GREETING):
            self._send(line + _CRLF)

    # -- faults

    def _fault(self, trigger: str, arg: bytes = b"") -> bool:
        """Apply the first fault matching ``trigger``; True if it replaced the normal reply."""
        fault = self.server._claim_fault(trigger, arg)
        if fault is None:
            return False
        if fault.action == "stall":
            self._sleep(fault.seconds)
            return False
        if fault.action == "inject_after_stls":
            self.stls_extra = fault.data
            return False
        if fault.action == "reply":
            self._send(fault.data)
            return True
        if fault.action == "drip":
            self._drip(fault)
            return True
        if fault.action == "disconnect" and fault.reset:
            # Linger 0: close() sends RST instead of FIN.
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        elif fault.action == "disconnect_after":
            self._send(fault.data)
        elif fault.action == "stall_after":
            self._send(fault.data)
            self._sleep(fault.seconds)
        elif fault.action == "endless_lines":
            self._endless(fault)
        raise _Hangup()

    def _bounded_send(self, data: bytes, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or self.server._stopping.is_set():
            raise _Hangup()
        self.sock.settimeout(min(remaining, self.server.idle_timeout))
        self.sock.sendall(data)

    def _drip(self, fault: Fault) -> None:
        deadline = time.monotonic() + fault.seconds
        for i in range(len(fault.data)):
            self._bounded_send(fault.data[i : i + 1], deadline)
            self._sleep(fault.interval)
        self.sock.settimeout(self.server.idle_timeout)

    def _endless(self, fault: Fault) -> None:
        deadline = time.monotonic() + fault.seconds
        chunk = fault.line + _CRLF
        if not fault.interval:  # without a pause, send ~4 KiB per call, not one line per syscall
            chunk *= max(1, 4096 // len(chunk))
        self._bounded_send(fault.data, deadline)
        while True:
            self._bounded_send(chunk, deadline)
            if fault.interval:
                self._sleep(fault.interval)

    # -- commands

    def _handle(self, line: bytes, too_long: bool) -> None:
        text = _strip_eol(line)
        verb_bytes, _, arg = text.partition(b" ")
        verb = verb_bytes.decode("ascii", "replace").upper()
        if too_long or (verb != "AUTH" and len(line) > self.server.max_line_length):
            self._send(b"-ERR line too long" + _CRLF)
            return
        if self._fault(verb, arg):
            return
        entry = self._COMMANDS.get(verb)
        if entry is None or not self._enabled(verb):
            reply = b"-ERR Unknown command" + _CRLF
        elif self.state not in entry[1]:
            reply = b"-ERR Command not valid in this state" + _CRLF
        else:
            try:
                reply = entry[0](self, arg)
            except _Err as err:
                reply = b"-ERR " + str(err).encode("utf-8") + _CRLF
        self._send(reply)

    def _enabled(self, verb: str) -> bool:
        server = self.server
        enabled = {"APOP": server.apop, "AUTH": bool(server.sasl), "STLS": server.stls, "UTF8": server.utf8}
        return {**enabled, "TOP": server.top, "UIDL": server.uidl}.get(verb, True)

    @staticmethod
    def _ok(text: str = "") -> bytes:
        return (f"+OK {text}" if text else "+OK").encode("utf-8") + _CRLF

    @staticmethod
    def _multi(status: str, lines: Sequence[bytes]) -> bytes:
        # RFC 1939 byte-stuffing: a line starting with "." gets another "." in front.
        body = b"".join((b"." + ln if ln.startswith(b".") else ln) + _CRLF for ln in lines)
        return f"+OK {status}".encode("utf-8") + _CRLF + body + b"." + _CRLF

    def _visible(self) -> List[Tuple[int, Message]]:
        return [(n, m) for n, m in enumerate(self.messages, 1) if n not in self.deleted]

    def _maildrop_status(self) -> str:
        visible = self._visible()
        return f"maildrop has {len(visible)} messages ({sum(m.size for _, m in visible)} octets)"

    @staticmethod
    def _number(token: bytes) -> int:
        if not token.isdigit() or len(token) > 9:
            raise _Err("invalid number")
        return int(token)

    def _message(self, token: bytes) -> Tuple[int, Message]:
        n = self._number(token)
        if not 1 <= n <= len(self.messages):
            raise _Err(f"no such message, only {len(self.messages)} messages in maildrop")
        if n in self.deleted:
            raise _Err(f"message {n} already deleted")
        return n, self.messages[n - 1]

    @staticmethod
    def _args(arg: bytes, least: int, most: int) -> List[bytes]:
        args = arg.split()
        if not least <= len(args) <= most:
            raise _Err("wrong number of arguments")
        return args

    def _login(self, user: str) -> bytes:
        """Open ``user``'s maildrop and enter the TRANSACTION state."""
        maildrop = self.server.mailbox_for(user)
        if not self.server.allow_concurrent:
            if not maildrop.try_lock():
                raise _Err("[IN-USE] maildrop already locked by another session")
            self.locked = True
        self.maildrop = maildrop
        try:
            self.server._check_login_delay(user)
        except _Err:
            self._release()
            raise
        self.messages = maildrop.snapshot()
        self.state = _TRANSACTION
        self.session.user = user
        return self._ok(f"logged in, {self._maildrop_status()}")

    def _release(self) -> None:
        if self.locked and self.maildrop is not None:
            self.maildrop.unlock()
        self.locked = False
        self.maildrop = None

    def _check_password(self, user: Optional[str], password: Optional[str]) -> bool:
        return user is not None and password is not None and self.server.users.get(user) == password

    # AUTHORIZATION state

    def _cmd_user(self, arg: bytes) -> bytes:
        if not arg.strip():
            raise _Err("USER needs a name")
        self.pending_user = arg.strip().decode("utf-8", "surrogateescape")
        return self._ok("send PASS")

    def _cmd_pass(self, arg: bytes) -> bytes:
        user, self.pending_user = self.pending_user, None
        if user is None:
            raise _Err("send USER first")
        # The password is the rest of the line: it may contain spaces.
        if not self._check_password(user, arg.decode("utf-8", "surrogateescape")):
            raise _Err("[AUTH] Authentication failed.")
        return self._login(user)

    def _cmd_apop(self, arg: bytes) -> bytes:
        name, digest = (a.decode("utf-8", "surrogateescape") for a in self._args(arg, 2, 2))
        if self.timestamp is None:
            raise _Err("APOP not available: the greeting has no timestamp")
        password = self.server.users.get(name)
        expected = hashlib.md5(f"{self.timestamp}{password}".encode("utf-8")).hexdigest()
        if password is None or not _same_digest(expected, digest):
            raise _Err("[AUTH] Authentication failed.")
        return self._login(name)

    def _cmd_auth(self, arg: bytes) -> bytes:
        args = self._args(arg, 0, 2)
        if not args:
            return self._multi("SASL mechanisms follow", [m.encode() for m in self.server.sasl])
        mechanism = args[0].decode("ascii", "replace").upper()
        if mechanism not in self.server.sasl:
            raise _Err(f"Unsupported SASL mechanism {mechanism}")
        quirks = self.server.sasl_quirks
        steps = _sasl_endless() if quirks.endless_continuations else _MECHANISMS[mechanism](self)
        response = self._decode_sasl(args[1]) if len(args) == 2 else None
        try:
            challenge = next(steps)
            # Only client-first mechanisms take an initial response; LOGIN's (the user name)
            # is a common extension that real servers accept.
            if response is not None and challenge and mechanism != "LOGIN":
                raise _Err(f"{mechanism} takes no initial response")
            first = True
            while True:
                if response is None:
                    text = base64.b64encode(challenge)
                    if first and not challenge and quirks.text_continuation is not None:
                        text = quirks.text_continuation
                    self._send(b"+ " + text + _CRLF)
                    response = self._read_sasl_response()
                challenge, response, first = steps.send(response), None, False
        except StopIteration as done:
            user = done.value
        except (ValueError, KeyError):  # malformed response: bad UTF-8, missing fields, ...
            user = None
        if user is None:
            raise _Err("[AUTH] Authentication failed.")
        return self._login(user)

    def _read_sasl_response(self) -> bytes:
        line, too_long = self.reader.readline(self.server.max_auth_line_length)
        if not line:
            raise _Hangup()
        self.session.raw_lines.append(line)
        if too_long:
            raise _Err("line too long")
        text = _strip_eol(line)
        if text == b"*":
            raise _Err("AUTH cancelled by the client")
        return self._decode_sasl(text)

    @staticmethod
    def _decode_sasl(text: bytes) -> bytes:
        if text == b"=":  # RFC 5034: an empty initial response
            return b""
        try:
            return base64.b64decode(text, validate=True)
        except ValueError:
            raise _Err("invalid base64 in SASL response") from None

    def _cmd_stls(self, arg: bytes) -> bytes:
        if self.session.tls:
            raise _Err("TLS already active")
        extra, self.stls_extra = self.stls_extra, b""
        self._send(b"+OK Begin TLS negotiation" + _CRLF + extra)
        # Anything the client pipelined after STLS arrived in plaintext: it must not be read
        # as if it came over TLS (the server side of the STARTTLS injection problem).
        self.reader.discard_buffered()
        self._start_tls()
        self.pending_user = None
        return b""

    def _cmd_utf8(self, arg: bytes) -> bytes:
        self.session.utf8 = True
        return self._ok("UTF8 enabled")

    # both states

    def _cmd_capa(self, arg: bytes) -> bytes:
        caps = self.server._capabilities(self.state == _TRANSACTION, self.session.tls)
        return self._multi("Capability list follows", [c.encode("utf-8") for c in caps])

    def _cmd_quit(self, arg: bytes) -> bytes:
        if self.state == _TRANSACTION:
            # UPDATE state: only now are deletions applied.
            assert self.maildrop is not None
            self.maildrop.remove_messages(self.messages[n - 1] for n in self.deleted)
            text = f"fastpoplib test server signing off ({len(self.maildrop)} messages left)"
            # The maildrop is free before the client reads +OK, so a client that logs in again
            # right away is not refused [IN-USE] (RFC 1939 §6: the update ends the lock).
            self._release()
        else:
            text = "fastpoplib test server signing off"
        self.session.quit_received = True
        self.done = True
        # Counted as over before +OK goes out: a client waiting for it cannot have opened
        # its next connection yet, so peak_sessions measures the client, not this thread.
        self.server._session_over(self.session)
        return self._ok(text)

    # TRANSACTION state

    def _cmd_stat(self, arg: bytes) -> bytes:
        self._args(arg, 0, 0)
        visible = self._visible()
        return self._ok(f"{len(visible)} {sum(m.size for _, m in visible)}")

    def _cmd_list(self, arg: bytes) -> bytes:
        args = self._args(arg, 0, 1)
        if args:
            n, message = self._message(args[0])
            return self._ok(f"{n} {message.size}")
        text = f" {self.server.list_text}" if self.server.list_text else ""
        return self._multi(self._maildrop_status(), [f"{n} {m.size}{text}".encode() for n, m in self._visible()])

    def _cmd_uidl(self, arg: bytes) -> bytes:
        args = self._args(arg, 0, 1)
        if args:
            n, message = self._message(args[0])
            return f"+OK {n} {message.uid}".encode("utf-8", "surrogateescape") + _CRLF
        # A UID given as surrogate-escaped str goes out as the raw bytes (Mailbox(any_uids=True)).
        listing = [f"{n} {m.uid}".encode("utf-8", "surrogateescape") for n, m in self._visible()]
        return self._multi("unique-id listing follows", listing)

    def _cmd_retr(self, arg: bytes) -> bytes:
        _, message = self._message(self._args(arg, 1, 1)[0])
        message = self._shown(message)
        return self._multi(f"{message.size} octets", message.lines)

    def _cmd_top(self, arg: bytes) -> bytes:
        number, count = self._args(arg, 2, 2)
        _, message = self._message(number)
        return self._multi("top of message follows", self._shown(message).top(self._number(count)))

    def _shown(self, message: Message) -> Message:
        """``message``, or the placeholder a client that did not enable UTF8 gets for it."""
        if self.server.utf8 and self.server.utf8_placeholder and not self.session.utf8 and not message.data.isascii():
            return Message(message.uid, _UTF8_PLACEHOLDER)
        return message

    def _cmd_dele(self, arg: bytes) -> bytes:
        n, _ = self._message(self._args(arg, 1, 1)[0])
        self.deleted.add(n)
        return self._ok(f"message {n} deleted")

    def _cmd_noop(self, arg: bytes) -> bytes:
        self._args(arg, 0, 0)
        return self._ok()

    def _cmd_rset(self, arg: bytes) -> bytes:
        self._args(arg, 0, 0)
        self.deleted.clear()
        return self._ok(self._maildrop_status())

    _A, _T = (_AUTHORIZATION,), (_TRANSACTION,)  # the states a command is valid in
    _COMMANDS: Dict[str, Tuple[Callable[["_Connection", bytes], bytes], Tuple[str, ...]]] = {
        "USER": (_cmd_user, _A),
        "PASS": (_cmd_pass, _A),
        "APOP": (_cmd_apop, _A),
        "AUTH": (_cmd_auth, _A),
        "STLS": (_cmd_stls, _A),
        "UTF8": (_cmd_utf8, _A),
        "CAPA": (_cmd_capa, _A + _T),
        "QUIT": (_cmd_quit, _A + _T),
        "STAT": (_cmd_stat, _T),
        "LIST": (_cmd_list, _T),
        "UIDL": (_cmd_uidl, _T),
        "RETR": (_cmd_retr, _T),
        "TOP": (_cmd_top, _T),
        "DELE": (_cmd_dele, _T),
        "NOOP": (_cmd_noop, _T),
        "RSET": (_cmd_rset, _T),
    }


# --- SASL mechanisms ---------------------------------------------------------------------------


def _sasl_plain(conn: _Connection) -> _Mechanism:
    authzid, authcid, password = (yield b"").decode("utf-8").split("\0")
    if authzid and authzid != authcid:  # acting as another user is not supported
        return None
    return authcid if conn._check_password(authcid, password) else None


def _sasl_login(conn: _Connection) -> _Mechanism:
    user_prompt, password_prompt = conn.server.sasl_quirks.login_prompts
    user = (yield user_prompt).decode("utf-8")
    password = (yield password_prompt).decode("utf-8")
    return user if conn._check_password(user, password) else None


def _sasl_cram_md5(conn: _Connection) -> _Mechanism:
    challenge = _unique_id().encode("ascii")
    user, _, digest = (yield challenge).decode("utf-8").rpartition(" ")
    password = conn.server.users.get(user)
    if password is None or conn.server.sasl_quirks.cram_md5_unusable:
        return None
    expected = hmac.new(password.encode("utf-8"), challenge, hashlib.md5).hexdigest()
    return user if _same_digest(expected, digest) else None


def _same_digest(expected_hex: str, given: str) -> bool:
    """Compare hex digests case-insensitively; ``given`` comes from the client, maybe not ASCII."""
    return hmac.compare_digest(expected_hex.encode(), given.lower().encode("utf-8", "surrogateescape"))


def _token_ok(conn: _Connection, user: Optional[str], token: Optional[str]) -> bool:
    tokens = conn.server.oauth2_tokens if conn.server.oauth2_tokens is not None else conn.server.users
    return user is not None and token is not None and tokens.get(user) == token


def _bearer(value: Optional[str]) -> Optional[str]:
    return value[len("Bearer ") :] if value and value.startswith("Bearer ") else None


def _sasl_xoauth2(conn: _Connection) -> _Mechanism:
    # "user=" user ^A "auth=Bearer " token ^A ^A
    fields = dict(f.split("=", 1) for f in (yield b"").decode("utf-8").split("\x01") if f)
    user = fields.get("user")
    if _token_ok(conn, user, _bearer(fields.get("auth"))):
        return user
    # Google's failure shape: an error challenge, which the client answers with an empty line.
    error = conn.server.sasl_quirks.oauth2_error
    yield json.dumps({"status": "401", "schemes": "bearer", "scope": "https://mail.google.com/"}).encode() if error is None else error
    return None


def _sasl_oauthbearer(conn: _Connection) -> _Mechanism:
    # RFC 7628: gs2-header ("n,a=user,") ^A key=value ^A ... ^A ^A
    gs2, *pairs = (yield b"").decode("utf-8").split("\x01")
    user = next((p[2:] for p in gs2.split(",") if p.startswith("a=")), None)
    fields = dict(p.split("=", 1) for p in pairs if p)
    if _token_ok(conn, user, _bearer(fields.get("auth"))):
        return user
    # RFC 7628 3.2.2: an error challenge; the client answers with a lone ^A.
    error = conn.server.sasl_quirks.oauth2_error
    yield json.dumps({"status": "invalid_token", "scope": "pop3"}).encode() if error is None else error
    return None


_SCRAM_ITERATIONS = 4096  # RFC 7677's minimum


def _scram_attributes(text: str) -> Dict[str, str]:
    return dict(item.split("=", 1) for item in text.split(","))


def _sasl_scram(hash_name: str) -> Callable[[_Connection], _Mechanism]:
    def scram(conn: _Connection) -> _Mechanism:
        # RFC 5802 / 7677, without channel binding.
        quirks = conn.server.sasl_quirks
        cbind, authzid, first_bare = (yield b"").decode("utf-8").split(",", 2)
        if cbind not in ("n", "y") or authzid:
            return None
        first = _scram_attributes(first_bare)
        user = first["n"].replace("=2C", ",").replace("=3D", "=")
        nonce = first["r"] + secrets.token_urlsafe(18)
        salt = secrets.token_bytes(16)
        sent = {"r": nonce, "s": base64.b64encode(salt).decode(), "i": str(_SCRAM_ITERATIONS), **quirks.scram_server_first}
        server_first = ",".join(f"{key}={value}" for key, value in sent.items())
        final = (yield server_first.encode()).decode("utf-8")
        without_proof, _, proof = final.rpartition(",p=")
        attrs = _scram_attributes(without_proof)
        password = conn.server.users.get(user)
        if password is None or attrs["r"] != nonce or base64.b64decode(attrs["c"]) != f"{cbind},,".encode():
            return None
        salted = hashlib.pbkdf2_hmac(hash_name, password.encode("utf-8"), salt, _SCRAM_ITERATIONS)
        client_key = hmac.digest(salted, b"Client Key", hash_name)
        stored_key = hashlib.new(hash_name, client_key).digest()
        auth_message = f"{first_bare},{server_first},{without_proof}".encode("utf-8")
        signature = hmac.digest(stored_key, auth_message, hash_name)
        recovered = bytes(a ^ b for a, b in zip(base64.b64decode(proof), signature))
        if not hmac.compare_digest(hashlib.new(hash_name, recovered).digest(), stored_key):
            return None
        server_signature = hmac.digest(hmac.digest(salted, b"Server Key", hash_name), auth_message, hash_name)
        if quirks.scram_server_final == "wrong":
            server_signature = secrets.token_bytes(len(server_signature))
        # POP3 has no "success with data": the server-final message is a challenge, answered empty.
        if quirks.scram_server_final != "missing":
            yield b"v=" + base64.b64encode(server_signature)
        return user

    return scram


_ENDLESS_ROUNDS = 10_000  # SASLQuirks.endless_continuations: bounded, like every fault


def _sasl_endless() -> _Mechanism:
    for _ in range(_ENDLESS_ROUNDS):
        yield b""
    return None


@dataclass
class SASLQuirks:
    """SASL as broken or hostile servers do it, for ``POP3TestServer(sasl_quirks=...)``.

    Attributes:
        cram_md5_unusable: CRAM-MD5 is offered but refuses every digest, as on servers that
            store passwords hashed.
        login_prompts: LOGIN's two prompts (sent base64-encoded): ``(b"", b"")``,
            ``(b"Benutzername:", b"Kennwort:")``...
        text_continuation: sent as is (``b"go ahead"`` gives ``+ go ahead``) instead of an
            empty first challenge (``+ ``: a client-first mechanism's initial response asked for).
        scram_server_first: attributes replaced in the SCRAM server-first message as sent
            (``{"i": "abc"}``, ``{"s": "!!!"}``); the server goes on with its real values.
        scram_server_final: ``"valid"``; ``"missing"``: ``+OK`` without the server's signature;
            ``"wrong"``: a signature made without knowing the password.
        endless_continuations: AUTH answers every response with ``+ `` until the client
            cancels with ``*`` (at most 10,000 rounds).
        oauth2_error: the error report XOAUTH2 and OAUTHBEARER send after a refused token,
            instead of their JSON.
    """

    cram_md5_unusable: bool = False
    login_prompts: Tuple[bytes, bytes] = (b"Username:", b"Password:")
    text_continuation: Optional[bytes] = None
    scram_server_first: Mapping[str, str] = field(default_factory=dict)
    scram_server_final: str = "valid"
    endless_continuations: bool = False
    oauth2_error: Optional[bytes] = None

    def __post_init__(self) -> None:
        if self.scram_server_final not in ("valid", "missing", "wrong"):
            raise ValueError("scram_server_final must be 'valid', 'missing' or 'wrong'")


_MECHANISMS: Dict[str, Callable[[_Connection], _Mechanism]] = {
    "PLAIN": _sasl_plain,
    "LOGIN": _sasl_login,
    "CRAM-MD5": _sasl_cram_md5,
    "XOAUTH2": _sasl_xoauth2,
    "OAUTHBEARER": _sasl_oauthbearer,
    "SCRAM-SHA-1": _sasl_scram("sha1"),
    "SCRAM-SHA-256": _sasl_scram("sha256"),
    "SCRAM-SHA-512": _sasl_scram("sha512"),
}
