"""Scheduling accounts: one pass over every account (``fastpoplib fetch``) or a pass per
account every interval (``fastpoplib watch``), always at most ``concurrency`` accounts at once.

Each account runs as its own task and takes one of ``concurrency`` slots only while it is
polled: a connection, its store files and its lock are open only inside a slot, so sockets and
file descriptors stay bounded however many accounts the config holds, and an account that
stalls or fails holds only its own slot (its timeouts end it).

After each poll ``watch`` decides when to poll again: the account's interval, no sooner than
the server's LOGIN-DELAY (RFC 2449 §6.5); after a failure that may pass (a connection or TLS
failure, ``[IN-USE]``, ``[LOGIN-DELAY]``, ``[SYS/TEMP]``, a busy lock) exponentially later, with
jitter, capped; after one that will not pass by waiting (login refused, a configuration error,
a destination that refuses every message: an unknown LMTP recipient, a full mailbox) never
again until watch is restarted: the account is reported and paused.

Each poll leaves a small status record (last poll, messages fetched, last error, next poll)
next to the account's state, written atomically, for ``fastpoplib status``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import resource
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TypeVar

from ._retriever import (
    EXIT_AUTH,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    Account,
    ConfigError,
    Progress,
    Report,
    fetch_account,
    printable,
    state_dir_of,
)
from ._retriever.storing import MAILDIR_OPEN_FILES
from ._store import StoreError, _name, check_private, write_atomic

DEFAULT_CONCURRENCY = 32  # accounts polled at once
BACKOFF_CAP = 3600.0  # seconds: the longest wait after repeated failures (unless the interval is longer)
# Socket, account lock, state and store files with room to spare, and the Maildir files a batch
# holds open while they are fsynced.
FDS_PER_ACCOUNT = 8 + MAILDIR_OPEN_FILES
FDS_RESERVED = 64  # the interpreter, logging, the thread pool

log = logging.getLogger("fastpoplib.watch")
T = TypeVar("T")

# Failures that waiting does not cure: a refused login is not retried in a loop (it could lock
# the account at the provider), a configuration error needs the user.
_PAUSING = (EXIT_AUTH, EXIT_USAGE)


def check_concurrency(value: int, accounts: int | None = None) -> int:
    """``value`` if it is a usable bound (a whole number >= 1) and the file descriptor limit
    allows polling ``min(value, accounts)`` accounts at once, else ConfigError saying what to
    change."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"--concurrency must be a whole number of at least 1, not {value!r}")
    at_once = value if accounts is None else max(1, min(value, accounts))
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = at_once * FDS_PER_ACCOUNT + FDS_RESERVED
    if soft != resource.RLIM_INFINITY and needed > soft:
        most = (soft - FDS_RESERVED) // FDS_PER_ACCOUNT
        raise_limit = f"raise the limit to {needed} or more (ulimit -n, LimitNOFILE= in a systemd unit)"
        advice = f"lower --concurrency to {most} or {raise_limit}" if 1 <= most < at_once else raise_limit
        raise ConfigError(
            f"polling {at_once} account(s) at once needs about {needed} file descriptors but this process"
            f" may open {soft}; {advice}"
        )
    return value


def backoff(interval: float, failures: int, rand: Callable[[], float] = random.random) -> float:
    """Seconds to wait after ``failures`` (>= 1) failed polls in a row: twice the interval,
    doubling with each failure up to ``max(BACKOFF_CAP, interval)``, of which a random half
    ("equal jitter"), so that accounts on one server that went down do not come back in step."""
    ceiling = max(BACKOFF_CAP, interval)
    delay = min(ceiling, interval * 2.0 ** min(failures, 64))
    return delay / 2 + rand() * delay / 2


