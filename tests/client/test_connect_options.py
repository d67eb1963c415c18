"""Connection options that every class takes alike: source_address (including poplib's
("", 0), any local address) on the plain, rustls and ssl.SSLContext paths, blocking and
asyncio."""

from __future__ import annotations

from typing import Any

import pytest

from support.clients import connect

pytest.importorskip("trustme")

SOURCES = [("", 0), ("127.0.0.1", 0)]


def client(kind: str, cls_name: str, srv: Any, source: Any) -> Any:
    if cls_name == "POP3":
        return connect(kind, srv.host, srv.port, timeout=5, source_address=source)
    if cls_name == "POP3_SSL":
        return connect(kind, srv.host, srv.port, tls=True, timeout=5, cafile=srv.cafile, source_address=source)
    return connect(kind, srv.host, srv.port, tls=True, timeout=5, context=srv.client_context(), source_address=source)


def server_for(cls_name: str, factory: Any) -> Any:
    return factory() if cls_name == "POP3" else factory(tls="implicit")


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("cls_name", ["POP3", "POP3_SSL", "POP3_SSL(context)"])
def test_source_address(kind: str, cls_name: str, source: Any, pop3_server_factory: Any) -> None:
    srv = server_for(cls_name, pop3_server_factory)
    p = client(kind, cls_name, srv, source)
    assert p.capa()
    p.quit()
    assert srv.wait_for_sessions(1)[0].peer[0] == "127.0.0.1"
