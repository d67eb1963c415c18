"""The retriever behind ``fastpoplib fetch`` and ``fastpoplib ls``: accounts fetched
concurrently (asyncio), new messages found by UIDL (exact UID bytes plus LIST size), retrieved
pipelined (large ones streamed to disk), stored durably off the event loop, and deleted on the
server only once stored (see ``_store`` for why a crash at any point loses and duplicates
nothing).

Every failure is caught per account (or per message) and reported as a sentence naming what
failed and what to do; one account never stops the others.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import netrc
import os
import shlex
import subprocess
import threading
import unicodedata
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

from . import _aio, _tls
from .oauth2 import OAuth2ConfigError, OAuth2Error, SignInRequired, TokenStoreError, token_source
from ._destinations import (
    DestinationError,
    ImapDestination,
    ImapURL,
    LmtpDestination,
    MdaDestination,
    imap_state_dir,
    lmtp_state_dir,
    mda_state_dir,
)
from ._store import (
    AccountLock,
    Destination,
    DigestIndex,
    LockBusy,
    Maildir,
    Mbox,
    Outcome,
    Refusal,
    State,
    StoreError,
    digest_key,
    uid_key,
)
from .exceptions import (
    AuthenticationError,
    CertificateVerificationError,
    ConnectionClosedError,
    DeleteError,
    InUseError,
    LoginDelayError,
    POP3ConnectionError,
    POP3Error,
    POP3TimeoutError,
    RemoteProtocolError,
    ServerError,
    SysTempError,
    TLSError,
    error_proto,
)

# Exit codes of `fastpoplib fetch` and `ls` (documented in README and in --help).
EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, EXIT_AUTH, EXIT_CONNECTION, EXIT_BUSY = 0, 1, 2, 3, 4, 5
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it

SAVE_EVERY = 50  # messages between state saves while fetching (always saved before any DELE)

# The longest timeout or wait accepted, in seconds (what a socket timeout can hold).
MAX_SECONDS = 9.2e9
STREAM_ABOVE = 4 << 20  # LIST size above which a message is streamed to disk, not held in memory
MAX_SESSIONS = 3  # sessions per account and run: one lost on a broken or stalled message is resumed
RESUME_WAITS = (0.25, 0.5, 1.0, 2.0)  # seconds between logins refused [IN-USE] on resuming
PERSISTENT_RUNS = 3  # runs in a row a message fails in before it is reported as failing persistently

log = logging.getLogger("fastpoplib.retriever")


class Progress:
    """What the retriever reports while it works; the CLI subclasses it with a progress line
    (``_progress.TerminalProgress``)."""

    def expect(self, nbytes: int, messages: int = 0) -> None:
        """More messages and bytes are about to be fetched (an account's new messages, sizes
        from LIST); each message is announced once per run."""

    def advance(self, nbytes: int) -> None:
        """One message done, ``nbytes`` long: stored, or recognised as stored already."""


class ConfigError(Exception):
    """A bad option or configuration file (exit code 2)."""


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


# Config-file keys of an account that signs in with OAuth2 (`auth = "oauth2"`; see fastpoplib.oauth2).
OAUTH2_KEYS = (
    "auth",
    "oauth2_provider",
    "oauth2_client_id",
    "oauth2_client_secret",
    "oauth2_scope",
    "oauth2_tenant",
    "oauth2_issuer",
    "oauth2_token_endpoint",
    "oauth2_device_endpoint",
    "oauth2_authorization_endpoint",
)

# field: (kind, minimum, maximum); kinds: str, bool, int (whole number), float (seconds);
# a float minimum is exclusive for the timeout and interval, inclusive otherwise
_SETTINGS = {
    "host": (str, None, None),
    "user": (str, None, None),
    "name": (str, None, None),
    "port": (int, 1, 65535),
    "tls": (str, None, None),
    "insecure": (bool, None, None),
    "cafile": (str, None, None),
    "fingerprint": (str, None, None),
    "password_env": (str, None, None),
    "password_command": (str, None, None),
    "netrc_file": (str, None, None),
    "oauth2_token_command": (str, None, None),
    **{key: (str, None, None) for key in OAUTH2_KEYS},
    "maildir": (str, None, None),
    "mbox": (str, None, None),
    "imap": (str, None, None),
    "imap_password_env": (str, None, None),
    "imap_password_command": (str, None, None),
    "imap_oauth2_token_command": (str, None, None),
    "imap_auth": (str, None, None),
    "imap_cafile": (str, None, None),
    "lmtp": (str, None, None),
    "lmtp_recipient": (str, None, None),
    "mda": (str, None, None),
    "delete": (bool, None, None),
    "max_size": (int, 1, None),
    "max_messages": (int, 1, None),
    "timeout": (float, 0, None),
    "wait": (float, 0, None),
    "mbox_lock_wait": (float, 0, None),
    "interval": (float, 0, None),
}


def _check_setting(name: str, value: Any) -> None:
    kind, least, most = _SETTINGS[name]
    where = name if name in ("name", "imap_auth") or name in OAUTH2_KEYS else f"{name} (--{name.replace('_', '-')})"  # config-file keys only
    if kind is str and not isinstance(value, str):
        raise ConfigError(f"{where} must be a string, not {value!r}")
    if kind is bool and not isinstance(value, bool):
        raise ConfigError(f"{where} must be true or false, not {value!r}")
    if kind in (int, float):
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if kind is int and not isinstance(value, int):
            number = False
        if not number or not math.isfinite(value):
            what = "a whole number" if kind is int else "a number of seconds"
            raise ConfigError(f"{where} must be {what}, not {value!r}")
        if kind is int and (value < least or (most is not None and value > most)):
            bounds = f"from {least} to {most}" if most is not None else f"of at least {least}"
            raise ConfigError(f"{where} must be a whole number {bounds}, not {value!r}")
        exclusive = name in ("timeout", "interval")  # 0 would mean no time at all
        if kind is float and (value < least or (exclusive and value == least)):
            relation = "greater than" if exclusive else "at least"
            raise ConfigError(f"{where} must be {relation} {least} seconds, not {value!r}")
        if kind is float and value > MAX_SECONDS:
            raise ConfigError(f"{where} must be at most {MAX_SECONDS:g} seconds, not {value!r}")


@dataclass
class Account:
    host: str
    user: str
    name: str = ""
    port: int | None = None
    tls: str = "implicit"  # implicit | starttls | none
    insecure: bool = False  # allow a clear-text password and skip nothing else
    cafile: str | None = None
    fingerprint: str | None = None  # SHA256:... of the server's certificate, pinned
    password_env: str | None = None
    password_command: str | None = None
    netrc_file: str | None = None
    oauth2_token_command: str | None = None
    auth: str = "password"  # or "oauth2": tokens from `fastpoplib auth login` (the oauth2_* keys)
    oauth2_provider: str | None = None
    oauth2_client_id: str | None = None
    oauth2_client_secret: str | None = field(default=None, repr=False)  # not confidential for desktop apps, still never shown
    oauth2_scope: str | None = None
    oauth2_tenant: str | None = None
    oauth2_issuer: str | None = None
    oauth2_token_endpoint: str | None = None
    oauth2_device_endpoint: str | None = None
    oauth2_authorization_endpoint: str | None = None
    maildir: str | None = None
    mbox: str | None = None
    imap: str | None = None  # imaps://USER@HOST[:PORT]/FOLDER or imap://... (STARTTLS)
    imap_password_env: str | None = None
    imap_password_command: str | None = None
    imap_oauth2_token_command: str | None = None
    imap_auth: str | None = None  # "oauth2": the IMAP login uses this account's stored OAuth2 tokens too
    imap_cafile: str | None = None
    lmtp: str | None = None  # HOST:PORT or unix:PATH
    lmtp_recipient: str | None = None
    mda: str | None = None  # a command: the message on its standard input
    delete: bool = False
    max_size: int | None = None
    max_messages: int | None = None
    timeout: float = 60.0
    wait: float = 0.0  # seconds to wait for another run of this account to finish
    mbox_lock_wait: float = 60.0  # seconds to wait for another program's mbox locks
    interval: float = 300.0  # watch: seconds between polls (about what Gmail's fetcher did)
    # Typed at the CLI's prompt (never a config key or an option): see cli._ask_passwords.
    typed_password: str | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in _SETTINGS:
            value = getattr(self, name)
            if value is not None:
                _check_setting(name, value)
        if self.tls not in ("implicit", "starttls", "none"):
            raise ConfigError(f"tls must be implicit, starttls or none, not {self.tls!r}")
        if self.tls == "none" and not self.insecure:
            raise ConfigError(f"{self.label}: tls = none sends the password in clear text; add --insecure to allow it")
        chosen = [name for name in DESTINATIONS if getattr(self, name)]
        if len(chosen) > 1:
            given = " and ".join(f"--{name}" for name in chosen)
            raise ConfigError(f"{self.label}: an account has one destination; choose one of {given}")
        if self.imap_auth is not None and self.imap_auth != "oauth2":
            raise ConfigError(f"{self.label}: imap_auth must be oauth2 (the IMAP login with this account's stored OAuth2 tokens), not {self.imap_auth!r}")
        if self.imap_auth and self.auth != "oauth2":
            raise ConfigError(
                f"{self.label}: imap_auth = \"oauth2\" uses this account's OAuth2 sign-in; set auth = \"oauth2\" too, or use imap_oauth2_token_command"
            )
        imap_sources = [self.imap_password_env, self.imap_password_command, self.imap_oauth2_token_command, self.imap_auth]
        if self.imap and sum(source is not None for source in imap_sources) != 1:
            raise ConfigError(
                f"{self.label}: --imap needs exactly one of --imap-password-env, --imap-password-command,"
                " --imap-oauth2-token-command and imap_auth = \"oauth2\""
            )
        if self.lmtp and not self.lmtp_recipient:
            raise ConfigError(f"{self.label}: --lmtp needs --lmtp-recipient ADDRESS (the mailbox to deliver to)")
        for name in ("imap_password_env", "imap_password_command", "imap_oauth2_token_command", "imap_auth", "imap_cafile", "lmtp_recipient"):
            if getattr(self, name) is not None and not getattr(self, name.split("_")[0]):
                option = name.split("_")[0]
                given = name if name == "imap_auth" else f"--{name.replace('_', '-')}"
                raise ConfigError(f"{self.label}: {given} is for the --{option} destination; give --{option} too")
        if self.fingerprint is not None:
            if self.cafile is not None:
                raise ConfigError(f"{self.label}: choose --fingerprint or --cafile, not both")
            try:
                _tls.pin(self.fingerprint)
            except ValueError as exc:
                raise ConfigError(f"fingerprint (--fingerprint): {exc}") from None
        if self.auth not in ("password", "oauth2"):
            raise ConfigError(f"{self.label}: auth must be password or oauth2, not {self.auth!r}")
        if self.auth == "oauth2" and self.oauth2_token_command:
            raise ConfigError(f"{self.label}: choose auth = \"oauth2\" or oauth2_token_command, not both")
        self.name = self.name or self.label

    @property
    def label(self) -> str:
        return f"{self.user}@{self.host}" + (f":{self.port}" if self.port else "")

    @property
    def identity(self) -> str:
        """Whose mail it is, for store keys, state and lock: the port made explicit, so that
        ``--port 995`` and the default name the same account."""
        return f"{self.user}@{self.host.lower()}:{self.port or (995 if self.tls == 'implicit' else 110)}"

    def has_secret_source(self) -> bool:
        """Whether :meth:`secret` has somewhere to read from without asking the user."""
        if self.auth == "oauth2" or self.oauth2_token_command or self.password_command or self.password_env:
            return True
        try:
            auth = netrc.netrc(self.netrc_file).authenticators(self.host)
        except FileNotFoundError:
            return False
        except (OSError, netrc.NetrcParseError):
            return True  # secret() reports the unreadable file
        return auth is not None and auth[2] is not None

    def secret(self) -> dict[str, Any]:
        """``{"password": ...}``, ``{"oauth2_token": ...}`` or ``{"oauth2": token source}``
        from the configured source or typed at the prompt; never from the command line itself."""
        if self.auth == "oauth2":
            try:
                return {"oauth2": token_source(self)}
            except OAuth2ConfigError as exc:
                raise ConfigError(f"{self.label}: {exc}") from None
        if self.typed_password is not None:
            return {"password": self.typed_password}
        if self.oauth2_token_command:
            return {"oauth2_token": _run_secret_command(self.oauth2_token_command, "--oauth2-token-command")}
        if self.password_command:
            return {"password": _run_secret_command(self.password_command, "--password-command")}
        if self.password_env:
            value = os.environ.get(self.password_env)
            if value is None:
                raise ConfigError(f"the environment variable {self.password_env} (--password-env) is not set")
            return {"password": value}
        try:
            auth = netrc.netrc(self.netrc_file).authenticators(self.host)
        except FileNotFoundError:
            raise ConfigError(_NO_PASSWORD.format(host=self.host)) from None
        except (OSError, netrc.NetrcParseError) as exc:
            raise ConfigError(f"cannot read the netrc file: {exc}") from None
        if auth is None or auth[2] is None:
            raise ConfigError(_NO_PASSWORD.format(host=self.host))
        return {"password": auth[2]}

    def imap_secret(self) -> dict[str, str]:
        """The IMAP destination's ``{"password": ...}`` or ``{"oauth2_token": ...}``; with
        ``imap_auth = "oauth2"`` a fresh access token from the account's stored sign-in (refreshed
        when it expires within 5 minutes). Raises SignInRequired when the user must sign in again."""
        if self.imap_auth == "oauth2":
            try:
                return {"oauth2_token": token_source(self)()}
            except OAuth2ConfigError as exc:
                raise ConfigError(f"{self.label}: {exc}") from None
        if self.imap_oauth2_token_command:
            return {"oauth2_token": _run_secret_command(self.imap_oauth2_token_command, "--imap-oauth2-token-command")}
        if self.imap_password_command:
            return {"password": _run_secret_command(self.imap_password_command, "--imap-password-command")}
        assert self.imap_password_env is not None  # one source is required (__post_init__)
        value = os.environ.get(self.imap_password_env)
        if value is None:
            raise ConfigError(f"the environment variable {self.imap_password_env} (--imap-password-env) is not set")
        return {"password": value}


DESTINATIONS = ("maildir", "mbox", "imap", "lmtp", "mda")  # an account has one


_NO_PASSWORD = (
    "no password for {host}: give --password-env VAR, --password-command CMD, or a netrc entry for {host}"
    " (~/.netrc or --netrc-file), or run fastpoplib on a terminal to type it"
)


def _run_secret_command(command: str, option: str) -> str:
    # The command line may hold no secret, but its output might: never echo the output.
    try:
        out = subprocess.run(shlex.split(command), capture_output=True, timeout=60, check=False)
    except OSError as exc:
        raise ConfigError(f"the {option} command could not be run ({exc.strerror}); check {option}") from None
    except subprocess.TimeoutExpired:
        raise ConfigError(f"the {option} command did not finish within 60 s") from None
    except ValueError as exc:  # shlex: unbalanced quotes
        raise ConfigError(f"the {option} command cannot be parsed: {exc}") from None
    if out.returncode != 0:
        raise ConfigError(f"the {option} command failed with exit status {out.returncode}; run it yourself to see why")
    try:
        text = out.stdout.decode("utf-8")
    except UnicodeDecodeError:
        # Its message would show a byte of the secret and where it is: say only what is wrong.
        raise ConfigError(f"the {option} command's output is not UTF-8; secrets are read as UTF-8") from None
    lines = text.splitlines()
    if not lines or not lines[0]:
        raise ConfigError(f"the {option} command printed nothing")
    return lines[0]


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
    if isinstance(exc, POP3TimeoutError):
        return (
            f"no answer from the server within {acct.timeout:g} s while {step}; try again later or raise --timeout",
            EXIT_CONNECTION,
        )
    if isinstance(exc, (POP3ConnectionError, ConnectionClosedError)):
        return f"connection failed while {step}: {_library_text(exc)}", EXIT_CONNECTION
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
    "; trust ... with cafile=... or context=..."): the CLI gives its own (``--cafile``)."""
    text = exc.args[0] if exc.args and isinstance(exc.args[0], str) else str(exc)
    return text.split("; trust ")[0]


