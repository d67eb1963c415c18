"""Typed usage of fastpoplib, checked with `mypy --strict` by tests/test_typing.py."""

from __future__ import annotations

import asyncio
import ssl
from typing import List, Tuple

import fastpoplib


def fetch_all(host: str, user: str, password: str) -> List[bytes]:
    with fastpoplib.POP3_SSL(host, context=ssl.create_default_context()) as pop:
        pop.user(user)
        pop.pass_(password)
        count, _ = pop.stat()
        out: List[bytes] = []
        for number in range(1, count + 1):
            resp, lines, octets = pop.retr(number)
            out.append(b"\r\n".join(lines))
        infos: List[fastpoplib.MessageInfo] = pop.messages()
        assert all(isinstance(i.size, int) for i in infos)
        return out


async def fetch_async(host: str, user: str, token: str) -> Tuple[int, int]:
    async with fastpoplib.AsyncPOP3_SSL.connect(host) as pop:
        await pop.login(user, oauth2_token=token)
        stat: Tuple[int, int] = await pop.stat()
        async for number, (_resp, _lines, _octets) in pop.retr_many(range(1, stat[0] + 1)):
            assert isinstance(number, int)
        return stat


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


if __name__ == "__main__":
    asyncio.run(fetch_async("pop.example.com", "me", "token"))
