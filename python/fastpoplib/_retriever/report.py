"""What a run of the retriever reports: progress while it works, each account's
:class:`Report`, :func:`describe` (a failure as a sentence and an exit code), the exit codes,
and :func:`printable` for everything shown that came from a server."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

from .._destinations import DestinationError
from .._store import LockBusy, StoreError
from ..exceptions import (
    AuthenticationError,
    CertificateVerificationError,
    ConnectionClosedError,
    InUseError,
    LoginDelayError,
    POP3ConnectionError,
    POP3TimeoutError,
    RemoteProtocolError,
    ServerError,
    SysTempError,
    TLSError,
    error_proto,
)
from ..oauth2 import OAuth2Error, SignInRequired, TokenStoreError
from .config import Account, ConfigError

# Exit codes of `fastpoplib fetch` and `ls` (documented in README and in --help).
EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, EXIT_AUTH, EXIT_CONNECTION, EXIT_BUSY = 0, 1, 2, 3, 4, 5
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it


class Progress:
    """What the retriever reports while it works; the CLI subclasses it with a progress line
    (``_progress.TerminalProgress``)."""

    def expect(self, nbytes: int, messages: int = 0) -> None:
        """More messages and bytes are about to be fetched (an account's new messages, sizes
        from LIST); each message is announced once per run."""

    def advance(self, nbytes: int) -> None:
        """One message done, ``nbytes`` long: stored, or recognised as stored already."""



def printable(text: str) -> str:
    """``text`` safe for a terminal: control characters (C0, DEL, C1: ``ESC[2J``,
    ``ESC]52;...BEL``) and bidirectional overrides shown as ``\\xNN``/``\\uNNNN`` escapes. Used
    on everything printed that came from a server or a message."""
    out = []
    for ch in text:
        if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") and ch not in "\u200d":
            out.append(f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return "".join(out)


def show_bytes(data: bytes) -> str:
    """Server bytes (a reply, a UID) as printable text; undecodable bytes as ``\\xNN``."""
    return printable(data.decode("utf-8", "backslashreplace"))



@dataclass
class Report:
    account: str
    fetched: int = 0
    bytes: int = 0
    skipped: int = 0
    deleted: int = 0
    stored_dir: str = ""
    state_dir: str = ""  # where the account's state (and watch's status record) lives
    login_delay: int | None = None  # seconds between logins the server asks for (RFC 2449 LOGIN-DELAY)
    error: str | None = None
    code: int = EXIT_OK
    warnings: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # messages that failed (exit code 1)
    pause: str | None = None  # why watch must stop polling the account: its destination refuses every message

    def fail(self, message: str, code: int) -> None:
        self.error, self.code = message, code


def describe(exc: BaseException, step: str, acct: Account) -> tuple[str, int]:
    """A sentence saying what failed and what to do, and the exit code."""
    if isinstance(exc, ConfigError):
        return str(exc), EXIT_USAGE
    if isinstance(exc, SignInRequired):
        return str(exc), EXIT_AUTH
    if isinstance(exc, OAuth2Error):
        return f"getting an OAuth2 access token failed: {exc}", EXIT_CONNECTION
    if isinstance(exc, (TokenStoreError, ImportError)):
        return str(exc), EXIT_USAGE
    if isinstance(exc, DestinationError):
        return str(exc), {"usage": EXIT_USAGE, "auth": EXIT_AUTH}.get(exc.kind, EXIT_CONNECTION)
    if isinstance(exc, LockBusy) and step == "locking the account":
        return f"{exc}; not fetching now (use --wait SECONDS to wait for it)", EXIT_BUSY
    if isinstance(exc, StoreError):  # a path, permission or state problem, or an mbox locked too long
        return str(exc), EXIT_PARTIAL if isinstance(exc, LockBusy) else EXIT_USAGE
    if isinstance(exc, AuthenticationError):
        if acct.auth == "oauth2":  # refused even with a freshly refreshed token
            advice = "check the user name, that POP is enabled for the mailbox, and the app's mail permission (scope)"
            return f"login refused: {show_bytes(exc.response)}; {advice}", EXIT_AUTH
        return f"login refused: {show_bytes(exc.response)}; check the user name and password", EXIT_AUTH
    if isinstance(exc, ServerError):
        code = EXIT_CONNECTION if step in ("connecting", "starting TLS", "logging in") else EXIT_PARTIAL
        advice = {
            SysTempError: "; try again later",
            InUseError: "; another client has the mailbox open, try again later",
            LoginDelayError: "; the server limits how often you may log in, try again later",
        }.get(type(exc), "")
        if step == "starting TLS":
            advice = "; the server does not offer STARTTLS: use --tls implicit (POP3S, port 995) if it offers that"
        return f"the server answered {show_bytes(exc.response)} while {step}{advice}", code
    if isinstance(exc, CertificateVerificationError):
        reason = _library_text(exc)
        if "not the pinned certificate" in reason:
            advice = "; if the server's certificate was replaced, check the new one and pass its fingerprint"
        elif "; trust " in str(exc):
            advice = (
                "; if that is your server's certificate (check with its administrator, or run `openssl x509"
                " -noout -fingerprint -sha256 -in CERT.pem` on the server), pass --fingerprint with that"
                " fingerprint; if the server uses a private CA, pass --cafile FILE (PEM)"
            )
        else:
            advice = ""
        return f"{reason}{advice}", EXIT_CONNECTION
    if isinstance(exc, TLSError) and "answered in plain text" in str(exc):
        return (
            f"the server {acct.host} answered in plain text, not TLS: is this a plain POP3 port?"
            " try --tls starttls (or --tls none --insecure), or the POP3S port (--port 995)",
            EXIT_CONNECTION,
        )
    if isinstance(exc, TLSError):
        return f"TLS failed: {_library_text(exc)}", EXIT_CONNECTION
    if isinstance(exc, POP3TimeoutError) and step == "connecting" and acct.tls != "implicit":
        # A POP3S server waits for the client's TLS hello: no greeting ever comes.
        return (
            f"no greeting from the server within {acct.timeout:g} s: if {acct.port or 110} is a POP3S"
            " port (995 usually), use --tls implicit; else try again later or raise --timeout",
            EXIT_CONNECTION,
        )
    if isinstance(exc, POP3TimeoutError):
        return (
            f"no answer from the server within {acct.timeout:g} s while {step}; try again later or raise --timeout",
            EXIT_CONNECTION,
        )
    if isinstance(exc, (POP3ConnectionError, ConnectionClosedError)):
        return (
            f"connection failed while {step}: {_library_text(exc)}; run the command again (what was stored is kept)",
            EXIT_CONNECTION,
        )
    if isinstance(exc, RemoteProtocolError):
        return f"the server sent a malformed reply while {step}: {printable(_library_text(exc))}", EXIT_PARTIAL
    if isinstance(exc, error_proto):
        if step == "starting TLS":
            return (
                "the server does not offer STARTTLS: use --tls implicit (POP3S, port 995) if it offers that",
                EXIT_CONNECTION,
            )
        return f"{step} failed: {_library_text(exc)}", EXIT_PARTIAL
    if isinstance(exc, OSError) and step == "connecting" and acct.cafile:
        return f"cannot read the CA file {acct.cafile}: {exc.strerror or exc}; check --cafile", EXIT_USAGE
    if isinstance(exc, ValueError) and step == "connecting" and acct.cafile:
        return f"the CA file {acct.cafile} holds no usable PEM certificate: {exc}; check --cafile", EXIT_USAGE
    if isinstance(exc, OSError):
        return f"{step} failed: {exc.strerror or exc}", EXIT_PARTIAL
    return f"unexpected error while {step}: {type(exc).__name__}: {exc}", EXIT_PARTIAL


def _library_text(exc: BaseException) -> str:
    """The library's message without its advice for Python callers (certificate errors end in
    "; trust ... with cafile=... or context=...", a lost connection in "; open a new
    connection"): the CLI gives its own (``--cafile``, run the command again)."""
    text = exc.args[0] if exc.args and isinstance(exc.args[0], str) else str(exc)
    return _LIBRARY_ADVICE.sub("", text.split("; trust ")[0])


_LIBRARY_ADVICE = re.compile(r"; open a new (connection|one)\b[^;]*$")



def exit_code(reports: list[Report]) -> int:
    codes = {r.code for r in reports}
    if codes == {EXIT_OK}:
        return EXIT_OK
    if len(codes) == 1:
        return codes.pop()
    return EXIT_PARTIAL