def _store_for(acct: Account, default_maildir: Path) -> Destination:
    """The account's one destination, opened (an IMAP or LMTP server connected and logged in)."""
    if acct.imap:
        return ImapDestination(
            ImapURL(acct.imap),
            acct.imap_secret,
            acct.identity,
            cafile=acct.imap_cafile,
            insecure=acct.insecure,
            timeout=acct.timeout,
        )
    if acct.lmtp:
        assert acct.lmtp_recipient is not None  # required with lmtp (__post_init__)
        return LmtpDestination(acct.lmtp, acct.lmtp_recipient, acct.identity, timeout=acct.timeout)
    if acct.mda:
        return MdaDestination(acct.mda, acct.identity, timeout=acct.timeout)
    path = Path(acct.mbox or acct.maildir or default_maildir).expanduser()
    try:
        if acct.mbox:
            return Mbox(path, lock_wait=acct.mbox_lock_wait)
        return Maildir(path)
    except (OSError, RuntimeError) as exc:  # resolving the path: a symlink loop, a permission
        raise StoreError(f"cannot use {path}: {getattr(exc, 'strerror', None) or exc}") from None


def state_dir_of(acct: Account, default_maildir: Path) -> Path:
    """Where the account's state and lock live, without logging in to its destination."""
    if acct.imap:
        return imap_state_dir(ImapURL(acct.imap))
    if acct.lmtp:
        assert acct.lmtp_recipient is not None  # required with lmtp (__post_init__)
        return lmtp_state_dir(acct.lmtp, acct.lmtp_recipient)
    if acct.mda:
        return mda_state_dir(acct.mda)
    return Path(_store_for(acct, default_maildir).state_dir)


