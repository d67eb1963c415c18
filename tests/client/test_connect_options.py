"""Connection options that every class takes alike: source_address (including poplib's
("", 0), any local address) on the plain, rustls and ssl.SSLContext paths, blocking and
asyncio."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import fastpoplib

pytest.importorskip("trustme")

SOURCES = [("", 0), ("127.0.0.1", 0)]


def sync_client(cls_name: str, srv: Any, source: Any) -> Any:
    if cls_name == "POP3":
        return fastpoplib.POP3(srv.host, srv.port, timeout=5, source_address=source)
    if cls_name == "POP3_SSL":
        return fastpoplib.POP3_SSL(srv.host, srv.port, timeout=5, cafile=srv.cafile, source_address=source)
    return fastpoplib.POP3_SSL(srv.host, srv.port, timeout=5, context=srv.client_context(), source_address=source)


async def async_client(cls_name: str, srv: Any, source: Any) -> Any:
    if cls_name == "POP3":
        return await fastpoplib.AsyncPOP3.connect(srv.host, srv.port, 5, source_address=source)
    if cls_name == "POP3_SSL":
        return await fastpoplib.AsyncPOP3_SSL.connect(srv.host, srv.port, 5, cafile=srv.cafile, source_address=source)
    return await fastpoplib.AsyncPOP3_SSL.connect(srv.host, srv.port, 5, context=srv.client_context(), source_address=source)


def server_for(cls_name: str, factory: Any) -> Any:
    return factory() if cls_name == "POP3" else factory(tls="implicit")


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("cls_name", ["POP3", "POP3_SSL", "POP3_SSL(context)"])
def test_source_address_blocking(cls_name: str, source: Any, pop3_server_factory: Any) -> None:
    srv = server_for(cls_name, pop3_server_factory)
    with sync_client(cls_name, srv, source) as p:
        assert p.capa()
    assert srv.wait_for_sessions(1)[0].peer[0] == "127.0.0.1"


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("cls_name", ["POP3", "POP3_SSL", "POP3_SSL(context)"])
def test_source_address_asyncio(cls_name: str, source: Any, pop3_server_factory: Any) -> None:
    srv = server_for(cls_name, pop3_server_factory)

    async def main() -> None:
        p = await async_client(cls_name, srv, source)
        assert await p.capa()
        await p.quit()

    asyncio.run(main())
    assert srv.wait_for_sessions(1)[0].peer[0] == "127.0.0.1"
