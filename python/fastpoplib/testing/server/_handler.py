"""One connection of the test server: its thread, the lines it reads, the RFC 1939 states
(AUTHORIZATION, TRANSACTION, UPDATE), each command's reply, and the faults applied to it."""

from __future__ import annotations

import base64
import hashlib
import re
import select
import socket
import struct
import threading
import time
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, Sequence, Set, Tuple

from ..mailbox import Mailbox, Message
from ._faults import GREETING, MAX_FAULT_SECONDS, Fault
from ._sasl import MECHANISMS, endless, same_digest, unique_id

if TYPE_CHECKING:
    from ._controller import POP3TestServer, Session

CRLF = b"\r\n"
AUTHORIZATION, TRANSACTION = "AUTHORIZATION", "TRANSACTION"


def strip_eol(line: bytes) -> bytes:
    if line.endswith(b"\r\n"):
        return line[:-2]
    return line[:-1] if line.endswith(b"\n") else line


UTF8_PLACEHOLDER = (
    b"Subject: message not shown\r\n\r\nThis message contains Unicode content that cannot be displayed;"
    b" use a client that supports UTF8 (RFC 6856).\r\n"
)


class Err(Exception):
    """A command failed: the session answers ``-ERR <message>`` and carries on."""


class Hangup(Exception):
    """The session must end now (a fault closed it, or the server is stopping)."""


class LineReader:
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