class _Step:
    """What the account is doing now, for error messages."""

    def __init__(self) -> None:
        self.now = "starting"


@asynccontextmanager
async def _session(acct: Account, secret: dict[str, Any], step: _Step) -> AsyncIterator[Any]:
    """A logged-in connection; closed at once (no QUIT) if the block raises."""
    step.now = "connecting"
    connecting: Any
    if acct.tls == "implicit":
        connecting = _aio.AsyncPOP3_SSL.connect(
            acct.host, acct.port or 995, acct.timeout, cafile=acct.cafile, fingerprint=acct.fingerprint
        )
    else:
        connecting = _aio.AsyncPOP3.connect(acct.host, acct.port or 110, acct.timeout)
    async with connecting as pop:
        if acct.tls == "starttls":
            step.now = "starting TLS"
            await pop.stls(cafile=acct.cafile, fingerprint=acct.fingerprint)
        step.now = "reading the capabilities (CAPA)"
        await _enable_utf8(pop)
        step.now = "logging in"
        await pop.login(
            acct.user, secret.get("password"), oauth2_token=secret.get("oauth2_token"), oauth2=secret.get("oauth2"), allow_insecure=acct.insecure
        )
        yield pop


async def _enable_utf8(pop: Any) -> None:
    """RFC 6856 §2: a server that advertises UTF8 may replace a message with non-ASCII
    headers by a placeholder for a client that did not enable it. Enabled when advertised, in
    the AUTHORIZATION state as the RFC requires; never otherwise (some servers hang up on an
    unadvertised UTF8). Login reuses this CAPA: no extra round trip."""
    try:
        caps = await pop.capa()
    except RemoteProtocolError:
        raise
    except error_proto:
        return  # no CAPA (RFC 2449): nothing is advertised
    if caps.utf8:
        try:
            await pop.utf8()
        except ServerError as exc:
            log.info("the server advertised UTF8 but refused it (%s); fetching without it", show_bytes(exc.response))


