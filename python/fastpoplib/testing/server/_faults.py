"""Faults: the test server's misbehaviours on demand (a reply replaced, a stall, a drip, a
hang-up, an endless body, plaintext injected after STLS), each bounded in time."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Optional

MAX_FAULT_SECONDS = 30.0
"""Upper bound on any fault's duration (stall, drip, endless stream)."""

GREETING = "greeting"  # lower case, so no client verb (always upper-cased) can match it

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
        self.on = GREETING if self.on.lower() == GREETING else self.on.upper()
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
        if self.on != trigger and not (self.on == "*" and trigger != GREETING):
            return False
        if self.arg is not None and arg.strip() != self.arg:
            return False
        with self._lock:
            self._seen += 1
            if self._seen <= self.skip or (self.times is not None and self.fired >= self.times):
                return False
            self.fired += 1
            return True
