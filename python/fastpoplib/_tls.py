"""Turns TLS arguments (an ``ssl.SSLContext`` or fastpoplib's own keywords) into the Rust
``TlsSettings``. Whatever a context asks for that rustls cannot do raises instead of being
silently ignored."""

from __future__ import annotations

import os
import ssl
from typing import Optional, Union

from . import _core

StrPath = Union[str, "os.PathLike[str]"]

_VERSIONS = {
    ssl.TLSVersion.MINIMUM_SUPPORTED: 12,
    ssl.TLSVersion.SSLv3: 10,
    ssl.TLSVersion.TLSv1: 10,
    ssl.TLSVersion.TLSv1_1: 11,
    ssl.TLSVersion.TLSv1_2: 12,
    ssl.TLSVersion.TLSv1_3: 13,
    ssl.TLSVersion.MAXIMUM_SUPPORTED: 13,
}

_default: Optional[_core.TlsSettings] = None


def _read(path: Optional[StrPath]) -> Optional[bytes]:
    if path is None:
        return None
    with open(path, "rb") as f:
        return f.read()


def settings(
    context: Optional[ssl.SSLContext] = None,
    *,
    cafile: Optional[StrPath] = None,
    cadata: Union[str, bytes, None] = None,
    certfile: Optional[StrPath] = None,
    keyfile: Optional[StrPath] = None,
) -> _core.TlsSettings:
    """Verified TLS by default (bundled Mozilla roots + the system store)."""
    global _default
    client_cert = None
    if certfile is not None:
        chain = _read(certfile) or b""
        client_cert = (chain, _read(keyfile) if keyfile is not None else chain)
    elif keyfile is not None:
        raise ValueError("keyfile given without certfile")
    pem = (_read(cafile) or b"") + (cadata.encode("ascii") if isinstance(cadata, str) else cadata or b"")
    if context is None:
        if not pem and client_cert is None:
            if _default is None:
                _default = _core.TlsSettings()
            return _default
        return _core.TlsSettings(cadata=pem or None, client_cert=client_cert)
    return from_context(context, extra_pem=pem, client_cert=client_cert)


def from_context(context: ssl.SSLContext, *, extra_pem: bytes = b"", client_cert=None) -> _core.TlsSettings:
    if not isinstance(context, ssl.SSLContext):
        raise TypeError(f"context must be an ssl.SSLContext, not {type(context).__name__}")
    if context.protocol == ssl.PROTOCOL_TLS_SERVER:
        raise ValueError("context is a server-side SSLContext (PROTOCOL_TLS_SERVER); use ssl.create_default_context()")
    if context.verify_flags & (ssl.VERIFY_CRL_CHECK_LEAF | ssl.VERIFY_CRL_CHECK_CHAIN):
        raise ValueError("CRL checking (VERIFY_CRL_CHECK_*) is not supported by fastpoplib's TLS (rustls)")
    low, high = _VERSIONS[context.minimum_version], _VERSIONS[context.maximum_version]
    if context.options & ssl.OP_NO_TLSv1_2:
        low = max(low, 13)
    if context.options & ssl.OP_NO_TLSv1_3:
        high = min(high, 12)
    verify = context.verify_mode != ssl.CERT_NONE
    return _core.TlsSettings(
        verify=verify,
        check_hostname=verify and context.check_hostname,
        cadata=extra_pem or None,
        ca_der=context.get_ca_certs(binary_form=True),
        min_version=max(low, 12),
        max_version=high,
        client_cert=client_cert,
    )