@dataclass
class _Msg:
    number: int
    size: int
    uid: bytes | None
    key: str | None  # the store key; for a message without UID known once retrieved

    def name(self) -> str:
        uid = f" (UID {show_bytes(self.uid)})" if self.uid is not None else ""
        return f"message {self.number}{uid}"

    @property
    def ident(self) -> str | int:
        """Who it is across the sessions of a run: its key, or without one its number (stable
        while no session of the run has reached QUIT)."""
        return self.key if self.key is not None else self.number


async def _listing(pop: Any, acct: Account) -> list[_Msg]:
    """LIST + UIDL, with UIDs as the exact bytes the server sent. Only a server that does not
    support UIDL has no UIDs; a UIDL that fails on a server that has it raises ServerError
    (a temporary error: taking it for "no UIDL" would fetch everything again)."""
    infos = await pop.messages()
    uids: dict[int, bytes] = {}
    if infos and not _lacks_uidl(pop):
        # messages() decodes UIDs for display (and hides a failing UIDL); the store needs them
        # byte-exact, and a failure must be seen.
        try:
            _, lines, _ = await pop.uidl()
        except ServerError as exc:
            if _advertises(pop, "UIDL") or _has_response_code(exc):
                raise
            lines = []  # no CAPA, a plain -ERR: a server without UIDL (RFC 1939 makes it optional)
        for line in lines:
            parts = line.split(None, 1)
            if len(parts) == 2 and parts[0].isdigit():
                uids[int(parts[0])] = parts[1].strip()
    msgs = []
    for info in infos:
        uid = uids.get(info.number)
        msgs.append(
            _Msg(info.number, info.size, uid, uid_key(acct.identity, uid, info.size) if uid is not None else None)
        )
    # A (UID, size) listed twice (a server bug) identifies neither message: those are told
    # apart by content digest, as on a server without UIDL.
    seen: dict[str, int] = {}
    for m in msgs:
        if m.key is not None:
            seen[m.key] = seen.get(m.key, 0) + 1
    for m in msgs:
        if m.key is not None and seen[m.key] > 1:
            m.key = None
    return msgs