class Connection:
    """Runs one session: AUTHORIZATION, TRANSACTION, UPDATE."""

    def __init__(self, server: POP3TestServer, sock: socket.socket, session: Session) -> None:
        self.server = server
        self.sock = sock
        self.session = session
        self.reader = LineReader(sock)
        self.thread = threading.Thread(target=self.run, name=f"pop3-session-{session.peer}", daemon=True)
        self.state = AUTHORIZATION
        self.timestamp: Optional[str] = None
        self.pending_user: Optional[str] = None
        self.maildrop: Optional[Mailbox] = None
        self.locked = False
        self.messages: List[Message] = []
        self.deleted: Set[int] = set()
        self.stls_extra = b""
        self.done = False
        # Held while `sock` is replaced by its TLS wrapper, which takes over the descriptor:
        # abort() must shut down whichever object owns it at that moment.
        self._swap = threading.Lock()

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
        except (Hangup, OSError, ValueError):
            pass  # the client went away, a fault hung up, TLS failed, or stop() closed the socket
        finally:
            self._finish()

    def abort(self) -> None:
        """Wake the session thread from any blocking call (from another thread)."""
        with self._swap:
            sock = self.sock
        try:
            # socket.socket's own shutdown: SSLSocket.shutdown would tear down TLS state
            # that the session thread may be using at this very moment.
            socket.socket.shutdown(sock, socket.SHUT_RDWR)
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
                raise Hangup()

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
        with self._swap:
            self.sock = self.server._tls_context.wrap_socket(self.sock, server_side=True, do_handshake_on_connect=False)
        # Outside the lock: a client silent in the handshake is woken by abort().
        self.sock.do_handshake()
        self.reader = LineReader(self.sock)
        self.session.tls = True

    def _greet(self) -> None:
        if self.server.greeting is not None:
            line = self.server.greeting
            found = re.search(rb"<[^<>]*>", line)
            self.timestamp = found.group().decode("ascii", "replace") if found and self.server.apop else None
        elif self.server.apop:
            self.timestamp = unique_id()
            line = f"+OK fastpoplib test server ready {self.timestamp}".encode()
        else:
            line = b"+OK fastpoplib test server ready"
        if not self._fault(GREETING):
            self._send(line + CRLF)

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
        raise Hangup()

    def _bounded_send(self, data: bytes, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or self.server._stopping.is_set():
            raise Hangup()
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
        chunk = fault.line + CRLF
        if not fault.interval:  # without a pause, send ~4 KiB per call, not one line per syscall
            chunk *= max(1, 4096 // len(chunk))
        self._bounded_send(fault.data, deadline)
        while True:
            self._bounded_send(chunk, deadline)
            if fault.interval:
                self._sleep(fault.interval)

    # -- commands

    def _handle(self, line: bytes, too_long: bool) -> None:
        text = strip_eol(line)
        verb_bytes, _, arg = text.partition(b" ")
        verb = verb_bytes.decode("ascii", "replace").upper()
        if too_long or (verb != "AUTH" and len(line) > self.server.max_line_length):
            self._send(b"-ERR line too long" + CRLF)
            return
        if self._fault(verb, arg):
            return
        entry = self._COMMANDS.get(verb)
        if entry is None or not self._enabled(verb):
            reply = b"-ERR Unknown command" + CRLF
        elif self.state not in entry[1]:
            reply = b"-ERR Command not valid in this state" + CRLF
        else:
            try:
                reply = entry[0](self, arg)
            except Err as err:
                reply = b"-ERR " + str(err).encode("utf-8") + CRLF
        self._send(reply)

    def _enabled(self, verb: str) -> bool:
        server = self.server
        enabled = {"APOP": server.apop, "AUTH": bool(server.sasl), "STLS": server.stls, "UTF8": server.utf8}
        return {**enabled, "TOP": server.top, "UIDL": server.uidl}.get(verb, True)

    @staticmethod
    def _ok(text: str = "") -> bytes:
        return (f"+OK {text}" if text else "+OK").encode("utf-8") + CRLF

    @staticmethod
    def _multi(status: str, lines: Sequence[bytes]) -> bytes:
        # RFC 1939 byte-stuffing: a line starting with "." gets another "." in front.
        body = b"".join((b"." + ln if ln.startswith(b".") else ln) + CRLF for ln in lines)
        return f"+OK {status}".encode("utf-8") + CRLF + body + b"." + CRLF

    def _visible(self) -> List[Tuple[int, Message]]:
        return [(n, m) for n, m in enumerate(self.messages, 1) if n not in self.deleted]

    def _maildrop_status(self) -> str:
        visible = self._visible()
        return f"maildrop has {len(visible)} messages ({sum(m.size for _, m in visible)} octets)"

    @staticmethod
    def _number(token: bytes) -> int:
        if not token.isdigit() or len(token) > 9:
            raise Err("invalid number")
        return int(token)

    def _message(self, token: bytes) -> Tuple[int, Message]:
        n = self._number(token)
        if not 1 <= n <= len(self.messages):
            raise Err(f"no such message, only {len(self.messages)} messages in maildrop")
        if n in self.deleted:
            raise Err(f"message {n} already deleted")
        return n, self.messages[n - 1]

    @staticmethod
    def _args(arg: bytes, least: int, most: int) -> List[bytes]:
        args = arg.split()
        if not least <= len(args) <= most:
            raise Err("wrong number of arguments")
        return args

    def _login(self, user: str) -> bytes:
        """Open ``user``'s maildrop and enter the TRANSACTION state."""
        maildrop = self.server.mailbox_for(user)
        if not self.server.allow_concurrent:
            if not maildrop.try_lock():
                raise Err("[IN-USE] maildrop already locked by another session")
            self.locked = True
        self.maildrop = maildrop
        try:
            self.server._check_login_delay(user)
        except Err:
            self._release()
            raise
        self.messages = maildrop.snapshot()
        self.state = TRANSACTION
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
            raise Err("USER needs a name")
        self.pending_user = arg.strip().decode("utf-8", "surrogateescape")
        return self._ok("send PASS")

    def _cmd_pass(self, arg: bytes) -> bytes:
        user, self.pending_user = self.pending_user, None
        if user is None:
            raise Err("send USER first")
        # The password is the rest of the line: it may contain spaces.
        if not self._check_password(user, arg.decode("utf-8", "surrogateescape")):
            raise Err("[AUTH] Authentication failed.")
        return self._login(user)

    def _cmd_apop(self, arg: bytes) -> bytes:
        name, digest = (a.decode("utf-8", "surrogateescape") for a in self._args(arg, 2, 2))
        if self.timestamp is None:
            raise Err("APOP not available: the greeting has no timestamp")
        password = self.server.users.get(name)
        expected = hashlib.md5(f"{self.timestamp}{password}".encode("utf-8")).hexdigest()
        if password is None or not same_digest(expected, digest):
            raise Err("[AUTH] Authentication failed.")
        return self._login(name)

    def _cmd_auth(self, arg: bytes) -> bytes:
        args = self._args(arg, 0, 2)
        if not args:
            return self._multi("SASL mechanisms follow", [m.encode() for m in self.server.sasl])
        mechanism = args[0].decode("ascii", "replace").upper()
        if mechanism not in self.server.sasl:
            raise Err(f"Unsupported SASL mechanism {mechanism}")
        quirks = self.server.sasl_quirks
        steps = endless() if quirks.endless_continuations else MECHANISMS[mechanism](self)
        response = self._decode_sasl(args[1]) if len(args) == 2 else None
        try:
            challenge = next(steps)
            # Only client-first mechanisms take an initial response; LOGIN's (the user name)
            # is a common extension that real servers accept.
            if response is not None and challenge and mechanism != "LOGIN":
                raise Err(f"{mechanism} takes no initial response")
            first = True
            while True:
                if response is None:
                    text = base64.b64encode(challenge)
                    if first and not challenge and quirks.text_continuation is not None:
                        text = quirks.text_continuation
                    self._send(b"+ " + text + CRLF)
                    response = self._read_sasl_response()
                challenge, response, first = steps.send(response), None, False
        except StopIteration as done:
            user = done.value
        except (ValueError, KeyError):  # malformed response: bad UTF-8, missing fields, ...
            user = None
        if user is None:
            raise Err("[AUTH] Authentication failed.")
        return self._login(user)

    def _read_sasl_response(self) -> bytes:
        line, too_long = self.reader.readline(self.server.max_auth_line_length)
        if not line:
            raise Hangup()
        self.session.raw_lines.append(line)
        if too_long:
            raise Err("line too long")
        text = strip_eol(line)
        if text == b"*":
            raise Err("AUTH cancelled by the client")
        return self._decode_sasl(text)

    @staticmethod
    def _decode_sasl(text: bytes) -> bytes:
        if text == b"=":  # RFC 5034: an empty initial response
            return b""
        try:
            return base64.b64decode(text, validate=True)
        except ValueError:
            raise Err("invalid base64 in SASL response") from None

    def _cmd_stls(self, arg: bytes) -> bytes:
        if self.session.tls:
            raise Err("TLS already active")
        extra, self.stls_extra = self.stls_extra, b""
        self._send(b"+OK Begin TLS negotiation" + CRLF + extra)
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
        caps = self.server._capabilities(self.state == TRANSACTION, self.session.tls)
        return self._multi("Capability list follows", [c.encode("utf-8") for c in caps])

    def _cmd_quit(self, arg: bytes) -> bytes:
        if self.state == TRANSACTION:
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
            return f"+OK {n} {message.uid}".encode("utf-8", "surrogateescape") + CRLF
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
            return Message(message.uid, UTF8_PLACEHOLDER)
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

    _A, _T = (AUTHORIZATION,), (TRANSACTION,)  # the states a command is valid in
    _COMMANDS: Dict[str, Tuple[Callable[["Connection", bytes], bytes], Tuple[str, ...]]] = {
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
