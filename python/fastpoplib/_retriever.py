"""The retriever behind ``fastpoplib fetch``: accounts fetched concurrently (asyncio), new
messages found by UIDL, retrieved pipelined, stored durably, and deleted on the server only
once stored (see ``_store`` for why a crash at any point loses and duplicates nothing)."""

from __future__ import annotations

import asyncio
import netrc
import os
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional

from . import _aio
from ._store import Maildir, Mbox, State, uid_tag
from .exceptions import AuthenticationError, POP3ConnectionError, POP3TimeoutError, TLSError

# Exit codes of `fastpoplib fetch` (documented in README).
EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, EXIT_AUTH, EXIT_CONNECTION = 0, 1, 2, 3, 4

# How often the UID record is saved while fetching (it is always saved before any DELE).
SAVE_EVERY = 50


class Progress:
    """What the retriever reports while it works; the CLI subclasses it with a tqdm bar."""

    def expect(self, nbytes: int) -> None:
        """More bytes are about to be fetched (an account's new messages, sizes from LIST)."""

    def advance(self, nbytes: int) -> None:
        """Bytes stored."""


class ConfigError(Exception):
    """A bad option or configuration file (exit code 2)."""


@dataclass
class Account:
    host: str
    user: str
    name: str = ""
    port: Optional[int] = None
    tls: str = "implicit"  # implicit | starttls | none
    insecure: bool = False  # allow a clear-text password and skip nothing else
    cafile: Optional[str] = None
    password_env: Optional[str] = None
    password_command: Optional[str] = None
    netrc_file: Optional[str] = None
    oauth2_token_command: Optional[str] = None
    maildir: Optional[str] = None
    mbox: Optional[str] = None
    delete: bool = False
    max_size: Optional[int] = None
    max_messages: Optional[int] = None
    timeout: float = 60.0

    def __post_init__(self) -> None:
        if self.tls not in ("implicit", "starttls", "none"):
            raise ConfigError(f"tls must be implicit, starttls or none, not {self.tls!r}")
        if self.tls == "none" and not self.insecure:
            raise ConfigError(f"{self.label}: tls = none sends the password in clear text; add --insecure to allow it")
        if self.maildir and self.mbox:
            raise ConfigError(f"{self.label}: choose maildir or mbox, not both")
        self.name = self.name or self.label

    @property
    def label(self) -> str:
        return f"{self.user}@{self.host}" + (f":{self.port}" if self.port else "")

    def secret(self) -> dict:
        """``{"password": ...}`` or ``{"oauth2_token": ...}`` from the configured source;
        never from the command line itself."""
        if self.oauth2_token_command:
            return {"oauth2_token": _run_secret_command(self.oauth2_token_command, "oauth2 token")}
        if self.password_command:
            return {"password": _run_secret_command(self.password_command, "password")}
        if self.password_env:
            value = os.environ.get(self.password_env)
            if value is None:
                raise ConfigError(f"{self.label}: environment variable {self.password_env} is not set")
            return {"password": value}
        try:
            auth = netrc.netrc(self.netrc_file).authenticators(self.host)
        except (FileNotFoundError, netrc.NetrcParseError) as exc:
            raise ConfigError(f"{self.label}: no password source (--password-env, --password-command, netrc): {exc}") from None
        if auth is None or auth[2] is None:
            raise ConfigError(f"{self.label}: no password source and no netrc entry for {self.host}")
        return {"password": auth[2]}


def _run_secret_command(command: str, what: str) -> str:
    try:
        out = subprocess.run(shlex.split(command), capture_output=True, timeout=60, check=True)
    except (OSError, subprocess.SubprocessError) as exc:
        # The command line may hold no secret, but its output might: never echo the output.
        raise ConfigError(f"the {what} command failed: {type(exc).__name__}") from None
    try:
        text = out.stdout.decode("utf-8")
    except UnicodeDecodeError:
        # Its message would show a byte of the secret and where it is: say only what is wrong.
        raise ConfigError(f"the {what} command's output is not UTF-8; secrets are read as UTF-8") from None
    lines = text.splitlines()
    if not lines or not lines[0]:
        raise ConfigError(f"the {what} command printed nothing")
    return lines[0]


@dataclass
class Report:
    account: str
    fetched: int = 0
    bytes: int = 0
    skipped: int = 0
    deleted: int = 0
    stored_dir: str = ""
    error: Optional[str] = None
    code: int = EXIT_OK
    warnings: List[str] = field(default_factory=list)