def _lacks_uidl(pop: Any) -> bool:
    """The server's CAPA (RFC 2449) says it has no UIDL."""
    caps = pop.capabilities
    return caps is not None and len(caps) > 0 and not caps.has("UIDL")


def _advertises(pop: Any, name: str) -> bool:
    caps = pop.capabilities
    return caps is not None and caps.has(name)


def _has_response_code(exc: ServerError) -> bool:
    """An ``-ERR [CODE]`` reply (RFC 2449 §8, RFC 3206): a failure, not a missing command."""
    return exc.response[5:6] == b"["


class _Fetch:
    """One account's run: up to MAX_SESSIONS sessions, sharing the state and the outcome."""

    def __init__(self, acct: Account, store: Any, state: State, report: Report, progress: Progress) -> None:
        self.acct, self.store, self.state, self.report, self.progress = acct, store, state, report, progress
        self.digest_index = DigestIndex(store.state_dir)
        self.step = _Step()
        self.failed: set[str | int] = set()  # idents of messages that failed this run
        self.too_large: set[str | int] = set()
        self.announced: set[str | int] = set()  # idents given to progress.expect
        self.unsaved = 0
        self.store_error: str | None = None
        self.current: _Msg | None = None  # the message being retrieved
        self.digests: dict[int, str] = {}  # this session: number -> digest key of what was stored
        self.known: set[str] = set()  # keys in the state or the store
        self.index: dict[str, str] = {}  # digest key -> key the store holds that content under
        # key -> (message, size, digest key): handed to the destination, not settled yet
        self.handed: dict[str, tuple[_Msg, int, str]] = {}

    async def run(self, secret: dict[str, Any]) -> None:
        # Read the store before connecting: waiting for another program's mbox locks must not
        # keep a POP3 session idle.
        self.step.now = "reading the store"
        stored = await self.stored_keys()
        self.index = {d: k for d, k in (await asyncio.to_thread(self.digest_index.load)).items() if k in stored}
        self.known = self.state.keys | stored
        if not await self.session(secret):
            return
        for _ in range(MAX_SESSIONS - 1):
            if not await self.resumed_session(secret):
                return
        self.report.problems.append(
            f"the connection was lost {MAX_SESSIONS} times in this run; the messages not fetched yet are fetched next run"
        )

    async def resumed_session(self, secret: dict[str, Any]) -> bool:
        """A session that resumes a lost one. The server may still hold the maildrop lock of
        the session just dropped until it notices the close (`[IN-USE]`, RFC 2449 §8.1.1), so
        a refused login is tried again a few times, a few seconds in all."""
        for wait in RESUME_WAITS:
            try:
                return await self.session(secret)
            except InUseError:
                log.debug("%s: the mailbox is still locked by the lost session; trying again in %s s", self.acct.name, wait)
                await asyncio.sleep(wait)
        return await self.session(secret)

    async def session(self, secret: dict[str, Any]) -> bool:
        """One session; True if it was lost on a broken or stalled message and should be resumed."""
        acct, report = self.acct, self.report
        async with _session(acct, secret, self.step) as pop:
            report.login_delay = pop.capabilities.login_delay if pop.capabilities is not None else None
            self.step.now = "listing the messages"
            msgs = await _listing(pop, acct)
            no_uidl = bool(msgs) and all(m.uid is None for m in msgs)
            if no_uidl and not acct.delete:
                raise ConfigError(
                    "the server has no UIDL, so new mail cannot be told from old; use --delete (fetch, then remove)"
                )
            if no_uidl and not any("no UIDL" in w for w in report.warnings):
                report.warnings.append("the server has no UIDL: every message is fetched, then deleted")
            self.digests = {}
            # Repair a crash between storing and recording: the store itself knows what it holds.
            self.state.add(m.key for m in msgs if m.key in self.known)
            listed = {m.key for m in msgs}
            self.state.failures = {k: n for k, n in self.state.failures.items() if k in listed}
            wanted = self.select(msgs)
            # A resumed session lists again what the lost one had announced.
            fresh = [m for m in wanted if m.ident not in self.announced]
            self.announced.update(m.ident for m in fresh)
            self.progress.expect(sum(m.size for m in fresh), len(fresh))
            log.info("%s: %d message(s) on the server, %d to fetch", acct.name, len(msgs), len(wanted))
            try:
                await self.fetch_small(pop, [m for m in wanted if m.size <= STREAM_ABOVE])
                for m in wanted:
                    if m.size > STREAM_ABOVE and self.store_error is None:
                        await self.fetch_streamed(pop, m)
            except (RemoteProtocolError, POP3TimeoutError) as exc:
                # The connection is gone (a line over the limit, a broken reply, EOF, or the
                # server went silent in the middle of a message): that message is skipped for
                # this run, a new session fetches the rest.
                await self.flush()
                return self.broken(exc)
            await self.flush()
            await self.save()
            to_delete: list[int] = []
            if acct.delete:
                # The store, not the state, says what may be deleted on the server.
                self.step.now = "checking the store before deleting"
                stored = await self.stored_keys()
                to_delete = [m.number for m in msgs if self.held(m, stored)]
                missing = sum(1 for m in msgs if m.key in self.state.keys and not self.held(m, stored))
                warning = (
                    f"{missing} message(s) recorded as fetched are not in the store {self.store.path} (moved or"
                    " deleted there?); they are not deleted on the server"
                )
                if missing and warning not in report.warnings:
                    report.warnings.append(warning)
            gone = set(to_delete)
            if to_delete:
                self.step.now = "deleting messages on the server"
                try:
                    await pop.dele_many(to_delete)
                except DeleteError as exc:
                    gone = set(exc.deleted)  # exactly the DELEs the server accepted
                    refused = ", ".join(str(n) for n, _ in exc.refused)
                    report.problems.append(
                        f"the server refused DELE for message(s) {refused}: {show_bytes(exc.response)};"
                        " they stay on the server, the next run tries again"
                    )
            self.step.now = "quitting (QUIT)"
            try:
                await pop.quit()
            except ServerError as exc:
                # RFC 1939: deletions happen only in the UPDATE state QUIT's +OK confirms.
                report.problems.append(
                    f"the server refused QUIT ({show_bytes(exc.response)}), so it deleted nothing;"
                    " the next run deletes those messages"
                )
                return False
            if acct.delete:
                report.deleted += len(gone)
                # Keep records of what the server still has only: the state stays small, and a
                # UID the server later reuses is not taken for the deleted message.
                kept = {m.key for m in msgs if m.key in self.state.keys and m.number not in gone}
                kept |= {self.digests[m.number] for m in msgs if m.key is None and m.number in self.digests and m.number not in gone}
                self.state.keys = kept
                self.state.aliases = {k: v for k, v in self.state.aliases.items() if k in self.state.keys}
                await self.save()
        return False

    async def stored_keys(self) -> set[str]:
        try:
            return set(await asyncio.to_thread(self.store.stored_keys))
        except OSError as exc:
            raise StoreError(f"cannot read the store {self.store.path}: {exc.strerror or exc}") from None

    def held(self, m: _Msg, stored: set[str]) -> bool:
        """Whether the store holds message ``m``: under its key, or its content under another."""
        key = m.key if m.key is not None else self.digests.get(m.number)
        return key is not None and (key in stored or self.state.aliases.get(key) in stored)

    def select(self, msgs: list[_Msg]) -> list[_Msg]:
        acct, wanted = self.acct, []
        for m in msgs:
            if m.ident in self.state.keys or m.ident in self.failed:
                continue
            if acct.max_size is not None and m.size > acct.max_size:
                self.too_large.add(m.ident)
                continue
            wanted.append(m)
        self.report.skipped = len(self.too_large)
        # Messages that failed in earlier runs go last: a few that stall every time must not
        # use up the run's sessions before the rest of the mailbox is fetched.
        wanted.sort(key=lambda m: m.key in self.state.failures)
        if acct.max_messages is not None:
            wanted = wanted[: max(0, acct.max_messages - self.report.fetched)]
        return wanted

    def problem(self, m: _Msg, why: str, what: str = "fetched") -> None:
        """Message ``m`` was not fetched (or not stored, ``what``) this run, because ``why``."""
        self.failed.add(m.ident)
        runs = 1
        if m.key is not None:  # counted across runs only with a UID: a number changes
            runs = self.state.failures[m.key] = self.state.failures.get(m.key, 0) + 1
        if runs >= PERSISTENT_RUNS:
            self.report.problems.append(
                f"{m.name()} has failed in {runs} runs in a row ({why}); the rest of the mailbox is fetched,"
                " this message is tried again each run: read or delete it with another client (webmail)"
            )
        else:
            self.report.problems.append(f"{m.name()} not {what}: {why}; it is tried again next run")

    def broken(self, exc: POP3Error) -> bool:
        m = self.current
        if m is None:
            raise exc
        if isinstance(exc, POP3TimeoutError):
            why = f"the server sent nothing for {self.acct.timeout:g} s in the middle of it (--timeout)"
        else:
            why = _library_text(exc)
        self.problem(m, why)
        return True

    async def fetch_small(self, pop: Any, msgs: list[_Msg]) -> None:
        pending = msgs
        while pending and self.store_error is None:  # each round consumes at least one message
            done = 0
            self.step.now = "retrieving messages"
            self.current = pending[0]  # replies come in order: the one being read is pending[done]
            try:
                async with _batch(pop, pop.retr_many([m.number for m in pending])) as batch:
                    async for _, (_, lines, _) in batch:
                        m = pending[done]
                        done += 1
                        self.current = pending[done] if done < len(pending) else None
                        data = b"".join(line + b"\r\n" for line in lines)
                        if not await self.deliver(m, data):
                            return
            except ServerError as exc:
                m = pending[done]
                self.problem(m, f"the server said {show_bytes(exc.response)}")
                done += 1
            self.current = None
            pending = pending[done:]

    async def fetch_streamed(self, pop: Any, m: _Msg) -> None:
        """A large message, written to the store chunk by chunk: memory stays bounded."""
        self.step.now = "retrieving messages"
        self.current = m
        try:
            async with _batch(pop, pop.retr_iter(m.number)) as chunks:
                await self.deliver(m, chunks)
        except ServerError as exc:
            self.problem(m, f"the server said {show_bytes(exc.response)}")
        self.current = None

    async def deliver(self, m: _Msg, chunks: Any) -> bool:
        """Store one message, given whole (bytes) or as an async iterator of chunks; False if
        the store failed (fetching stops, the rest goes on)."""
        try:
            delivery = await asyncio.to_thread(self.store.begin)
        except OSError as exc:
            return self.cannot_store(m, exc)
        whole = chunks if isinstance(chunks, bytes) else None
        digest = hashlib.sha256()
        size = 0
        key = None
        try:
            if whole is not None:
                digest.update(whole)
                size = len(whole)
            else:
                async for chunk in chunks:
                    digest.update(chunk)
                    size += len(chunk)
                    await asyncio.to_thread(delivery.write, chunk)
            dkey = digest_key(digest.hexdigest(), m.size)
            key = m.key or dkey
            held = self.index.get(dkey) or (dkey if dkey in self.known else None)
            if held is not None:
                # These bytes are stored already: by a session of this run lost before QUIT, by
                # a run reaching this mailbox by another route (host name, port), or under the
                # UID this message had before the server lost UIDL. Stored once only.
                await asyncio.to_thread(delivery.abort)
                self.recorded(m, key, dkey, held)
                self.progress.advance(size)
                return True
            self.handed[key] = (m, size, dkey)
            if whole is not None:
                # One trip to a worker thread, not two: per message, the hand-offs cost more
                # than the write itself (bench/bench_fetch_tools.py).
                outcomes = await asyncio.to_thread(_write_and_commit, delivery, whole, key)
            else:
                outcomes = await asyncio.to_thread(delivery.commit, key)
        except POP3Error:
            await asyncio.to_thread(delivery.abort)
            raise
        except OSError as exc:  # the store's: disk full, file too large, I/O error
            await asyncio.to_thread(delivery.abort)
            return self.cannot_store(m, exc)
        except BaseException:
            # Interrupted: a write or commit still running in its thread finishes first (the
            # delivery serialises them); a committed message stays and is recorded, anything
            # else is removed.
            await asyncio.shield(asyncio.to_thread(delivery.abort))
            if key is not None and delivery.committed:
                self.state.add([key])
            raise
        return await self.settle(outcomes)

    async def flush(self) -> None:
        """Settle the messages a batching destination still holds (IMAP MULTIAPPEND)."""
        if self.handed:
            await self.settle(await asyncio.to_thread(self.store.flush))

    async def settle(self, outcomes: list[Outcome]) -> bool:
        """Record what the destination confirmed (only then may it be deleted on the server),
        report what it refused; False once it refused in a way that stops this run's storing."""
        added: list[tuple[str, str]] = []
        for outcome in outcomes:
            m, size, dkey = self.handed.pop(outcome.key)
            if isinstance(outcome, Refusal):
                if not outcome.stop:
                    self.problem(m, outcome.reason, "stored")
                elif self.store_error is None:
                    self.failed.add(m.ident)
                    self.store_error = f"{m.name()} and the rest were not stored: {outcome.reason}"
                    self.report.problems.append(self.store_error)
                else:
                    self.failed.add(m.ident)
                continue
            key = outcome.key
            log.debug("%s: %s stored: %s", self.acct.name, m.name(), outcome.detail)
            self.recorded(m, key, dkey, key)
            self.index[dkey] = key
            added.append((dkey, key))
            self.report.fetched += 1
            self.report.bytes += size
            self.progress.advance(size)
            self.unsaved += 1
        # Every receipt is in the state before the first await: an interruption from here on
        # loses none (a destination forgets the receipts a saved state does not hold).
        if added:
            try:
                await asyncio.to_thread(self.digest_index.add, added)
            except OSError as exc:
                warning = f"cannot write {self.digest_index.path} ({exc.strerror or exc}): a message reached by another route may be stored twice"
                if warning not in self.report.warnings:
                    self.report.warnings.append(warning)
        if self.unsaved >= SAVE_EVERY:
            await self.save()
        return self.store_error is None

    def cannot_store(self, m: _Msg, exc: OSError) -> bool:
        """The store failed: fetching stops (False), the session goes on to delete what is stored."""
        self.store_error = (
            f"cannot write to {self.store.path}: {exc.strerror or exc}; "
            f"{m.name()} and the rest were not stored, free some space and run again"
        )
        self.report.problems.append(self.store_error)
        return False

    def recorded(self, m: _Msg, key: str, dkey: str, held: str) -> None:
        """Message ``m`` (``key``, content ``dkey``) is stored, under ``held``."""
        self.digests[m.number] = dkey
        self.state.add([key])
        if held != key:
            self.state.aliases[key] = held
        self.state.failures.pop(key, None)
        self.known.add(key)

    async def save(self) -> None:
        self.unsaved = 0
        await asyncio.to_thread(self.persist, *self.snapshot())

    def snapshot(self) -> tuple[bytes, set[str]]:
        """The state to save, and the keys whose receipts the destination must keep: those the
        state holds (aliases' targets too) and those handed over but not settled (a flush
        interrupted after the destination stored them). Taken on the event loop."""
        return self.state.dump(), set(self.state.keys) | set(self.state.aliases.values()) | set(self.handed)

    def persist(self, state: bytes, keys: set[str]) -> None:
        """In a worker thread: the store's deliveries made durable, then the state that
        records them (never the other way round); then the destination may forget its
        records of any key not in ``keys``."""
        self.store.sync()
        self.state.save(state)
        self.store.recorded(keys)


