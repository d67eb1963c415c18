"""SASL mechanisms as auth objects for ``auth()`` (smtplib's style: called with ``None`` for
the initial response, then with each decoded challenge) and the choice made by ``login()``."""

from __future__ import annotations

import hmac
import json
from typing import Any, Callable, Dict, List, Optional, Union

Response = Union[str, bytes, None]


def plain(user: str, password: str) -> Callable[[Optional[bytes]], Response]:
    return lambda challenge: f"\0{user}\0{password}"


def login(user: str, password: str) -> Callable[[Optional[bytes]], Response]:
    def step(challenge: Optional[bytes]) -> Response:
        if challenge is None:
            return None  # LOGIN has no initial response
        return password if b"pass" in challenge.lower() else user

    return step


def cram_md5(user: str, password: str) -> Callable[[Optional[bytes]], Response]:
    def step(challenge: Optional[bytes]) -> Response:
        if challenge is None:
            return None
        digest = hmac.new(password.encode("utf-8"), challenge, "md5").hexdigest()
        return f"{user} {digest}"

    return step


class OAuth2:
    """XOAUTH2 (Google, Microsoft) or OAUTHBEARER (RFC 7628). A ``+`` challenge after the
    token carries the server's error as JSON: it is kept in :attr:`error` and answered with
    an empty response, after which the server ends the exchange with ``-ERR``."""

    def __init__(self, mechanism: str, user: str, token: str) -> None:
        self.mechanism = mechanism.upper()
        self.user, self.token = user, token
        self.error: Optional[Dict[str, Any]] = None
        self._sent = False

    def __call__(self, challenge: Optional[bytes]) -> Response:
        if not self._sent:  # the initial response, or the answer to the empty "+ "
            self._sent = True
            if self.mechanism == "OAUTHBEARER":
                return f"n,a={self.user},\x01auth=Bearer {self.token}\x01\x01"
            return f"user={self.user}\x01auth=Bearer {self.token}\x01\x01"
        try:
            self.error = json.loads(challenge or b"")
        except ValueError:
            self.error = {"raw": (challenge or b"").decode("utf-8", "replace")}
        return b""

    def __repr__(self) -> str:
        return f"<OAuth2 {self.mechanism} user={self.user!r} token=****>"


# login() tries the strongest mechanism the server offers first.
PASSWORD_MECHANISMS = ["CRAM-MD5", "PLAIN", "LOGIN"]


def choose(offered: List[str], wanted: Optional[List[str]], oauth2: bool) -> List[str]:
    """Mechanisms to use, strongest first, among those the server advertises."""
    order = ["XOAUTH2", "OAUTHBEARER"] if oauth2 else PASSWORD_MECHANISMS
    if wanted is not None:
        order = [m.upper() for m in wanted]
    offered_upper = {m.upper() for m in offered}
    return [m for m in order if m in offered_upper]
