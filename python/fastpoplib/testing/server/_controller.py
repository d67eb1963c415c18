"""The test server's controller: :class:`POP3TestServer` (configuration, lifecycle, the
accept loop, what sessions share: faults, maildrops, login delays) and :class:`Session`, the
record of one connection kept after it ends."""

from __future__ import annotations

import ipaddress
import selectors
import socket
import ssl
import threading
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence, Set, Tuple, Union

from ..certs import TLSCertificates, have_trustme
from ..mailbox import Mailbox, sample_mailbox
from ._faults import Fault
from ._handler import Connection, Err, strip_eol
from ._sasl import DEFAULT_SASL, SASL_MECHANISMS, SASLQuirks

_JOIN_SECONDS = 2.0  # how long stop() waits for session threads

MailboxLike = Union[Mailbox, Sequence[bytes]]


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
        return [strip_eol(line) for line in list(self.raw_lines)]

    def wait_closed(self, timeout: float = 5.0) -> bool:
        """Wait until the connection is closed; ``False`` on timeout."""
        return self.closed.wait(timeout)

    def __repr__(self) -> str:
        state = "closed" if self.closed.is_set() else "open"
        return f"<Session {self.peer} user={self.user!r} {state} quit={self.quit_received} commands={len(self.raw_lines)}>"


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
        sasl: Sequence[str] = DEFAULT_SASL,
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
        self._active: Dict[Session, "Connection"] = {}
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
                raise Err(f"[LOGIN-DELAY] wait {self.login_delay} seconds between logins")
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
        conn = Connection(self, sock, session)
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
