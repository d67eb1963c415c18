"""``os.fork()`` with connections open: the child disowns every connection it inherited.

The parent goes on using its connections, so the child must never write to them, shut them
down or QUIT, whichever way it later drops them (``close()``, the end of a ``with`` block,
``aclose()``, garbage collection, asyncio's own clean-up of a stream). Right after the fork,
each inherited socket descriptor is replaced, in the child only, by one on ``os.devnull``
(``dup2``): the child's copy of the socket is closed at once, and whatever runs later on that
descriptor number (a TLS close_notify, a shutdown, an epoll deregistration) reaches nothing
of the parent's. The session is marked closed, so a command in the child raises
ConnectionClosedError saying why."""

from __future__ import annotations

import os
import socket
import weakref
from typing import Any, List, Optional

_clients: "weakref.WeakSet[Any]" = weakref.WeakSet()


def track(client: Any) -> None:
    """Remember ``client`` (a POP3 or AsyncPOP3) for the child of a later fork."""
    _clients.add(client)


def _python_descriptors(client: Any) -> List[int]:
    """The descriptors of sockets Python drives (``context=``, one a poplib subclass
    brought, an asyncio stream)."""
    fds: List[int] = []
    sock = client.__dict__.get("sock")
    if isinstance(sock, socket.socket):
        fds.append(sock.fileno())
    if client._driver is not None:
        fds.append(client._driver.fileno())
    return fds


def _disown_inherited() -> None:
    clients = list(_clients)
    _clients.clear()
    if not clients:
        return
    devnull = os.open(os.devnull, os.O_RDWR | getattr(os, "O_CLOEXEC", 0))
    try:
        for client in clients:
            fds: List[Optional[int]] = [*_python_descriptors(client)]
            conn = client._conn
            if conn is not None:
                fds.append(conn.disown())  # the Rust-owned socket's
            for fd in fds:
                if fd is not None and fd >= 0:
                    os.dup2(devnull, fd, inheritable=False)
    finally:
        os.close(devnull)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_disown_inherited)