def _store_for(acct: Account, default_maildir: Path) -> Any:
    if acct.mbox:
        return Mbox(Path(acct.mbox).expanduser())
    return Maildir(Path(acct.maildir).expanduser() if acct.maildir else default_maildir)


async def _open(acct: Account) -> Any:
    tls_kw = {"cafile": acct.cafile} if acct.cafile else {}
    if acct.tls == "implicit":
        pop = await _aio.AsyncPOP3_SSL.connect(acct.host, acct.port or 995, acct.timeout, **tls_kw)
    else:
        pop = await _aio.AsyncPOP3.connect(acct.host, acct.port or 110, acct.timeout)
        if acct.tls == "starttls":
            try:
                await pop.stls(**tls_kw)
            except BaseException:
                pop._abort()
                raise
    return pop


async def fetch_account(acct: Account, default_maildir: Path, progress: Progress) -> Report:
    report = Report(acct.name)
    try:
        store = _store_for(acct, default_maildir)
        report.stored_dir = str(store.path)
        secret = acct.secret()
        pop = await _open(acct)
    except ConfigError as exc:
        return _failed(report, str(exc), EXIT_USAGE)
    except (POP3ConnectionError, POP3TimeoutError, TLSError, OSError) as exc:
        return _failed(report, f"connection failed: {exc}", EXIT_CONNECTION)
    try:
        await pop.login(acct.user, allow_insecure=acct.insecure, **secret)
        await _transfer(pop, acct, store, report, progress)
        await pop.quit()
    except AuthenticationError as exc:
        pop._abort()
        return _failed(report, f"login refused: {exc.response.decode('utf-8', 'replace')}", EXIT_AUTH)
    except (POP3ConnectionError, POP3TimeoutError, TLSError) as exc:
        pop._abort()
        return _failed(report, f"connection failed: {exc}", EXIT_CONNECTION)
    except Exception as exc:  # a server error mid-session: report it, keep other accounts going
        pop._abort()
        return _failed(report, f"{type(exc).__name__}: {exc}", EXIT_PARTIAL)
    return report


def _failed(report: Report, message: str, code: int) -> Report:
    report.error, report.code = message, code
    return report


async def _transfer(pop: Any, acct: Account, store: Any, report: Report, progress: Progress) -> None:
    infos = await pop.messages()
    state = State(store.state_dir, acct.label)
    if any(info.uid is None for info in infos):
        if not acct.delete:
            raise ConfigError("the server has no UIDL, so new mail cannot be told from old; use --delete (fetch and remove)")
        report.warnings.append("server has no UIDL: every message is fetched, then deleted")
    # Repair a crash between storing and recording: the store itself knows what it holds.
    stored = store.stored_tags()
    state.add(i.uid for i in infos if i.uid is not None and uid_tag(acct.label, i.uid) in stored)
    wanted = []
    for info in infos:
        if info.uid is not None and info.uid in state.uids:
            continue
        if acct.max_size is not None and info.size > acct.max_size:
            report.skipped += 1
            continue
        wanted.append(info)
    if acct.max_messages is not None:
        wanted = wanted[: acct.max_messages]
    by_number = {info.number: info for info in wanted}
    progress.expect(sum(info.size for info in wanted))
    unsaved = 0
    async for number, (_, lines, _) in pop.retr_many(list(by_number)):
        info = by_number[number]
        data = b"\r\n".join(lines) + b"\r\n"
        uid = info.uid if info.uid is not None else f"no-uidl-{number}-{info.size}"
        store.deliver(data, uid_tag(acct.label, uid))
        state.add([uid])
        unsaved += 1
        if unsaved >= SAVE_EVERY:
            state.save()
            unsaved = 0
        report.fetched += 1
        report.bytes += len(data)
        progress.advance(len(data))
    state.save()
    if acct.delete:
        stored_now = {i.number for i in infos if i.uid in state.uids or (i.uid is None and i.number in by_number)}
        if stored_now:
            await pop.dele_many(sorted(stored_now))
            report.deleted = len(stored_now)


async def fetch_all(accounts: List[Account], default_maildir: Path, progress: Progress) -> List[Report]:
    return list(await asyncio.gather(*(fetch_account(a, default_maildir, progress) for a in accounts)))


def exit_code(reports: List[Report]) -> int:
    codes = {r.code for r in reports}
    if codes == {EXIT_OK}:
        return EXIT_OK
    if len(codes) == 1:
        return codes.pop()
    return EXIT_PARTIAL
