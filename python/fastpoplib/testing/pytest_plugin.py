"""pytest fixtures for the fastpoplib test server.

Registered through the ``pytest11`` entry point, so installing fastpoplib makes them available:

- ``pop3_server``: a plain server (STLS offered when trustme is installed) with
  :func:`~fastpoplib.testing.sample_mailbox` and the user ``user`` / ``password``;
- ``pop3_tls_server``: the same with implicit TLS (POP3S); needs trustme;
- ``pop3_server_factory``: call it with :class:`~fastpoplib.testing.POP3TestServer` arguments
  to get more started servers.

Every fixture is function-scoped: each test gets fresh mailboxes, and the servers are stopped
at teardown.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, List

import pytest

from .server import POP3TestServer


@pytest.fixture
def pop3_server_factory() -> Iterator[Callable[..., POP3TestServer]]:
    """A function taking ``POP3TestServer`` arguments and returning a started server."""
    servers: List[POP3TestServer] = []

    def start(**kwargs: Any) -> POP3TestServer:
        server = POP3TestServer(**kwargs)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def pop3_server(pop3_server_factory: Callable[..., POP3TestServer]) -> POP3TestServer:
    """A started plain POP3 server: sample mailbox, user ``user``, password ``password``."""
    return pop3_server_factory()


@pytest.fixture
def pop3_tls_server(pop3_server_factory: Callable[..., POP3TestServer]) -> POP3TestServer:
    """A started POP3S server (implicit TLS); trust it with ``pop3_tls_server.client_context()``."""
    pytest.importorskip("trustme", reason="the TLS test server needs trustme")
    return pop3_server_factory(tls="implicit")
