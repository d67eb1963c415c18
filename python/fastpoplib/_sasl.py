"""SASL mechanisms as auth objects for ``auth()`` (smtplib's style: called with ``None`` for
the initial response, then with each decoded challenge) and the choice made by ``login()``."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
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


class Scram:
    """SCRAM-SHA-256 / SCRAM-SHA-1 (RFC 5802, 7677) without channel binding. The server's
    final message is verified: a server that does not know the password cannot fake success."""

    def __init__(self, mechanism: str, user: str, password: str) -> None:
        self.hash = "sha256" if mechanism.upper() == "SCRAM-SHA-256" else "sha1"
        self.password = password.encode("utf-8")
        name = user.replace("=", "=3D").replace(",", "=2C")
        self.nonce = base64.b64encode(secrets.token_bytes(18)).decode()
        self.first_bare = f"n={name},r={self.nonce}"
        self.server_signature = b""
        self.step = 0

    def __call__(self, challenge: Optional[bytes]) -> Response:
        self.step += 1
        if self.step == 1:
            return "n,," + self.first_bare
        if self.step == 2:
            return self._final(challenge or b"")
        attrs = _attributes(challenge or b"")
        if "e" in attrs or not hmac.compare_digest(base64.b64decode(attrs.get("v", "")), self.server_signature):
            raise AuthMechanismError(f"SCRAM: the server's proof is wrong ({attrs.get('e', 'bad signature')})")
        return b""

    def _final(self, server_first: bytes) -> str:
        attrs = _attributes(server_first)
        nonce, salt, rounds = attrs.get("r", ""), base64.b64decode(attrs.get("s", "")), int(attrs.get("i", "0"))
        if not nonce.startswith(self.nonce) or rounds < 1 or not salt:
            raise AuthMechanismError("SCRAM: malformed or forged server-first message")
        salted = hashlib.pbkdf2_hmac(self.hash, self.password, salt, rounds)
        client_key = hmac.new(salted, b"Client Key", self.hash).digest()
        stored = hashlib.new(self.hash, client_key).digest()
        without_proof = f"c=biws,r={nonce}"
        auth_message = f"{self.first_bare},{server_first.decode()},{without_proof}".encode()
        signature = hmac.new(stored, auth_message, self.hash).digest()
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        server_key = hmac.new(salted, b"Server Key", self.hash).digest()
        self.server_signature = hmac.new(server_key, auth_message, self.hash).digest()
        return f"{without_proof},p={base64.b64encode(proof).decode()}"

    def __repr__(self) -> str:
        return f"<Scram {self.hash} password=****>"


def _attributes(data: bytes) -> Dict[str, str]:
    text = data.decode("utf-8", "replace")
    return dict(part.split("=", 1) for part in text.split(",") if "=" in part)


class AuthMechanismError(Exception):
    """Raised by an auth object that refuses the server's challenge."""


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
PASSWORD_MECHANISMS = ["SCRAM-SHA-256", "SCRAM-SHA-1", "CRAM-MD5", "PLAIN", "LOGIN"]


def choose(offered: List[str], wanted: Optional[List[str]], oauth2: bool) -> List[str]:
    """Mechanisms to use, strongest first, among those the server advertises."""
    order = ["XOAUTH2", "OAUTHBEARER"] if oauth2 else PASSWORD_MECHANISMS
    if wanted is not None:
        order = [m.upper() for m in wanted]
    offered_upper = {m.upper() for m in offered}
    return [m for m in order if m in offered_upper]
