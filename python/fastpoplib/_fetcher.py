"""Exactly-once delivery into an application's own store (a helpdesk's database, an ERP).

The application stores a message, records its key in the same transaction, then calls
``msg.ack()``. Only an acknowledged message is deleted on the server, and a message the
application already holds (``stored(key)`` is true) is never offered again: a crash between
the application's commit and ``ack()`` neither loses the message (it was committed) nor
duplicates it (its key was committed with it). The application's store is the authority; the
fetcher keeps no state of its own.

:class:`Fetcher` drives a logged-in :class:`~fastpoplib.POP3`, :class:`AsyncFetcher` a
logged-in :class:`~fastpoplib.AsyncPOP3`; the decisions (what is new, what may be deleted) are
made once, in :class:`_Plan`, and the two classes only do the I/O.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, Callable, Generator
from typing import TYPE_CHECKING

from ._store import uid_key
from .exceptions import LocalProtocolError, POP3Error

if TYPE_CHECKING:
    from ._aio import AsyncPOP3
    from ._client import POP3

log = logging.getLogger("fastpoplib.fetcher")

# Messages are retrieved pipelined in batches of about this many bytes (at least one message):
# a DELE sent while RETR replies are in flight would make the session hold them all in memory,
# so DELEs go between batches, and memory stays near one batch.
BATCH_BYTES = 16 << 20

Offer = tuple[int, int, bytes, str]  # number, LIST size, exact UID, key


class Message:
    """A new message: ``data`` (bytes, exactly as retrieved, CRLF line ends), ``uid`` (the
    exact UIDL bytes, RFC 1939 §7), ``key`` (str: what to record in your store; it tells this
    message from any other of the mailbox, even one the server later gives the same UID),
    ``number`` and ``size`` (the LIST octet count). Call :meth:`ack` once it is stored."""

    __slots__ = ("number", "size", "uid", "key", "data", "_plan")

    def __init__(self, plan: _Plan, number: int, size: int, uid: bytes, key: str, data: bytes) -> None:
        self.number, self.size, self.uid, self.key, self.data = number, size, uid, key, data
        self._plan = plan

    def ack(self) -> None:
        """The application has stored this message durably: it may now be deleted on the
        server (``delete=True``; the DELE is sent after the current batch of retrievals or at
        the end of the iteration, and takes effect at QUIT, RFC 1939 §6). No I/O here.
        Raises LocalProtocolError after the iteration it came from has ended."""
        self._plan.ack(self)

    @property
    def acked(self) -> bool:
        return self.key in self._plan.acked

    def __repr__(self) -> str:
        return f"<Message {self.number} uid={self.uid!r} size={self.size} acked={self.acked}>"


class _Plan:
    """What one iteration decides, without I/O: which messages are new, which to delete."""

    def __init__(self, stored: Callable[[str], bool], delete: bool) -> None:
        self.stored, self.delete = stored, delete
        self.acked: set[str] = set()
        self.to_delete: list[int] = []  # numbers acknowledged or already stored, DELE not yet sent
        self.open = True

    def new(self, sizes: dict[int, int], uid_lines: list[bytes]) -> list[list[Offer]]:
        """From LIST sizes (number -> octets) and UIDL lines: the messages to offer, in batches
        of about BATCH_BYTES; the already stored are queued for deletion (``delete=True``)."""
        uids: dict[int, bytes] = {}
        for line in uid_lines:
            parts = line.split(None, 1)
            if len(parts) == 2 and parts[0].isdigit():
                uids[int(parts[0])] = parts[1].strip()
        if sizes and not uids:
            raise POP3Error(
                "the server has no UIDL (RFC 1939 §7), so a new message cannot be told from one already"
                " stored; exactly-once delivery needs a server with UIDL"
            )
        keys = {n: uid_key("", uid, sizes[n]) for n, uid in uids.items() if n in sizes}
        counts: dict[str, int] = {}
        for key in keys.values():
            counts[key] = counts.get(key, 0) + 1
        offered: list[Offer] = []
        for number in sorted(keys):
            key = keys[number]
            if counts[key] > 1:
                log.warning("message %d: its UID is listed twice with the same size; not offered", number)
            elif self.stored(key):
                if self.delete:
                    self.to_delete.append(number)
            else:
                offered.append((number, sizes[number], uids[number], key))
        batches: list[list[Offer]] = []
        weight = BATCH_BYTES
        for offer in offered:
            if weight + offer[1] > BATCH_BYTES:
                batches.append([])
                weight = 0
            batches[-1].append(offer)
            weight += offer[1]
        return batches

    def ack(self, msg: Message) -> None:
        if not self.open:
            raise LocalProtocolError(
                "ack() after its iteration ended; acknowledge each message inside the loop that yielded it"
            )
        if msg.key not in self.acked:
            self.acked.add(msg.key)
            if self.delete:
                self.to_delete.append(msg.number)

    def take_deletions(self) -> list[int]:
        numbers, self.to_delete = self.to_delete, []
        return numbers


def _data(lines: list[bytes]) -> bytes:
    return b"".join(line + b"\r\n" for line in lines)


class Fetcher:
    """Exactly-once retrieval for an application with its own store, over a logged-in
    :class:`~fastpoplib.POP3` (or ``POP3_SSL``)::

        with fastpoplib.POP3_SSL("pop.example.com") as pop:
            pop.login("me", password)
            for msg in fastpoplib.Fetcher(pop, stored=have_key, delete=True).new_messages():
                save(msg.key, msg.data)  # commit the key with the message
                msg.ack()

    ``stored(key) -> bool`` says whether the application already holds the message with
    this key (a query of its own store). ``delete``: delete acknowledged and already stored
    messages on the server; deletions take effect at QUIT, which ``with`` sends when the block
    ends normally (after an exception it closes without QUIT: nothing is deleted, and the next
    run deletes what ``stored`` then reports). The server must offer UIDL (else POP3Error).
    Raises what the client's commands raise (ServerError, POP3ConnectionError...)."""

    def __init__(self, pop: POP3, *, stored: Callable[[str], bool], delete: bool = False) -> None:
        self.pop, self.stored, self.delete = pop, stored, delete

    def new_messages(self) -> Generator[Message, None, None]:
        """Each message not yet stored, in server order, retrieved pipelined (RFC 2449
        PIPELINING when offered) in batches of about BATCH_BYTES (16 MiB). Leaving the loop
        early is safe: what was not acknowledged stays on the server, and acknowledged messages
        whose DELE was not sent yet are deleted by the next run (``stored`` reports them)."""
        plan = _Plan(self.stored, self.delete)
        pop = self.pop
        try:
            infos = pop.messages()
            uid_lines = pop.uidl()[1] if any(i.uid is not None for i in infos) else []  # exact bytes
            for offers in plan.new({i.number: i.size for i in infos}, uid_lines):
                if deletions := plan.take_deletions():
                    pop.dele_many(deletions)
                replies = pop.retr_many(number for number, *_ in offers)
                try:
                    for (number, size, uid, key), (_, (_, lines, _)) in zip(offers, replies):
                        yield Message(plan, number, size, uid, key, _data(lines))
                finally:
                    replies.close()  # type: ignore[attr-defined]
            if deletions := plan.take_deletions():
                pop.dele_many(deletions)
        finally:
            plan.open = False