def _write_and_commit(delivery: Any, data: bytes, key: str) -> list[Outcome]:
    delivery.write(data)
    outcomes: list[Outcome] = delivery.commit(key)
    return outcomes


@asynccontextmanager
async def _batch(pop: Any, batch: Any) -> AsyncIterator[Any]:
    """Close a batch or stream iterator on every way out. Left early (the store failed), it
    reads the replies still in flight so the session stays usable; interrupted, the connection
    is dropped first, so nothing waits for them (closing then fails fast, which is expected)."""
    try:
        yield batch
    except ServerError:
        raise  # the batch ended on -ERR by itself, after reading the replies in flight
    except BaseException:
        await pop.aclose()
        with suppress(POP3Error, OSError):
            await batch.aclose()
        raise
    else:
        await batch.aclose()


async def fetch_account(acct: Account, default_maildir: Path, progress: Progress) -> Report:
    report = Report(acct.name)
    step = _Step()
    lock: AccountLock | None = None
    run: _Fetch | None = None
    store: Destination | None = None
    cancelled = threading.Event()  # tells lock waits in worker threads to give up
    try:
        step.now = "opening the store"
        store = await asyncio.to_thread(_store_for, acct, default_maildir)
        store.cancelled = cancelled
        report.stored_dir, report.state_dir = str(store.path), str(store.state_dir)
        step.now = "locking the account"
        lock = AccountLock(store.state_dir, acct.identity)
        await asyncio.to_thread(lock.acquire, acct.wait, cancelled)
        step.now = "reading the state"
        state = await asyncio.to_thread(State, store.state_dir, acct.identity)
        if state.damaged:
            report.warnings.append(
                f"the state file {state.path} was damaged; rebuilt it from the messages in the store"
            )
        step.now = "getting the password"
        secret = await asyncio.to_thread(acct.secret)
        run = _Fetch(acct, store, state, report, progress)
        step = run.step
        await run.run(secret)
    except Exception as exc:  # noqa: BLE001 - any failure is this account's, reported on its line
        report.fail(*describe(exc, step.now, acct))
    except asyncio.CancelledError:
        cancelled.set()
        raise
    finally:
        if run is not None:
            # Also when interrupted: the thread finishes the save even if we are cancelled again.
            try:
                await asyncio.shield(asyncio.to_thread(run.persist, *run.snapshot()))
            except StoreError as exc:
                if report.error is None:
                    report.fail(f"{exc}; what was stored is in the store, the next run reads it there", EXIT_USAGE)
        if store is not None:
            await asyncio.shield(asyncio.to_thread(store.close))
        if lock is not None:
            lock.release()
    if report.code == EXIT_OK and report.problems:
        report.code = EXIT_PARTIAL
    return report


