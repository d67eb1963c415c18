"""A throwaway certificate authority and server certificate for the test server.

Built on ``trustme``, imported only when TLS is actually used, so the rest of
``fastpoplib.testing`` works without it (``pip install fastpoplib[testing]`` brings it in).
"""

from __future__ import annotations

import datetime
import os
import ssl
import tempfile
import weakref
from typing import Any, Optional, Union

__all__ = ["TLSCertificates", "have_trustme"]

# Names the server certificate is valid for: every address the test server can bind.
SERVER_IDENTITIES = ("localhost", "127.0.0.1", "::1")

StrPath = Union[str, "os.PathLike[str]"]


def have_trustme() -> bool:
    """Whether ``trustme`` is importable, i.e. whether the test server can offer TLS."""
    try:
        import trustme  # noqa: F401
    except ImportError:
        return False
    return True


class TLSCertificates:
    """A fresh test CA and a leaf certificate for ``localhost``, ``127.0.0.1`` and ``::1``.

    The leaf is ``CA:FALSE`` with the addresses as subjectAltNames (rustls rejects a CA
    certificate used as an end-entity certificate, and matches IP addresses only as IP SANs).
    Generating one takes a few milliseconds, so each server gets its own by default.
    """

    def __init__(self, *, expired: bool = False, require_client_cert: bool = False) -> None:
        """``expired=True`` issues a leaf that expired yesterday (for certificate tests);
        ``require_client_cert=True`` makes the server demand a certificate from this CA (see
        :meth:`client_cert_files`)."""
        try:
            import trustme
        except ImportError as exc:
            raise ImportError(
                "the fastpoplib test server needs 'trustme' for TLS: pip install 'fastpoplib[testing]'"
            ) from exc
        self._ca: Any = trustme.CA()
        not_before: Optional[datetime.datetime] = None
        not_after: Optional[datetime.datetime] = None
        if expired:
            now = datetime.datetime.now(datetime.timezone.utc)
            not_before, not_after = now - datetime.timedelta(days=30), now - datetime.timedelta(days=1)
        self._leaf: Any = self._ca.issue_cert(*SERVER_IDENTITIES, not_before=not_before, not_after=not_after)
        self._cafile: Optional[str] = None
        self.require_client_cert = require_client_cert
        self._files: Optional["tuple[str, str]"] = None
        self._pem: Optional[bytes] = None

    @classmethod
    def from_files(cls, certfile: StrPath, keyfile: StrPath, *, ca_pem: Optional[bytes] = None) -> "TLSCertificates":
        """Material made elsewhere, e.g. a self-signed certificate from ``openssl req -x509``
        (CA:TRUE, leaf and root at once) or a CN-only one: the server presents ``certfile``
        (PEM chain) with ``keyfile``. :attr:`ca_pem` (what clients should trust) is ``ca_pem``,
        or ``certfile``'s content for a self-signed certificate. No client certificates."""
        self = cls.__new__(cls)
        self._ca = None
        self._leaf = None
        self._cafile = None
        self.require_client_cert = False
        self._files = (os.fspath(certfile), os.fspath(keyfile))
        if ca_pem is None:
            with open(certfile, "rb") as f:
                ca_pem = f.read()
        self._pem = ca_pem
        return self

    @property
    def ca_pem(self) -> bytes:
        """The test CA's certificate, PEM encoded."""
        if self._pem is not None:
            return self._pem
        pem: bytes = self._ca.cert_pem.bytes()
        return pem

    @property
    def cafile(self) -> str:
        """Path of a temporary file holding :attr:`ca_pem`, removed when this object is collected."""
        if self._cafile is None:
            fd, path = tempfile.mkstemp(prefix="fastpoplib-test-ca-", suffix=".pem")
            with os.fdopen(fd, "wb") as f:
                f.write(self.ca_pem)
            weakref.finalize(self, _unlink_quietly, path)
            self._cafile = path
        return self._cafile

    def server_context(self) -> ssl.SSLContext:
        """A server-side context presenting the leaf certificate (TLS 1.2 or newer)."""
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        if self._files is not None:
            ctx.load_cert_chain(*self._files)
            return ctx
        self._leaf.configure_cert(ctx)
        if self.require_client_cert:
            ctx.verify_mode = ssl.CERT_REQUIRED
            self._ca.configure_trust(ctx)
        return ctx

    def client_cert_files(self, directory: str) -> "tuple[str, str]":
        """A client certificate issued by the test CA: ``(certfile, keyfile)`` PEM paths
        written into ``directory``."""
        if self._ca is None:
            raise RuntimeError("certificates loaded with from_files() have no CA to issue client certificates")
        client = self._ca.issue_cert("client@fastpoplib.test")
        certfile, keyfile = os.path.join(directory, "client.pem"), os.path.join(directory, "client.key")
        client.cert_chain_pems[0].write_to_path(certfile)
        client.private_key_pem.write_to_path(keyfile)
        return certfile, keyfile

    def client_context(self) -> ssl.SSLContext:
        """A client context trusting only the test CA, with hostname checking on."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        if self._ca is None:
            ctx.load_verify_locations(cadata=self.ca_pem.decode("ascii"))
        else:
            self._ca.configure_trust(ctx)
        return ctx


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
