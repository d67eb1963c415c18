"""How a login uses an OAuth2 token source (``login(user, oauth2=source)`` for POP3, the IMAP
destination's ``imap_auth = "oauth2"``): a token to try, and one more after the server
refused it. One policy for both: a server may expire or revoke a token before the time it
announced, so a refused token is reported to the source and replaced once."""

from __future__ import annotations

from typing import Callable, Optional


def first_token(source: Callable[[], str]) -> str:
    """``source()``, checked: a non-empty str, else TypeError. Blocking (the source may
    refresh over HTTP)."""
    token = source()
    if not isinstance(token, str) or not token:
        raise TypeError(f"the oauth2 token source returned {type(token).__name__}, not a non-empty str")
    return token


def retry_token(source: Callable[[], str], refused: str) -> Optional[str]:
    """After a server refused ``refused``: tells the source (its ``invalidate(token)``, when
    it has one) and returns a new token to try once more, or None when there is nothing new
    (another attempt would only count as one more failure at the server). Blocking; raises
    what the source raises (``SignInRequired`` when the refresh token was refused too)."""
    invalidate = getattr(source, "invalidate", None)
    if invalidate is None:
        return None
    invalidate(refused)
    fresh = first_token(source)
    return None if fresh == refused else fresh
