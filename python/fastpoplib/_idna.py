"""Internationalized host names (``bücher.example``) as the connection uses them: the ASCII
form (A-label, ``xn--bcher-kva.example``) for name resolution and for TLS (SNI and the
certificate check).

The conversion is Python's own ``idna`` codec (IDNA 2003, RFC 3490), the one ``socket`` and
``ssl`` apply to every name poplib is given: a name reaches the same server and is checked
against the same certificate name as with poplib (a label such as ``straße`` maps to
``strasse`` under IDNA 2003, not to ``xn--strae-oqa`` as under IDNA 2008)."""

from __future__ import annotations


def ascii_host(host: str) -> str:
    """``host`` in ASCII; an ASCII name (or an IP address) is returned unchanged. Raises
    UnicodeError (a ValueError) for a name IDNA cannot encode (an empty or too long label)."""
    if host.isascii():
        return host
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise UnicodeError(f"host {host!r} is not a valid internationalized domain name: {exc}") from None
