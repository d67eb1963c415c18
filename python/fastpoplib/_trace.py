"""Debug output (poplib's ``set_debuglevel`` prints) and the ``fastpoplib`` logger, with
secrets masked: a password, digest or SASL response never reaches either."""

from __future__ import annotations

import logging

from . import _core

logger = logging.getLogger("fastpoplib")


def command(debuglevel: int, line: bytes, secret: bool) -> None:
    if not debuglevel and not logger.isEnabledFor(logging.DEBUG):
        return
    shown = _core.redact(line, secret)
    if debuglevel:
        print("*cmd*", repr(shown.decode("utf-8", "replace")))
    if debuglevel > 1:
        print("*put*", repr(shown))
    logger.debug("C: %s", shown.decode("utf-8", "replace"))


def response(debuglevel: int, resp: bytes) -> None:
    if debuglevel > 1:
        print("*resp*", repr(resp))
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug("S: %s", resp.decode("utf-8", "replace"))
