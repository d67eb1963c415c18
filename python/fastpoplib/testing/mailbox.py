"""The maildrop model of the test server: messages, stable UIDs and a maildrop lock.

Messages are stored the way POP3 sends them: every line ends with CRLF. A message's size is
therefore exactly the octet count RFC 1939 asks ``LIST`` and ``STAT`` to report, and exactly
what a client counting CRLF-terminated lines (before dot-stuffing) sees.
"""

from __future__ import annotations

import base64
import random
import re
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime, formataddr
from typing import Iterable, Iterator, List, Optional, Sequence

__all__ = ["Message", "Mailbox", "sample_mailbox"]

# RFC 1939 section 7: a unique-id is 1 to 70 characters in the range 0x21 to 0x7E.
_UID_RE = re.compile(r"[\x21-\x7e]{1,70}\Z")


def _to_crlf(raw: bytes) -> bytes:
    """``raw`` with every line ending (LF or CRLF) made CRLF, the last line terminated too."""
    if not raw:
        return b""
    lines = raw.replace(b"\r\n", b"\n").split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return b"".join(line + b"\r\n" for line in lines)


@dataclass(frozen=True)
class Message:
    """One message of a maildrop.

    Attributes:
        uid: its unique-id, as ``UIDL`` reports it.
        data: the message with CRLF line endings, not dot-stuffed.
    """

    uid: str
    data: bytes

    @property
    def size(self) -> int:
        """Octet count reported by ``LIST`` and ``STAT`` (RFC 1939: CRLF line endings)."""
        return len(self.data)

    @property
    def lines(self) -> List[bytes]:
        """The message's lines without their CRLF, as a client sees them after unstuffing."""
        return self.data.split(b"\r\n")[:-1] if self.data else []

    def top(self, body_lines: int) -> List[bytes]:
        """What ``TOP n body_lines`` returns: the header, the blank line, then that many body lines."""
        lines = self.lines
        try:
            header_end = lines.index(b"") + 1
        except ValueError:  # no body at all: the whole message is header
            return lines
        return lines[: header_end + body_lines]


