"""TLS arguments: fastpoplib's own keywords become rustls settings (``TlsSettings``); an
``ssl.SSLContext`` the caller passes is never translated, it is used by Python's ``ssl`` as is
(see ``_wire``).

Default trust (no ``cafile``/``cadata``): the bundled Mozilla roots and the system store, or
only the certificates named by ``SSL_CERT_FILE``/``SSL_CERT_DIR`` when either is set, as
``ssl.create_default_context()`` does; a self-signed certificate listed there is accepted as the
server's own. ``fingerprint=`` pins one certificate instead (fetchmail's ``sslfingerprint``)."""

from __future__ import annotations

import os
import ssl
from typing import Any, Optional, Tuple, Union

from . import _core

StrPath = Union[str, "os.PathLike[str]"]

_default: Optional[_core.TlsSettings] = None


def _read(path: Optional[StrPath]) -> Optional[bytes]:
    if path is None:
        return None
    with open(path, "rb") as f:
        return f.read()


_FINGERPRINT_PREFIXES = ("sha256:", "sha256 fingerprint=")


def pin(fingerprint: str) -> bytes:
    """The SHA-256 digest (32 bytes) named by ``fingerprint``: ``SHA256:`` then 64 hex digits,
    colons allowed (``SHA256:AB:CD:...``, as fastpoplib's certificate errors show it; the
    ``sha256 Fingerprint=AB:CD:...`` that ``openssl x509 -noout -fingerprint -sha256`` prints
    is accepted too). Raises ValueError for anything else."""
    if not isinstance(fingerprint, str):
        raise TypeError(f"fingerprint must be a str such as 'SHA256:AB:CD:...', not {type(fingerprint).__name__}")
    text = fingerprint.strip()
    prefix = next((p for p in _FINGERPRINT_PREFIXES if text.lower().startswith(p)), None)
    hexdigits = text[len(prefix) :].replace(":", "") if prefix else ""
    try:
        digest = bytes.fromhex(hexdigits) if hexdigits.isascii() else b""
    except ValueError:
        digest = b""
    if len(digest) != 32:
        raise ValueError(
            "a certificate fingerprint is SHA256: followed by 64 hex digits (colons allowed), as"
            " shown in the certificate error or by `openssl x509 -noout -fingerprint -sha256`"
        )
    return digest


def settings(
    *,
    cafile: Optional[StrPath] = None,
    cadata: Union[str, bytes, None] = None,
    certfile: Optional[StrPath] = None,
    keyfile: Optional[StrPath] = None,
    fingerprint: Optional[str] = None,
) -> _core.TlsSettings:
    """rustls settings from fastpoplib's own keywords: verified TLS by default (see the module
    docstring); ``cafile``/``cadata`` replace the default trust; ``fingerprint`` accepts exactly
    the certificate with that SHA-256 digest instead (:func:`pin`); ``certfile``/``keyfile``
    select a client certificate."""
    global _default
    pins = None
    if fingerprint is not None:
        if cafile is not None or cadata is not None:
            raise ValueError("fingerprint and cafile/cadata are mutually exclusive: a pinned certificate needs no CA")
        pins = [pin(fingerprint)]
    client_cert: Optional[Tuple[bytes, bytes]] = None
    if certfile is not None:
        chain = _read(certfile) or b""
        client_cert = (chain, (_read(keyfile) or b"") if keyfile is not None else chain)
    elif keyfile is not None:
        raise ValueError("keyfile given without certfile")
    pem = (_read(cafile) or b"") + (cadata.encode("ascii") if isinstance(cadata, str) else cadata or b"")
    if not pem and client_cert is None and pins is None:
        if _default is None:
            _default = _core.TlsSettings()
        return _default
    return _core.TlsSettings(cadata=pem or None, client_cert=client_cert, pins=pins)


def check_context(context: Any) -> ssl.SSLContext:
    """A context the caller passed, used by Python's ``ssl`` exactly as given (as poplib does)."""
    if not isinstance(context, ssl.SSLContext):
        raise TypeError(f"context must be an ssl.SSLContext, not {type(context).__name__}")
    if context.protocol == ssl.PROTOCOL_TLS_SERVER:
        raise ValueError("context is a server-side SSLContext (PROTOCOL_TLS_SERVER); use ssl.create_default_context()")
    return context


def default_context(
    *,
    cafile: Optional[StrPath] = None,
    cadata: Union[str, bytes, None] = None,
    certfile: Optional[StrPath] = None,
    keyfile: Optional[StrPath] = None,
    fingerprint: Optional[str] = None,
) -> ssl.SSLContext:
    """Python's verified default, for a connection whose socket Python already drives."""
    if fingerprint is not None:
        raise ValueError(
            "fingerprint= is checked by fastpoplib's own TLS, but this connection's socket is driven by"
            " Python's ssl (a context was used, or a subclass brings its own socket); trust the"
            " certificate with cafile= instead"
        )
    if isinstance(cadata, bytes):  # PEM here, as rustls takes it; ssl would read bytes as DER
        try:
            cadata = cadata.decode("ascii")
        except UnicodeDecodeError:
            raise ValueError("cadata must be PEM certificates (-----BEGIN CERTIFICATE-----), not binary data") from None
    context = ssl.create_default_context(cafile=cafile, cadata=cadata)
    if certfile is not None:
        context.load_cert_chain(certfile, keyfile)
    return context
