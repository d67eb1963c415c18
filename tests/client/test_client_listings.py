"""``messages()``: LIST and UIDL merged into ``MessageInfo`` rows that keep the tuple
behaviour code relies on while costing less memory than poplib's two lists, and a server that
gives a message number twice is refused by name. Sync and async."""

from __future__ import annotations

import copy
import gc
import pickle
import sys
from collections.abc import Sequence
from typing import Any, List, Tuple

import pytest

import fastpoplib
from support.clients import logged_in
from fastpoplib import MessageInfo
from fastpoplib.testing import Fault, Mailbox


def listed(p: Any) -> List[Tuple[int, int, str]]:
    sizes = [tuple(int(w) for w in line.split()) for line in p.list()[1]]
    uids = dict(line.split() for line in p.uidl()[1])
    return [(n, size, uids[b"%d" % n].decode()) for n, size in sizes]


def test_rows_behave_as_the_tuples_they_stand_for(kind: str, pop3_server: Any) -> None:
    p = logged_in(kind, pop3_server.host, pop3_server.port)
    rows = p.messages()
    want = listed(p)
    assert type(rows) is list and rows == want and len(rows) == 12
    row = rows[2]
    number, size, uid = row
    assert (number, size, uid) == want[2] == (row.number, row.size, row.uid) == tuple(row)
    assert (row[0], row[1], row[2], row[-1], row[-3]) == (number, size, uid, uid, number)
    assert row[:2] == (number, size) and row[::-1] == (uid, size, number) and len(row) == 3
    with pytest.raises(IndexError):
        row[3]
    assert hash(row) == hash(want[2]) and want[2] in set(rows) and row in [want[2]]
    assert sorted(rows, reverse=True)[0] == rows[-1] and rows[0] < rows[1] and rows[0] < want[1]
    assert isinstance(row, Sequence) and uid in row and list(reversed(row)) == [uid, size, number]
    assert row.index(size) == 1 and row.count(number) == 1 + (size == number) and row.count("x") == 0
    assert repr(row) == f"MessageInfo(number={number}, size={size}, uid={uid!r})"
    assert pickle.loads(pickle.dumps(rows)) == rows and copy.deepcopy(row) == row
    assert MessageInfo(number, size, uid) == row and row != (number, size)
    assert row._asdict() == {"number": number, "size": size, "uid": uid} and MessageInfo._fields == ("number", "size", "uid")
    assert row._replace(uid=None) == (number, size, None)
    p.quit()


def test_a_row_costs_less_than_poplibs_two_lines(kind: str, pop3_server_factory: Any) -> None:
    """poplib's ``list()`` + ``uidl()`` hold two short ``bytes`` per message (about 110
    bytes with their list slots); a row with a 16-character unique-id held about 200 as a
    named tuple of two ``int``s and a ``str``. Counted as ``sys.getsizeof`` counts, the
    unique-id's own bytes included."""
    box = Mailbox([b"Subject: %d\r\n\r\nbody\r\n" % i for i in range(3)], uids=["%016X" % (10**12 + i) for i in range(3)])
    srv = pop3_server_factory(mailbox=box)
    p = logged_in(kind, srv.host, srv.port)
    rows = p.messages()
    p.quit()
    for row in rows:
        held = sys.getsizeof(row) + sum(sys.getsizeof(o) for o in gc.get_referents(row) if not isinstance(o, type))
        assert held <= 100, held
    assert [r.uid for r in rows] == ["%016X" % (10**12 + i) for i in range(3)]


def test_unique_ids_keep_the_servers_bytes(kind: str, pop3_server: Any) -> None:
    pop3_server.add_fault(Fault.reply(b"+OK\r\n1 caf\xc3\xa9\r\n2 \xff\xfe\r\n.\r\n", on="UIDL"))
    p = logged_in(kind, pop3_server.host, pop3_server.port)
    rows = p.messages()
    assert [r.uid for r in rows[:3]] == ["café", "\udcff\udcfe", None]
    assert rows[1].uid.encode("utf-8", "surrogateescape") == b"\xff\xfe"
    assert pickle.loads(pickle.dumps(rows[1])).uid == "\udcff\udcfe"
    p.quit()


def numbered(count: int, line: Any) -> bytes:
    return b"+OK\r\n" + b"".join(line(n) + b"\r\n" for n in range(1, count + 1)) + b".\r\n"


# (verb, reply, the number given twice): after a reply, in it, before the row it repeats.
TWICE = [
    ("UIDL", b"+OK\r\n1 a\r\n2 b\r\n1 c\r\n.\r\n", 1),
    ("UIDL", b"+OK\r\n3 c\r\n3 d\r\n1 a\r\n.\r\n", 3),
    ("UIDL", b"+OK\r\n1 a\r\n99 x\r\n99 y\r\n.\r\n", 99),
    ("LIST", b"+OK\r\n1 10\r\n2 20\r\n2 20\r\n.\r\n", 2),
    ("LIST", b"+OK\r\n2 20\r\n1 10\r\n2 30\r\n.\r\n", 2),
]


@pytest.mark.parametrize("pipelining", [True, False])
@pytest.mark.parametrize("verb,reply,number", TWICE)
def test_a_number_given_twice_is_refused_by_name(
    kind: str, pipelining: bool, verb: str, reply: bytes, number: int, pop3_server_factory: Any
) -> None:
    """Which unique-id (or size) would be right? The old code kept the first silently. The
    reply was read whole: the connection stays usable."""
    srv = pop3_server_factory(pipelining=pipelining)
    srv.add_fault(Fault.reply(reply, on=verb))
    p = logged_in(kind, srv.host, srv.port)
    with pytest.raises(fastpoplib.RemoteProtocolError, match=f"{verb} reply gives message {number} twice"):
        p.messages()
    assert p.noop().startswith(b"+OK")
    assert p.messages() == listed(p)
    p.quit()


def test_a_number_given_twice_far_into_a_long_uidl(kind: str, pop3_server: Any) -> None:
    """Rows are converted while a long UIDL arrives: a duplicate found after thousands of
    them still fails the whole call, not a partial list."""
    count = 6000
    pop3_server.add_fault(Fault.reply(numbered(count, lambda n: b"%d %d" % (n, 100 + n)), on="LIST"))
    uidl = numbered(count, lambda n: b"%d uid-%020d" % (n, n))
    pop3_server.add_fault(Fault.reply(uidl[:-3] + b"17 again\r\n.\r\n", on="UIDL"))
    p = logged_in(kind, pop3_server.host, pop3_server.port)
    with pytest.raises(fastpoplib.RemoteProtocolError, match="UIDL reply gives message 17 twice"):
        p.messages()
    assert p.stat()[0] == 12
    p.quit()
