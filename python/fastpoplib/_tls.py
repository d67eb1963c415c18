"""TLS arguments: fastpoplib's own keywords become rustls settings (``TlsSettings``); an
``ssl.SSLContext`` the caller passes is never translated, it is used by Python's ``ssl`` as is
(see ``_wire``)."""

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


def settings(
    *,
    cafile: Optional[StrPath] = None,
    cadata: Union[str, bytes, None] = None,
    certfile: Optional[StrPath] = None,
    keyfile: Optional[StrPath] = None,
) -> _core.TlsSettings:
    """rustls settings from fastpoplib's own keywords: verified TLS by default (bundled Mozilla
    roots + the system store); ``cafile``/``cadata`` replace them; ``certfile``/``keyfile``
    select a client certificate."""
    global _default
    client_cert: Optional[Tuple[bytes, bytes]] = None
    if certfile is not None:
        chain = _read(certfile) or b""
        client_cert = (chain, (_read(keyfile) or b"") if keyfile is not None else chain)
    elif keyfile is not None:
        raise ValueError("keyfile given without certfile")
    pem = (_read(cafile) or b"") + (cadata.encode("ascii") if isinstance(cadata, str) else cadata or b"")
    if not pem and client_cert is None:
        if _default is None:
            _default = _core.TlsSettings()
        return _default
    return _core.TlsSettings(cadata=pem or None, client_cert=client_cert)


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
) -> ssl.SSLContext:
    """Python's verified default, for a connection whose socket Python already drives."""
    context = ssl.create_default_context(cafile=cafile, cadata=cadata)
    if certfile is not None:
        context.load_cert_chain(certfile, keyfile)
    return context
