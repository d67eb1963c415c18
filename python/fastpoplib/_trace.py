"""Debug output (poplib's ``set_debuglevel`` prints), poplib's audit events and the
``fastpoplib`` logger. The session records the lines itself, with secrets already masked (a
password, digest or SASL response never reaches any of them); this module only shows them,
each log record naming its connection."""

from __future__ import annotations

import itertools
import logging
import sys
from typing import Any, List, Tuple

from . import _secrets

logger = logging.getLogger("fastpoplib")
# A library prints nothing unless the application configures logging (the logging HOWTO):
# without this, records of WARNING and above would reach stderr through logging.lastResort.
logger.addHandler(logging.NullHandler())

_ids = itertools.count(1)


def label(host: str, port: int) -> str:
    """``host:port#n``: tells apart the records of concurrent connections."""
    return f"{host}:{port}#{next(_ids)}"


def show(client: Any, lines: List[Tuple[bool, bytes]]) -> None:
    """Raises poplib's ``poplib.putline`` audit event for each line sent, prints as poplib does
    (``*cmd*`` at level 1; ``*put*``, ``*get*`` and ``*resp*`` at level 2) and logs
    ``C:``/``S:`` lines at DEBUG. Secrets sent arrive masked from the session; one the
    server echoes is masked here (``client._secrets``)."""
    debuglevel = client._debugging
    debug = logger.isEnabledFor(logging.DEBUG)
    secrets = getattr(client, "_secrets", ())
    for sent, line in lines:
        if not sent and secrets:
            line = _secrets.redact(line, secrets)  # the server echoed a password or token
        if sent:
            sys.audit("poplib.putline", client, line)
            if debuglevel:
                print("*cmd*", repr(line.decode("utf-8", "replace")))
            if debuglevel > 1:
                print("*put*", repr(line))
        elif debuglevel > 1:
            print("*get*", repr(line + b"\r\n"))  # the session keeps lines without their end
            print("*resp*", repr(line))
        if debug:
            logger.debug("%s %s %s", client._label, "C:" if sent else "S:", line.decode("utf-8", "replace"))


def event(level: int, conn: str, message: str, *args: object) -> None:
    """An INFO or WARNING record about connection ``conn`` (connect, TLS, login, quit)."""
    if logger.isEnabledFor(level):
        logger.log(level, "%s " + message, conn, *args)
