"""Deliberate misuse of fastpoplib that `mypy --strict` must report (tests/typing/test_typing.py).

Each line ending in ``# E: <code>`` must get exactly that mypy error code, and no other line
any error: a signature that decays to ``Any`` (or loses an overload, or stops being a
coroutine) makes this file pass silently, and the test fail. Never run.
"""

from __future__ import annotations

from email.message import EmailMessage
from typing import List, Tuple

import fastpoplib


def one_argument(done: int) -> None:
    print(done)


def blocking(pop: fastpoplib.POP3) -> None:
    x: bytes = pop.stat()  # E: assignment
    lines: List[str] = pop.retr(1)[1]  # E: assignment
    count: int = pop.stat()[1]
    size: Tuple[int, int] = pop.list(1)  # E: assignment
    listing: bytes = pop.list()  # E: assignment
    uid: bytes = pop.uidl()  # E: assignment
    pop.retr(b"1")  # E: arg-type
    pop.top(1, "10")  # E: arg-type
    pop.user(42)  # E: arg-type
    pop.dele_many([b"1"])  # E: list-item
    message: bytes = pop.retr_message(1)  # E: assignment
    text: str = pop.retr_bytes(1)  # E: assignment
    sizes: List[int] = pop.messages()  # E: assignment
    pop.retr_to(1, 42)  # E: arg-type
    pop.retr_to(1, "out.eml", progress=one_argument)  # E: arg-type
    pop.login("me", "secret", allow_insecure="yes")  # E: arg-type
    caps: List[str] = pop.capa()  # E: assignment
    cipher: str = pop.tls_info[1]  # E: index
    pop.stat(1)  # E: call-arg
    gone = pop.noop().decode().nonexistent  # E: attr-defined
    for _number, (_resp, body, _octets) in pop.retr_many([1, 2]):
        body.append("text")  # E: arg-type
    for chunk in pop.retr_iter(1):
        chunk.encode()  # E: attr-defined
    print(x, lines, count, size, listing, uid, message, text, sizes, caps, cipher, gone)


async def not_awaited(pop: fastpoplib.AsyncPOP3) -> None:
    stat: Tuple[int, int] = pop.stat()  # E: assignment
    messages, octets = pop.stat()  # E: misc
    resp: bytes = pop.dele(1)  # E: assignment
    parsed: EmailMessage = pop.retr_message(1)  # E: assignment
    for item in pop.retr_many([1]):  # E: attr-defined
        print(item)
    async for chunk in pop.retr_iter(1):
        chunk.encode()  # E: attr-defined
    await pop.retr_many([1])  # E: misc
    wrong: str = await pop.noop()  # E: assignment
    print(stat, resp, parsed, wrong)


async def wrong_connect(host: str) -> None:
    pop: fastpoplib.POP3 = await fastpoplib.AsyncPOP3_SSL.connect(host)  # E: assignment
    fastpoplib.AsyncPOP3_SSL.connect(host, cafile=42)  # E: arg-type
    fastpoplib.POP3_SSL(host, timeout="5")  # E: arg-type
    print(pop)