@dataclass
class Status:
    """What ``fastpoplib status`` shows of an account: times are seconds since the epoch."""

    account: str
    last_poll: float | None = None  # when the last poll started
    fetched: int = 0  # messages the last poll fetched
    total: int = 0  # messages fetched by every poll recorded here
    last_error: str | None = None  # the last poll's error, None if it went well
    next_poll: float | None = None  # None: no watch will poll it (fetch, or paused)
    paused: bool = False  # watch stopped polling it until it is restarted
    pid: int | None = None  # the watch process that polls it next

    @staticmethod
    def path(state_dir: Path, acct: Account) -> Path:
        return state_dir / f"{_name(acct.identity)}.status"

    @classmethod
    def load(cls, path: Path) -> Status | None:
        """The record at ``path``; None if there is none or it is damaged. StoreError (a
        sentence) if ``path`` is not a regular file of this user's that others cannot write:
        it would be ignored, or replaced by another user's, without a word."""
        check_private(path, directory=False)
        try:
            data = json.loads(path.read_bytes())
            return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})
        except (OSError, ValueError, TypeError):
            return None

    def save(self, path: Path) -> None:
        write_atomic(path, json.dumps(asdict(self), indent=0).encode("utf-8"))


async def _record(acct: Account, report: Report, started: float, next_poll: float | None, paused: bool) -> str | None:
    """Write the account's status record; a failure to write it is a warning (returned), never fatal."""
    if not report.state_dir:
        return None  # the store could not be opened: no place for a record (the log says why)
    path = Status.path(Path(report.state_dir), acct)

    def write() -> None:
        previous = Status.load(path)
        Status(
            account=acct.name,
            last_poll=started,
            fetched=report.fetched,
            total=(previous.total if previous else 0) + report.fetched,
            last_error=report.error if report.error is not None else report.pause,
            next_poll=next_poll,
            paused=paused,
            pid=os.getpid() if next_poll is not None else None,
        ).save(path)

    try:
        await asyncio.to_thread(write)
    except StoreError as exc:
        return f"cannot write the status record: {exc}"
    except OSError as exc:
        return f"cannot write the status record {path}: {exc.strerror or exc}"
    return None


async def _polled(
    acct: Account, default_maildir: Path, progress: Progress, next_poll: Callable[[Report], float | None]
) -> Report:
    """One poll of ``acct``, its status record written after it (``next_poll(report)`` says
    when the next is planned), also when it is interrupted: the messages an interrupted poll
    stored count in the totals."""
    started = time.time()
    report = Report(acct.name)
    try:
        await fetch_account(acct, default_maildir, progress, report)
    except asyncio.CancelledError:
        report.fail("interrupted before the poll finished; what was stored is recorded", EXIT_INTERRUPTED)
        await asyncio.shield(_record(acct, report, started, next_poll=None, paused=False))
        raise
    paused = _pause_reason(report) is not None
    warning = await _record(acct, report, started, next_poll=None if paused else next_poll(report), paused=paused)
    if warning is not None:
        report.warnings.append(warning)
    return report


def _pause_reason(report: Report) -> str | None:
    """Why the account is paused after ``report`` (a failure that waiting will not mend, or a
    destination refusing every message), or None."""
    if report.error is not None and report.code in _PAUSING:
        return report.error
    return report.pause


def _slots(concurrency: int, accounts: int) -> asyncio.Semaphore:
    """The bound, and a worker thread per slot: an account blocks a thread while it waits for
    a password command, a lock or the disk, and asyncio's default pool (a few threads per CPU)
    would make the other accounts wait for it. Threads are started only when needed."""
    concurrency = min(check_concurrency(concurrency, accounts), max(1, accounts))
    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(max_workers=concurrency + 4, thread_name_prefix="fastpoplib"))
    return asyncio.Semaphore(concurrency)


async def each(accounts: list[Account], job: Callable[[Account], Awaitable[T]], concurrency: int) -> list[T]:
    """``job(account)`` for every account, at most ``concurrency`` at once; results in order."""
    slots = _slots(concurrency, len(accounts))

    async def one(acct: Account) -> T:
        async with slots:
            return await job(acct)

    return list(await asyncio.gather(*(one(a) for a in accounts)))


