"""Debug output (poplib's ``set_debuglevel`` prints) and the ``fastpoplib`` logger. The session
records the lines itself, with secrets already masked (a password, digest or SASL response
never reaches either); this module only shows them, each log record naming its connection."""

from __future__ import annotations

import itertools
import logging
from typing import List, Tuple

logger = logging.getLogger("fastpoplib")

_ids = itertools.count(1)


def label(host: str, port: int) -> str:
    """``host:port#n``: tells apart the records of concurrent connections."""
    return f"{host}:{port}#{next(_ids)}"


def wanted(debuglevel: int) -> bool:
    """Whether the session should record lines (debug output on, or DEBUG logging)."""
    return bool(debuglevel) or logger.isEnabledFor(logging.DEBUG)


def show(debuglevel: int, conn: str, lines: List[Tuple[bool, bytes]]) -> None:
    """Prints as poplib does (``*cmd*`` at level 1, ``*put*`` and ``*resp*`` at level 2) and
    logs ``C:``/``S:`` lines at DEBUG."""
    debug = logger.isEnabledFor(logging.DEBUG)
    for sent, line in lines:
        if sent:
            if debuglevel:
                print("*cmd*", repr(line.decode("utf-8", "replace")))
            if debuglevel > 1:
                print("*put*", repr(line))
        elif debuglevel > 1:
            print("*resp*", repr(line))
        if debug:
            logger.debug("%s %s %s", conn, "C:" if sent else "S:", line.decode("utf-8", "replace"))


def event(level: int, conn: str, message: str, *args: object) -> None:
    """An INFO or WARNING record about connection ``conn`` (connect, TLS, login, quit)."""
    if logger.isEnabledFor(level):
        logger.log(level, "%s " + message, conn, *args)
