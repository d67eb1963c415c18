"""Typed usage of fastpoplib, checked with `mypy --strict` by tests/typing/test_typing.py.

Correct code: it must pass with no error, and every `assert_type` pins the exact type a call
gives (an `Any` there is an error, so no `Any` leaks out of the public API unnoticed). Never
run: it only has to type-check.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import sqlite3
import ssl
from email.message import EmailMessage
from typing import Dict, List, Optional, Set, Tuple

from typing_extensions import assert_type

import fastpoplib

LongResponse = Tuple[bytes, List[bytes], int]


def blocking_commands(pop: fastpoplib.POP3) -> None:
    assert_type(pop.getwelcome(), bytes)
    assert_type(pop.welcome, bytes)
    pop.set_debuglevel(1)
    assert_type(pop.user("me"), bytes)
    assert_type(pop.pass_("secret"), bytes)
    assert_type(pop.apop("me", "secret"), bytes)
    assert_type(pop.rpop("me"), bytes)
    assert_type(pop.auth("PLAIN", lambda challenge: "\0me\0secret"), bytes)
    assert_type(pop.login("me", "secret", mechanisms=["PLAIN"]), bytes)
    assert_type(pop.stat(), Tuple[int, int])
    assert_type(pop.list(), LongResponse)
    assert_type(pop.list(1), bytes)
    assert_type(pop.retr(1), LongResponse)
    assert_type(pop.top(1, 10), LongResponse)
    assert_type(pop.uidl(), LongResponse)
    assert_type(pop.uidl("1"), bytes)
    assert_type(pop.dele(1), bytes)
    assert_type(pop.noop(), bytes)
    assert_type(pop.rset(), bytes)
    assert_type(pop.utf8(), bytes)
    assert_type(pop.lang(), LongResponse)
    assert_type(pop.lang("de"), bytes)
    caps = pop.capa()
    assert_type(caps, fastpoplib.Capabilities)
    plain: Dict[str, List[str]] = caps  # a dict, as poplib returns
    assert plain is caps
    assert_type(caps.sasl, List[str])
    assert_type(caps.login_delay, Optional[int])
    assert_type(pop.capabilities, Optional[fastpoplib.Capabilities])
    assert_type(pop.auth_mechanism, Optional[str])
    assert_type(pop.tls_info, Optional[Tuple[str, str]])
    assert_type(pop.sock.gettimeout(), Optional[float])
    assert_type(pop.stls(cafile="ca.pem"), bytes)
    assert_type(pop.quit(), bytes)
    pop.close()


def blocking_extras(pop: fastpoplib.POP3) -> int:
    infos = pop.messages()
    assert_type(infos, List[fastpoplib.MessageInfo])
    assert_type(infos[0].uid, Optional[str])
    assert_type(infos[0][0], int)
    assert_type(infos[0][-1], Optional[str])
    for number, (resp, lines, octets) in pop.retr_many(range(1, 4)):
        assert_type(number, int)
        assert_type(resp, bytes)
        assert_type(lines, List[bytes])
        assert_type(octets, int)
    for uid, reply in pop.top_many(["1", "2"], 0):
        assert_type(uid, str)
        assert_type(reply, LongResponse)
    assert_type(pop.dele_many([1, 2]), List[bytes])
    assert_type(pop.retr_bytes(1), bytes)
    for chunk in pop.retr_iter(1, chunk_size=65536):
        assert_type(chunk, bytes)
    assert_type(pop.retr_message(1), EmailMessage)
    assert_type(pop.top_headers(1), EmailMessage)
    written = pop.retr_to(1, "out.eml", progress=lambda done, total: print(done, total))
    assert_type(pop.retr_to(1, io.BytesIO()), int)
    return written


def fetch_all(host: str, user: str, password: str) -> List[bytes]:
    with fastpoplib.POP3_SSL(host, context=ssl.create_default_context(), timeout=10) as pop:
        assert_type(pop, fastpoplib.POP3_SSL)
        pop.user(user)
        pop.pass_(password)
        count, _ = pop.stat()
        out: List[bytes] = []
        for number in range(1, count + 1):
            resp, lines, octets = pop.retr(number)
            out.append(b"\r\n".join(lines))
        return out


def plain(host: str) -> None:
    with fastpoplib.POP3(host, 110, 5.0, source_address=("0.0.0.0", 0), max_line_length=4096) as pop:
        assert_type(pop, fastpoplib.POP3)


async def async_commands(pop: fastpoplib.AsyncPOP3) -> None:
    assert_type(pop.getwelcome(), bytes)
    assert_type(await pop.user("me"), bytes)
    assert_type(await pop.pass_("secret"), bytes)
    assert_type(await pop.apop("me", "secret"), bytes)
    assert_type(await pop.auth("XOAUTH2", lambda challenge: b"token"), bytes)
    assert_type(await pop.login("me", oauth2_token="token"), bytes)
    assert_type(await pop.stat(), Tuple[int, int])
    assert_type(await pop.list(), LongResponse)
    assert_type(await pop.list(1), bytes)
    assert_type(await pop.retr(1), LongResponse)
    assert_type(await pop.top(1, 0), LongResponse)
    assert_type(await pop.uidl(), LongResponse)
    assert_type(await pop.uidl(1), bytes)
    assert_type(await pop.dele(1), bytes)
    assert_type(await pop.noop(), bytes)
    assert_type(await pop.rset(), bytes)
    assert_type(await pop.utf8(), bytes)
    assert_type(await pop.capa(), fastpoplib.Capabilities)
    assert_type(await pop.messages(), List[fastpoplib.MessageInfo])
    async for number, (resp, lines, octets) in pop.retr_many(range(1, 4)):
        assert_type(number, int)
        assert_type((resp, lines, octets), LongResponse)
    async for _number, reply in pop.top_many([1], 5):
        assert_type(reply, LongResponse)
    assert_type(await pop.dele_many(range(1, 3)), List[bytes])
    assert_type(await pop.retr_bytes(1), bytes)
    async for chunk in pop.retr_iter(1):
        assert_type(chunk, bytes)
    assert_type(await pop.retr_to(1, "out.eml"), int)
    assert_type(await pop.retr_message(1), EmailMessage)
    assert_type(await pop.top_headers(1), EmailMessage)
    assert_type(await pop.stls(), bytes)
    assert_type(pop.tls_info, Optional[Tuple[str, str]])
    assert_type(await pop.quit(), bytes)
    await pop.aclose()


async def fetch_async(host: str, user: str, token: str) -> Tuple[int, int]:
    async with fastpoplib.AsyncPOP3_SSL.connect(host, cafile="ca.pem") as pop:
        assert_type(pop, fastpoplib.AsyncPOP3_SSL)
        await pop.login(user, oauth2_token=token)
        stat: Tuple[int, int] = await pop.stat()
        async for number, (_resp, _lines, _octets) in pop.retr_many(range(1, stat[0] + 1)):
            assert isinstance(number, int)
        return stat


async def connect_awaited(host: str) -> None:
    pop = await fastpoplib.AsyncPOP3.connect(host, 110, timeout=5)
    assert_type(pop, fastpoplib.AsyncPOP3)
    async with fastpoplib.AsyncPOP3(host) as again:
        assert_type(again, fastpoplib.AsyncPOP3)
    await pop.quit()


def handle_errors(host: str) -> str:
    try:
        fastpoplib.POP3(host, timeout=5).quit()
    except fastpoplib.AuthenticationError as exc:
        return exc.response.decode()
    except fastpoplib.error_proto as exc:
        return str(exc)
    except TimeoutError:
        return "timeout"
    return "ok"


def exactly_once(host: str, user: str, password: str, db: sqlite3.Connection) -> int:
    def stored(key: str) -> bool:
        return db.execute("SELECT 1 FROM mail WHERE key = ?", (key,)).fetchone() is not None

    count = 0
    with fastpoplib.POP3_SSL(host) as pop:
        pop.login(user, password)
        for msg in fastpoplib.Fetcher(pop, stored=stored, delete=True).new_messages():
            assert_type(msg, fastpoplib.Message)
            data: bytes = msg.data
            with db:
                db.execute("INSERT INTO mail (key, body) VALUES (?, ?)", (msg.key, data))
            msg.ack()
            count += 1
    return count


async def exactly_once_async(host: str, user: str, token: str, keys: Set[str]) -> List[bytes]:
    out: List[bytes] = []
    async with fastpoplib.AsyncPOP3_SSL.connect(host) as pop:
        await pop.login(user, oauth2_token=token)
        async with contextlib.aclosing(fastpoplib.AsyncFetcher(pop, stored=keys.__contains__).new_messages()) as msgs:
            async for msg in msgs:
                out.append(msg.data)
                keys.add(msg.key)
                msg.ack()
    return out


if __name__ == "__main__":
    asyncio.run(fetch_async("pop.example.com", "me", "token"))
