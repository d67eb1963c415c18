"""One account's run behind ``fastpoplib fetch`` and ``fastpoplib ls`` (``_watch`` runs the
accounts concurrently): new messages found by UIDL (exact UID bytes plus LIST size), retrieved
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
import threading
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

from .. import _aio
from .._destinations import (
    ImapDestination,
    ImapURL,
    LmtpDestination,
    MdaDestination,
    imap_state_dir,
    lmtp_state_dir,
    mda_state_dir,
)
from .._store import (
    AccountLock,
    Destination,
    DigestIndex,
    Maildir,
    Mbox,
    Outcome,
    Refusal,
    State,
    StoreError,
    check_private_below,
    digest_key,
    state_home,
    uid_key,
)
from ..exceptions import (
    DeleteError,
    InUseError,
    POP3Error,
    POP3TimeoutError,
    RemoteProtocolError,
    ServerError,
    error_proto,
)
from .config import Account, ConfigError
from .report import (
    EXIT_OK,
    EXIT_PARTIAL,
    EXIT_USAGE,
    Progress,
    Report,
    _library_text,
    describe,
    show_bytes,
)
from .storing import store_batch

SAVE_EVERY = 50  # messages between state saves while fetching (always saved before any DELE)
STREAM_ABOVE = 4 << 20  # LIST size above which a message is streamed to disk, not held in memory
# Whole messages are stored in batches (see .storing) while the next batch is retrieved: at most
# two batches in memory, each up to BATCH_BYTES plus one message.
BATCH_BYTES = 1 << 20
MAX_SESSIONS = 3  # sessions per account and run: one lost on a broken or stalled message is resumed
RESUME_WAITS = (0.25, 0.5, 1.0, 2.0)  # seconds between logins refused [IN-USE] on resuming
PERSISTENT_RUNS = 3  # runs in a row a message fails in before it is reported as failing persistently

log = logging.getLogger("fastpoplib.retriever")


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


def _check_state_home(acct: Account) -> None:
    """A destination whose state lives under ``$XDG_STATE_HOME/fastpoplib``: every directory
    from there down to the state's must be the user's and not writable by others (as the
    state directory itself), or another user could swap the state, its journal of what was
    stored, for one of their own. Checked before the destination is opened; StoreError if not."""
    if not (acct.imap or acct.lmtp or acct.mda):
        return  # a Maildir's or mbox's state lives beside it
    home = state_home()
    check_private_below(home, state_dir_of(acct, home))


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
        self.batch: list[tuple[str, bytes]] = []  # (key, bytes) of whole messages waiting to be stored
        self.batch_bytes = 0
        self.on_the_way: set[str] = set()  # digest keys queued or being stored
        self.storer: asyncio.Future[None] | None = None  # the task storing the batches (store_batches)
        self.taken = asyncio.Event()  # set when the storer takes the queued batch
        self.stop_storing = threading.Event()  # set when interrupted: the trip ends after its message

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
            # A message the destination refuses is fine on the server: the cure is there.
            cure = (
                "read or delete it with another client (webmail)"
                if what == "fetched"
                else "make room at the destination or fix what it refuses (quota, recipient, size)"
            )
            self.report.problems.append(
                f"{m.name()} has failed in {runs} runs in a row ({why}); the rest of the mailbox is fetched,"
                f" this message is tried again each run: {cure}"
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
        try:
            try:
                await self.retrieve_small(pop, msgs)
            except (RemoteProtocolError, POP3TimeoutError):
                await self.drain()  # the messages received whole before the connection broke are stored
                raise
            await self.drain()
        except BaseException:
            await self.abandon()
            raise

    async def retrieve_small(self, pop: Any, msgs: list[_Msg]) -> None:
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
                        data = b"\r\n".join(lines) + b"\r\n" if lines else b""  # each line CRLF-ended
                        if not await self.queue(m, data):
                            return
            except ServerError as exc:
                m = pending[done]
                self.problem(m, f"the server said {show_bytes(exc.response)}")
                done += 1
            self.current = None
            pending = pending[done:]

    async def queue(self, m: _Msg, data: bytes) -> bool:
        """Hand a whole message to the store: queued for the storer task, which stores what
        is queued in one worker-thread trip while the following messages arrive. False once
        the store failed (fetching stops)."""
        dkey = digest_key(hashlib.sha256(data).hexdigest(), m.size)
        if dkey in self.on_the_way:
            # The same bytes are on their way to the store (the server lists them twice):
            # their outcome decides whether these are stored.
            await self.drain()
        if self.store_error is not None:
            return False
        key = m.key or dkey
        if self.already_held(m, key, dkey, len(data)):
            return True
        self.handed[key] = (m, len(data), dkey)
        self.on_the_way.add(dkey)
        self.batch.append((key, data))
        self.batch_bytes += len(data)
        if self.storer is None or self.storer.done():
            self.storer_result()
            self.storer = asyncio.ensure_future(self.store_batches())
        while self.batch_bytes >= BATCH_BYTES and not self.storer.done():
            # The store is slower than the server: memory stays bounded.
            self.taken.clear()
            taken = asyncio.ensure_future(self.taken.wait())
            waiting: list[asyncio.Future[Any]] = [self.storer, taken]
            try:
                await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            finally:
                taken.cancel()
        return self.store_error is None

    async def store_batches(self) -> None:
        """The storer task: stores what is queued, a batch per worker-thread trip, and settles
        each batch, until nothing is queued."""
        while self.batch and self.store_error is None:
            batch, self.batch, self.batch_bytes = self.batch, [], 0
            self.taken.set()
            # Shielded: a trip is never abandoned half-way; abandon() stops it between messages.
            stored = await asyncio.shield(store_batch(self.store, batch, self.stop_storing))
            await self.settle(stored.outcomes)
            self.forget(stored.rest)
            if stored.error is not None:
                key, exc = stored.error
                m = self.handed[key][0]
                self.forget([key])
                if not isinstance(exc, OSError):
                    raise exc
                self.cannot_store(m, exc)
        self.forget(key for key, _ in self.batch)  # the store failed: not stored, they stay on the server
        self.batch, self.batch_bytes = [], 0

    def storer_result(self) -> None:
        """Raise what made the storer task fail, if it did."""
        if self.storer is not None and self.storer.done():
            storer, self.storer = self.storer, None
            storer.result()

    async def drain(self) -> None:
        """Wait until everything queued is stored and settled."""
        if self.storer is not None:
            await asyncio.shield(self.storer)  # interrupted here, abandon() waits for it
        self.storer_result()

    async def abandon(self) -> None:
        """Interrupted: the queued messages are dropped, the batch being stored ends after
        its current message (its thread finishes that first) and what it stored is settled."""
        self.forget(key for key, _ in self.batch)
        self.batch, self.batch_bytes = [], 0
        if self.storer is not None:
            self.stop_storing.set()
            await asyncio.wait([self.storer])
            if not self.storer.cancelled():
                self.storer.exception()  # its own failure, if any, gives way to the interruption

    def forget(self, keys: Iterable[str]) -> None:
        """These keys were not (or no longer are) on their way to the store."""
        for key in keys:
            entry = self.handed.pop(key, None)
            if entry is not None:
                self.on_the_way.discard(entry[2])

    def already_held(self, m: _Msg, key: str, dkey: str, size: int) -> bool:
        """Whether the store holds these bytes already (then they are recorded, not stored):
        stored by a session of this run lost before QUIT, by a run reaching this mailbox by
        another route (host name, port), or under the UID this message had before the server
        lost UIDL. Stored once only."""
        held = self.index.get(dkey) or (dkey if dkey in self.known else None)
        if held is None:
            return False
        self.recorded(m, key, dkey, held)
        self.progress.advance(size)
        return True

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
        """Store one large message, given as an async iterator of chunks; False if the store
        failed (fetching stops, the rest goes on)."""
        try:
            delivery = await asyncio.to_thread(self.store.begin)
        except OSError as exc:
            return self.cannot_store(m, exc)
        digest = hashlib.sha256()
        size = 0
        key = None
        try:
            async for chunk in chunks:
                digest.update(chunk)
                size += len(chunk)
                await asyncio.to_thread(delivery.write, chunk)
            dkey = digest_key(digest.hexdigest(), m.size)
            key = m.key or dkey
            if self.already_held(m, key, dkey, size):
                await asyncio.to_thread(delivery.abort)
                return True
            self.handed[key] = (m, size, dkey)
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
            self.on_the_way.discard(dkey)
            if isinstance(outcome, Refusal):
                if not outcome.stop:
                    self.problem(m, outcome.reason, "stored")
                elif self.store_error is None:
                    self.failed.add(m.ident)
                    self.store_error = f"{m.name()} and the rest were not stored: {outcome.reason}"
                    self.report.problems.append(self.store_error)
                    if outcome.pause:
                        self.report.pause = self.store_error
                else:
                    self.failed.add(m.ident)
                continue
            key = outcome.key
            if log.isEnabledFor(logging.DEBUG):  # m.name() escapes the UID: not for every message unasked
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


async def fetch_account(acct: Account, default_maildir: Path, progress: Progress, report: Report | None = None) -> Report:
    """One account's run; its outcome in ``report`` (a new one if None), which a caller that
    passes its own still reads when the run is interrupted (cancelled)."""
    report = report if report is not None else Report(acct.name)
    step = _Step()
    lock: AccountLock | None = None
    run: _Fetch | None = None
    store: Destination | None = None
    cancelled = threading.Event()  # tells lock waits in worker threads to give up
    try:
        step.now = "opening the store"
        await asyncio.to_thread(_check_state_home, acct)
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

