"""Result types shared by the blocking and asyncio clients (and built by the Rust session)."""

from __future__ import annotations

from typing import Dict, List, NamedTuple, Optional


class MessageInfo(NamedTuple):
    """One message of the maildrop, as :meth:`POP3.messages` returns it.

    ``number``: the message number (RFC 1939 §5 LIST); ``size``: its size in octets as LIST
    gives it; ``uid``: its UIDL unique-id (RFC 1939 §7), or ``None`` when the server has no
    UIDL. Unique-ids are kept exactly: decoded as UTF-8 with ``surrogateescape``, so
    ``uid.encode("utf-8", "surrogateescape")`` gives the server's bytes back.
    """

    number: int
    size: int
    uid: Optional[str]


class Capabilities(Dict[str, List[str]]):
    """CAPA (RFC 2449) as poplib returns it (``{name: [args]}``, so it compares equal to
    poplib's dict), with typed accessors for what a client decides on."""

    def has(self, name: str) -> bool:
        """Whether capability ``name`` is advertised (case-insensitive)."""
        return name.upper() in (key.upper() for key in self)

    def _args(self, name: str) -> List[str]:
        return next((v for k, v in self.items() if k.upper() == name), [])

    @property
    def pipelining(self) -> bool:
        return self.has("PIPELINING")

    @property
    def stls(self) -> bool:
        return self.has("STLS")

    @property
    def utf8(self) -> bool:
        return self.has("UTF8")

    @property
    def sasl(self) -> List[str]:
        """SASL mechanisms offered (upper case)."""
        return [m.upper() for m in self._args("SASL")]

    @property
    def login_delay(self) -> Optional[int]:
        """Seconds between logins (RFC 2449 LOGIN-DELAY), if advertised."""
        args = self._args("LOGIN-DELAY")
        return int(args[0]) if args and args[0].isdigit() else None

    @property
    def expire(self) -> Optional[str]:
        """Days messages stay on the server (``"NEVER"`` possible), if advertised."""
        args = self._args("EXPIRE")
        return args[0] if args else None

    @property
    def implementation(self) -> Optional[str]:
        args = self._args("IMPLEMENTATION")
        return " ".join(args) if args else None