async def fetch_all(
    accounts: list[Account], default_maildir: Path, progress: Progress, concurrency: int = DEFAULT_CONCURRENCY
) -> list[Report]:
    """One pass over ``accounts``, at most ``concurrency`` at once; a report per account, in order."""

    async def one(acct: Account) -> Report:
        return await _polled(acct, default_maildir, progress, lambda _: None)

    return await each(accounts, one, concurrency)


async def watch(accounts: list[Account], default_maildir: Path, concurrency: int = DEFAULT_CONCURRENCY) -> None:
    """Poll every account every ``interval`` seconds until cancelled (SIGTERM, Ctrl-C): a
    cancelled poll abandons the message in hand (nothing half-stored, nothing deleted that is
    not stored) and saves the state, as an interrupted ``fetch`` does. Never returns: with
    every account paused it waits to be stopped, so that a service manager restarting it does
    not retry a refused login in a loop."""
    slots = _slots(concurrency, len(accounts))
    await asyncio.gather(*(_keep_polling(a, default_maildir, slots) for a in accounts))
    log.error("every account is paused; fix the errors above, then restart watch")
    await asyncio.Event().wait()


async def _keep_polling(acct: Account, default_maildir: Path, slots: asyncio.Semaphore) -> None:
    name = printable(acct.name)
    progress = Progress()
    failures = 0
    delay = 0.0

    def plan(report: Report) -> float:
        """When to poll next after ``report`` (sets ``delay`` and ``failures``)."""
        nonlocal delay, failures
        if report.error is None:
            failures = 0
            delay = acct.interval
        else:
            failures += 1
            delay = backoff(acct.interval, failures)
        if report.login_delay is not None:
            delay = max(delay, float(report.login_delay))  # the server's minimum between logins
        return time.time() + delay

    while True:
        async with slots:
            report = await _polled(acct, default_maildir, progress, plan)
        why = _pause_reason(report)
        for text in report.warnings + report.problems:
            if text != why:  # that one is the ERROR line below
                log.warning("%s: %s", name, printable(text))
        if why is not None:
            log.error("%s: %s; paused: not polled again until watch is restarted", name, printable(why))
            return
        if report.error is None:
            log.info("%s: %d new message(s), %d bytes; next poll in %.0f s", name, report.fetched, report.bytes, delay)
        else:
            log.warning(
                "%s: %s; next try in %.0f s (%d failure(s) in a row)", name, printable(report.error), delay, failures
            )
        await asyncio.sleep(delay)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _when(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch))


def status_of(acct: Account, default_maildir: Path) -> Status:
    """The account's status record (an empty one if it was never polled); ``last_error`` says
    why when the store cannot be opened. A planned poll whose watch process is gone is no
    longer planned (``next_poll`` None, ``pid`` kept)."""
    try:
        state_dir = state_dir_of(acct, default_maildir)  # without logging in to an IMAP or LMTP server
    except Exception as exc:  # noqa: BLE001 - shown as the account's error
        return Status(acct.name, last_error=f"the store cannot be opened: {exc}")
    try:
        record = Status.load(Status.path(Path(state_dir), acct)) or Status(acct.name)
    except StoreError as exc:
        return Status(acct.name, last_error=str(exc))
    record.account = acct.name
    if record.next_poll is not None and record.pid is not None and not _alive(record.pid):
        record.next_poll = None
    return record


def status_lines(record: Status) -> list[str]:
    """What ``fastpoplib status`` prints for one account."""
    lines = [printable(record.account)]
    if record.last_poll is None:
        lines.append("  last poll   never")
        return lines + ([f"  last error  {printable(record.last_error)}"] if record.last_error else [])
    lines.append(f"  last poll   {_when(record.last_poll)}")
    lines.append(f"  fetched     {record.fetched} message(s) ({record.total} in all)")
    lines.append(f"  last error  {printable(record.last_error) if record.last_error else '-'}")
    if record.paused:
        nxt = "paused: fix the error above, then restart watch"
    elif record.next_poll is not None:
        nxt = _when(record.next_poll)
    elif record.pid is not None:
        nxt = f"- (the watch process {record.pid} that planned the next poll is gone)"
    else:
        nxt = "- (no watch running)"
    lines.append(f"  next poll   {nxt}")
    return lines
