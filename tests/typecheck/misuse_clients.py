"""Wrong use of the client classes, each line an error mypy must report.

Checked by tests/test_typing.py with `mypy --strict` (so `--warn-unused-ignores`): each
`# type: ignore[code]` must silence an error of that code on its line; a misuse that mypy does
not report leaves its ignore unused and fails the test. These are the mistakes that typeshed's
poplib stubs catch, and the asyncio ones (a coroutine used as its result).
"""

from __future__ import annotations

import fastpoplib


def blocking_misuse(pop: fastpoplib.POP3) -> None:
    x: bytes = pop.stat()  # type: ignore[assignment]
    lines: list[str] = pop.retr(1)[1]  # type: ignore[assignment]
    octets: str = pop.retr(1)[2]  # type: ignore[assignment]
    welcome: str = pop.getwelcome()  # type: ignore[assignment]
    count, size = pop.stat()
    count + "1"  # type: ignore[operator]
    listing: list[str] = pop.list()[1]  # type: ignore[assignment]
    uid: str = pop.messages()[0].uid  # type: ignore[assignment]
    written: bytes = pop.retr_to(1, "message.eml")  # type: ignore[assignment]
    for number, (_resp, _body, _n) in pop.retr_many([1, 2]):
        number + b""  # type: ignore[operator]
    pop.set_debuglevel("2")  # type: ignore[arg-type]
    del x, lines, octets, welcome, size, listing, uid, written


async def async_misuse(pop: fastpoplib.AsyncPOP3) -> None:
    pop.stat()  # type: ignore[unused-coroutine]
    count: int = pop.stat()[0]  # type: ignore[index]
    stat: tuple[int, int] = pop.stat()  # type: ignore[assignment]
    lines: list[str] = (await pop.retr(1))[1]  # type: ignore[assignment]
    for item in pop.retr_many([1]):  # type: ignore[attr-defined]
        del item
    del count, stat, lines