class AsyncFetcher:
    """:class:`Fetcher` over a logged-in :class:`~fastpoplib.AsyncPOP3`: ``async for msg in
    AsyncFetcher(pop, stored=..., delete=True).new_messages(): ...; msg.ack()``. Leave the
    loop early only inside ``contextlib.aclosing(...)`` (or let the iteration end), so the
    replies still in flight are dropped before the next command."""

    def __init__(self, pop: AsyncPOP3, *, stored: Callable[[str], bool], delete: bool = False) -> None:
        self.pop, self.stored, self.delete = pop, stored, delete

    async def new_messages(self) -> AsyncGenerator[Message, None]:
        """As :meth:`Fetcher.new_messages`."""
        plan = _Plan(self.stored, self.delete)
        pop = self.pop
        try:
            infos = await pop.messages()
            uid_lines = (await pop.uidl())[1] if any(i.uid is not None for i in infos) else []
            for offers in plan.new({i.number: i.size for i in infos}, uid_lines):
                if deletions := plan.take_deletions():
                    await pop.dele_many(deletions)
                replies = pop.retr_many(number for number, *_ in offers)
                try:
                    i = 0
                    async for _, (_, lines, _) in replies:
                        number, size, uid, key = offers[i]
                        i += 1
                        yield Message(plan, number, size, uid, key, _data(lines))
                finally:
                    await replies.aclose()  # type: ignore[attr-defined]
            if deletions := plan.take_deletions():
                await pop.dele_many(deletions)
        finally:
            plan.open = False
