"""Result types shared by the blocking and asyncio clients (and built by the Rust session)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Dict, List, Optional, Protocol, Tuple

from ._core import MessageInfo

#: ``(response line, [body lines, without line ends, dot-unstuffed], octets)``: what RETR,
#: TOP, LIST, UIDL and LANG return, as in poplib (``octets``: the body's size, each line
#: counted with its line end, as poplib counts it).
LongResponse = Tuple[bytes, List[bytes], int]


class SupportsWriteBytes(Protocol):
    """A binary file-like destination for :meth:`POP3.retr_to`: anything with ``write(bytes)``."""

    def write(self, data: bytes, /) -> object:
        """Write ``data`` (a chunk of the message)."""


class SocketLike(Protocol):
    """What ``POP3.sock`` offers: poplib's ``socket.socket`` (when a ``context`` is used or a
    subclass brings its own socket) or fastpoplib's view of its Rust-owned socket."""

    def gettimeout(self) -> Optional[float]:
        """The timeout in seconds (None: none)."""

    def settimeout(self, value: Optional[float], /) -> None:
        """Set the timeout in seconds (None: none)."""

    def fileno(self) -> int:
        """The file descriptor."""

    def getpeername(self) -> Any:
        """The server's address."""

    def getsockname(self) -> Any:
        """The local address."""

    def shutdown(self, how: int, /) -> None:
        """Shut the connection down (interrupts a call in progress)."""

    def close(self) -> None:
        """Close the socket."""


# ``MessageInfo``, one row of :meth:`POP3.messages`, is kept natively by the extension (two
# integers and the unique-id's bytes: less than half a named tuple's memory) and is still the
# sequence ``(number, size, uid)`` it was.
Sequence.register(MessageInfo)


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
        """PIPELINING advertised: the batch calls send a window of commands at once."""
        return self.has("PIPELINING")

    @property
    def stls(self) -> bool:
        """STLS advertised (RFC 2595)."""
        return self.has("STLS")

    @property
    def utf8(self) -> bool:
        """UTF8 advertised (RFC 6856)."""
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
        """The server's IMPLEMENTATION string, if advertised."""
        args = self._args("IMPLEMENTATION")
        return " ".join(args) if args else None
