"""Internationalized host names: resolution and TLS (SNI, certificate name) use the A-label,
as poplib does through ``socket`` and ``ssl`` (Python's IDNA 2003 codec), on the rustls path
and the asyncio classes as on the ``context=`` path."""

from __future__ import annotations

import asyncio
import os
import poplib
import shutil
import socket
import subprocess
import sys
import textwrap
from typing import Any

import pytest

import fastpoplib
from fastpoplib._idna import ascii_host

pytest.importorskip("trustme")

# Fullwidth letters: IDNA maps this non-ASCII name to "localhost", which resolves everywhere
# and which the test server's certificate names: the whole path runs without a resolver of
# our own.
FULLWIDTH_LOCALHOST = "ｌｏｃａｌｈｏｓｔ"


@pytest.mark.parametrize(
    "name", ["bücher.test", "straße.de", "ｌｏｃａｌｈｏｓｔ", "пример.рф", "Bücher.Test.", "faß.例え.jp"]
)
def test_a_label_is_the_one_socket_and_ssl_use(name: str) -> None:
    assert ascii_host(name) == name.encode("idna").decode("ascii")
    assert ascii_host(name).isascii()


def test_ascii_names_and_addresses_pass_unchanged() -> None:
    for host in ("LocalHost", "127.0.0.1", "::1", "[::1]", "xn--bcher-kva.test"):
        assert ascii_host(host) == host


def test_a_name_idna_cannot_encode_is_a_unicode_error() -> None:
    with pytest.raises(UnicodeError, match="not a valid internationalized domain name"):
        fastpoplib.POP3("ü" * 70 + ".test", 110, timeout=1)


@pytest.fixture
def tls_server(pop3_server_factory: Any) -> Any:
    return pop3_server_factory(tls="implicit")


def test_rustls_blocking(tls_server: Any) -> None:
    with fastpoplib.POP3_SSL(FULLWIDTH_LOCALHOST, tls_server.port, timeout=5, cafile=tls_server.cafile) as p:
        assert p.tls_info is not None and p.capa()
    # poplib connects to the same name the same way.
    std = poplib.POP3_SSL(FULLWIDTH_LOCALHOST, tls_server.port, timeout=5, context=tls_server.client_context())
    std.quit()


def test_rustls_stls(pop3_server_factory: Any) -> None:
    srv = pop3_server_factory()
    with fastpoplib.POP3(FULLWIDTH_LOCALHOST, srv.port, timeout=5) as p:
        p.stls(cafile=srv.cafile)
        assert p.tls_info is not None


def test_asyncio_classes(tls_server: Any, pop3_server_factory: Any) -> None:
    plain = pop3_server_factory()

    async def main() -> None:
        async with fastpoplib.AsyncPOP3_SSL.connect(FULLWIDTH_LOCALHOST, tls_server.port, 5, cafile=tls_server.cafile) as p:
            assert p.tls_info is not None
        async with fastpoplib.AsyncPOP3.connect(FULLWIDTH_LOCALHOST, plain.port, 5) as p:
            await p.stls(cafile=plain.cafile)
            assert p.tls_info is not None
        ctx = tls_server.client_context()
        async with fastpoplib.AsyncPOP3_SSL.connect(FULLWIDTH_LOCALHOST, tls_server.port, 5, context=ctx) as p:
            assert p.tls_info is not None

    asyncio.run(main())


_PRIVATE_HOSTS_SCRIPT = textwrap.dedent(
    """
    import asyncio, poplib, sys, trustme
    import fastpoplib
    from fastpoplib.testing import POP3TestServer, TLSCertificates

    ca = trustme.CA()
    leaf = ca.issue_cert("xn--bcher-kva.test")
    folder = sys.argv[1]
    leaf.private_key_and_cert_chain_pem.write_to_path(folder + "/leaf.pem")
    ca.cert_pem.write_to_path(folder + "/ca.pem")
    certs = TLSCertificates.from_files(folder + "/leaf.pem", folder + "/leaf.pem", ca_pem=ca.cert_pem.bytes())
    with POP3TestServer(tls="implicit", certificates=certs) as srv:
        ca_file = folder + "/ca.pem"
        with fastpoplib.POP3_SSL("bücher.test", srv.port, timeout=5, cafile=ca_file) as p:
            assert p.tls_info
        async def main():
            async with fastpoplib.AsyncPOP3_SSL.connect("bücher.test", srv.port, 5, cafile=ca_file) as p:
                assert p.tls_info
        asyncio.run(main())
        poplib.POP3_SSL("bücher.test", srv.port, timeout=5, context=certs.client_context()).quit()
    print("ok")
    """
)


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare(1)")
def test_real_idn_through_a_private_hosts_file(tmp_path: Any) -> None:
    """bücher.test end to end: resolved through a hosts file bind-mounted over /etc/hosts in a
    private mount namespace (the machine's own file is untouched), certificate for
    xn--bcher-kva.test. Skipped where user namespaces are not allowed."""
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n127.0.0.1 xn--bcher-kva.test\n")
    if subprocess.run(["unshare", "-rm", "true"], capture_output=True, check=False).returncode != 0:
        pytest.skip("user and mount namespaces are not allowed here")
    script = tmp_path / "idn.py"
    script.write_text(_PRIVATE_HOSTS_SCRIPT)
    out = subprocess.run(
        ["unshare", "-rm", "sh", "-c", 'mount --bind "$0" /etc/hosts && exec "$1" "$2" "$3"', str(hosts), sys.executable, str(script), str(tmp_path)],
        capture_output=True, text=True, timeout=120, check=False, env=dict(os.environ),
    )
    assert out.stdout.strip() == "ok", out.stderr[-3000:]
    assert socket.gethostbyname("localhost")  # the machine's own resolver is as it was