async def list_account(acct: Account) -> tuple[list[dict[str, Any]], Report]:
    """``ls`` for one account: a row per message (headers from TOP, empty without TOP)."""
    report = Report(acct.name)
    rows: list[dict[str, Any]] = []
    step = _Step()
    try:
        step.now = "getting the password"
        secret = await asyncio.to_thread(acct.secret)
        async with _session(acct, secret, step) as pop:
            step.now = "listing the messages"
            msgs = await _listing(pop, acct)
            step.now = "reading headers (TOP)"
            headers = await _headers(pop, msgs, report)
            for m in msgs:
                h = headers.get(m.number)
                rows.append(
                    {
                        "account": acct.name,
                        "number": m.number,
                        "size": m.size,
                        "uid": m.uid.decode("utf-8", "backslashreplace") if m.uid is not None else None,
                        "date": str(h.get("Date", "")) if h else "",
                        "from": str(h.get("From", "")) if h else "",
                        "subject": str(h.get("Subject", "")) if h else "",
                    }
                )
            step.now = "quitting (QUIT)"
            await pop.quit()
    except Exception as exc:  # noqa: BLE001 - reported on the account's line, other accounts go on
        report.fail(*describe(exc, step.now, acct))
    return rows, report


async def _headers(pop: Any, msgs: list[_Msg], report: Report) -> dict[int, Any]:
    parser = BytesHeaderParser(policy=default_policy)
    out: dict[int, Any] = {}
    pending = [m.number for m in msgs]
    while pending:  # each round consumes at least one message
        done = 0
        try:
            async for number, (_, lines, _) in pop.top_many(pending, 0):
                done += 1
                out[number] = parser.parsebytes(b"".join(line + b"\r\n" for line in lines))
        except ServerError as exc:
            if not out:  # the very first TOP failed: the server has no TOP
                report.warnings.append(f"the server refused TOP ({show_bytes(exc.response)}): headers are not shown")
                return out
            done += 1
        pending = pending[done:]
    return out


def exit_code(reports: list[Report]) -> int:
    codes = {r.code for r in reports}
    if codes == {EXIT_OK}:
        return EXIT_OK
    if len(codes) == 1:
        return codes.pop()
    return EXIT_PARTIAL
