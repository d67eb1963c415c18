"""A string that never shows itself: tokens and client secrets are held as :class:`Secret`, so
a repr, a log record or a traceback's locals print ``****``."""

from __future__ import annotations

from typing import Any, Tuple


class Secret:
    """Holds a secret string; :meth:`reveal` is the one way to read it (where it is sent)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError("a secret is a str")
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('****')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> Tuple[Any, ...]:
        raise TypeError("a Secret is not pickled")