class Mailbox:
    """A thread-safe maildrop shared by the sessions of a :class:`POP3TestServer`.

    ``messages`` are raw RFC 5322 messages with LF or CRLF line endings; ``uids`` gives their
    unique-ids (default ``uid-0001``, ``uid-0002``, ...). Mail can be added while a server runs;
    a session sees the maildrop as it was when the session logged in (RFC 1939 message numbers
    are stable for a session).

    The maildrop lock (:meth:`try_lock` / :meth:`unlock`) is what makes a second concurrent login
    get ``-ERR [IN-USE]``; a test may hold it itself to simulate another client.

    ``any_uids=True`` accepts the UIDs of buggy servers: duplicates, and non-ASCII ones (a str
    with surrogate escapes, e.g. ``b"msg-\xe9".decode("utf-8", "surrogateescape")``, is sent
    as those raw bytes).
    """

    def __init__(
        self, messages: Iterable[bytes] = (), uids: Optional[Sequence[str]] = None, *, any_uids: bool = False
    ) -> None:
        messages = list(messages)
        if uids is not None and len(uids) != len(messages):
            raise ValueError(f"{len(uids)} uids given for {len(messages)} messages")
        self._lock = threading.Lock()
        self._maildrop_lock = threading.Lock()
        self._messages: List[Message] = []
        self._counter = 0
        self.any_uids = any_uids
        for i, raw in enumerate(messages):
            self.add(raw, None if uids is None else uids[i])

    def add(self, raw: bytes, uid: Optional[str] = None) -> Message:
        """Deliver a message (LF or CRLF line endings) and return it; ``uid`` must be unique."""
        if not isinstance(raw, (bytes, bytearray)):
            raise TypeError(f"a message must be bytes, not {type(raw).__name__}")
        with self._lock:
            if uid is None:
                taken = {m.uid for m in self._messages}
                while uid is None or uid in taken:
                    self._counter += 1
                    uid = f"uid-{self._counter:04d}"
            elif self.any_uids:
                if not uid or any(ch.isspace() for ch in uid):
                    raise ValueError(f"invalid unique-id {uid!r}: empty or with white space")
            elif not _UID_RE.match(uid):
                raise ValueError(f"invalid unique-id {uid!r}: 1-70 printable ASCII characters, no spaces")
            elif any(m.uid == uid for m in self._messages):
                raise ValueError(f"duplicate unique-id {uid!r}")
            message = Message(uid, _to_crlf(bytes(raw)))
            self._messages.append(message)
            return message

    def snapshot(self) -> List[Message]:
        """The current messages, in order (message number ``n`` is ``snapshot()[n - 1]``)."""
        with self._lock:
            return list(self._messages)

    def remove(self, uids: Iterable[str]) -> int:
        """Expunge the messages with these unique-ids; returns how many were removed."""
        gone = set(uids)
        with self._lock:
            before = len(self._messages)
            self._messages = [m for m in self._messages if m.uid not in gone]
            return before - len(self._messages)

    def remove_messages(self, messages: Iterable[Message]) -> int:
        """Expunge exactly these messages (by identity: UIDs may repeat with ``any_uids``)."""
        gone = {id(m) for m in messages}
        with self._lock:
            before = len(self._messages)
            self._messages = [m for m in self._messages if id(m) not in gone]
            return before - len(self._messages)

    @property
    def messages(self) -> List[bytes]:
        """The messages' data (CRLF line endings), in order."""
        return [m.data for m in self.snapshot()]

    @property
    def uids(self) -> List[str]:
        """The messages' unique-ids, in order."""
        return [m.uid for m in self.snapshot()]

    @property
    def total_size(self) -> int:
        """Sum of the message sizes, as ``STAT`` reports it."""
        return sum(m.size for m in self.snapshot())

    def __len__(self) -> int:
        with self._lock:
            return len(self._messages)

    def __iter__(self) -> Iterator[Message]:
        return iter(self.snapshot())

    def __getitem__(self, index: int) -> Message:
        """The message at ``index`` (0-based: message number 1 is ``mailbox[0]``)."""
        with self._lock:
            return self._messages[index]

    def try_lock(self) -> bool:
        """Take the maildrop lock without waiting; ``False`` if a session already holds it."""
        return self._maildrop_lock.acquire(blocking=False)

    def unlock(self) -> None:
        """Release the maildrop lock taken by :meth:`try_lock`."""
        self._maildrop_lock.release()

    @property
    def locked(self) -> bool:
        """Whether a session (or a test) holds the maildrop lock."""
        return self._maildrop_lock.locked()

    def __repr__(self) -> str:
        return f"<Mailbox {len(self)} messages, {self.total_size} octets>"


# --- sample mailbox ---------------------------------------------------------------------------

_NAMES = [
    ("Alice Example", "alice@example.org"),
    ("Bob Builder", "bob@example.net"),
    ("Carol Çelik", "carol@example.com"),
    ("Dmitri Иванов", "dmitri@example.ru"),
    ("Eve Adams", "eve@example.org"),
]
_WORDS = (
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut "
    "labore et dolore magna aliqua quarterly report meeting invoice schedule update draft review"
).split()
_UTF8_LINES = [
    "Grüße aus München, wir sehen uns übermorgen.",
    "Привет! Как дела? Всё хорошо.",
    "日本語のテキストも届きますように。",
    "Ça va très bien, merci — à bientôt.",
    "Emoji survive too: \U0001f4ec \u2709\ufe0f",
]


def _sentence(rng: random.Random, words: int) -> str:
    text = " ".join(rng.choice(_WORDS) for _ in range(words))
    return text[0].upper() + text[1:] + "."


def _paragraph(rng: random.Random, lines: int) -> List[str]:
    return [_sentence(rng, rng.randint(6, 11)) for _ in range(lines)]


def _header(rng: random.Random, n: int, seed: int, subject: str, date: datetime) -> List[str]:
    (from_name, from_addr), (to_name, to_addr) = rng.sample(_NAMES, 2)
    return [
        f"Return-Path: <{from_addr}>",
        f"From: {formataddr((from_name, from_addr))}",
        f"To: {formataddr((to_name, to_addr))}",
        f"Subject: {subject}",
        f"Date: {format_datetime(date)}",
        f"Message-ID: <{seed}.{n}.{rng.getrandbits(32):08x}@example.org>",
        "MIME-Version: 1.0",
    ]


def _plain(rng: random.Random, boundary: str) -> List[str]:
    return [
        "Content-Type: text/plain; charset=us-ascii",
        "Content-Transfer-Encoding: 7bit",
        "",
        *_paragraph(rng, rng.randint(3, 8)),
    ]


def _attachment(rng: random.Random, boundary: str) -> List[str]:
    payload = bytes(rng.getrandbits(8) for _ in range(rng.randint(300, 1500)))
    encoded = base64.b64encode(payload).decode("ascii")
    return [
        f"Content-Type: multipart/mixed; boundary=\"{boundary}\"",
        "",
        "This is a multi-part message in MIME format.",
        f"--{boundary}",
        "Content-Type: text/plain; charset=us-ascii",
        "",
        *_paragraph(rng, 3),
        f"--{boundary}",
        "Content-Type: application/octet-stream; name=\"data.bin\"",
        "Content-Transfer-Encoding: base64",
        "Content-Disposition: attachment; filename=\"data.bin\"",
        "",
        *[encoded[i : i + 76] for i in range(0, len(encoded), 76)],
        f"--{boundary}--",
    ]


def _dot_lines(rng: random.Random, boundary: str) -> List[str]:
    # Lines a server must dot-stuff: a lone dot, a leading dot, two leading dots.
    return [
        "Content-Type: text/plain; charset=us-ascii",
        "",
        "Lines starting with a dot follow.",
        ".",
        ".hidden line",
        "..two dots",
        "...",
        _sentence(rng, 8),
        ".",
    ]


def _long_line(rng: random.Random, boundary: str) -> List[str]:
    # RFC 5322's limit: 998 characters on a line, excluding CRLF.
    long = "".join(rng.choice("abcdefghij") for _ in range(998))
    return ["Content-Type: text/plain; charset=us-ascii", "", "A 998-character line follows.", long, "End."]


def _utf8(rng: random.Random, boundary: str) -> List[str]:
    return [
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 8bit",
        "",
        *rng.sample(_UTF8_LINES, 3),
        _sentence(rng, 6),
    ]


def _alternative(rng: random.Random, boundary: str) -> List[str]:
    text = _paragraph(rng, 2)
    return [
        f"Content-Type: multipart/alternative; boundary=\"{boundary}\"",
        "",
        f"--{boundary}",
        "Content-Type: text/plain; charset=us-ascii",
        "",
        *text,
        f"--{boundary}",
        "Content-Type: text/html; charset=us-ascii",
        "",
        "<html><body>",
        *[f"<p>{line}</p>" for line in text],
        "</body></html>",
        f"--{boundary}--",
    ]


# (kind, subject, body builder); the order is documented in sample_mailbox.
_KINDS = (
    ("plain", "Quarterly report", _plain),
    ("attachment", "Data attached", _attachment),
    ("dots", "Dots at line starts", _dot_lines),
    ("long line", "A very long line", _long_line),
    ("utf-8", "=?utf-8?q?Gr=C3=BC=C3=9Fe?=", _utf8),
    ("alternative", "Newsletter", _alternative),
)


def sample_mailbox(n: int = 12, seed: int = 0) -> Mailbox:
    """A realistic mailbox of ``n`` messages, identical for identical ``(n, seed)``.

    Messages cycle through six kinds, so the first six cover them all, in this order:
    plain text; ``multipart/mixed`` with a base64 attachment; lines starting with ``.``
    (which the server must dot-stuff); a 998-character line; an 8-bit UTF-8 body;
    ``multipart/alternative``. Every message has From, To, Subject, Date, Message-ID and
    MIME headers, LF line endings in the source (the mailbox stores CRLF).
    """
    if n < 0:
        raise ValueError("n must be >= 0")
    rng = random.Random(seed)
    start = datetime(2024, 3, 1, 9, 0, tzinfo=timezone.utc)
    messages = []
    for i in range(n):
        _, subject, build = _KINDS[i % len(_KINDS)]
        if i >= len(_KINDS):
            subject += f" #{i // len(_KINDS) + 1}"
        date = start + timedelta(hours=i * 7, minutes=rng.randint(0, 59))
        boundary = f"=_boundary_{seed}_{i}_{rng.getrandbits(24):06x}"
        lines = _header(rng, i + 1, seed, subject, date) + build(rng, boundary)
        messages.append(("\n".join(lines) + "\n").encode("utf-8"))
    return Mailbox(messages)
