"""The test server's SASL mechanisms (RFC 5034 AUTH: PLAIN, LOGIN, CRAM-MD5, XOAUTH2,
OAUTHBEARER, SCRAM-SHA-1/-256/-512), written from the RFCs and sharing no code with the
client, and :class:`SASLQuirks`, SASL as broken or hostile servers do it."""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import os
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Dict, Generator, Mapping, Optional, Tuple

if TYPE_CHECKING:
    from ._handler import Connection

SASL_MECHANISMS = ("PLAIN", "LOGIN", "CRAM-MD5", "XOAUTH2", "OAUTHBEARER", "SCRAM-SHA-1", "SCRAM-SHA-256", "SCRAM-SHA-512")
"""Every SASL mechanism the server implements; the ``sasl`` argument picks among them."""

DEFAULT_SASL = ("PLAIN", "LOGIN", "CRAM-MD5", "XOAUTH2")

_counter = itertools.count(1)


def unique_id() -> str:
    """An RFC 5322 msg-id, unique per process: APOP timestamps and CRAM-MD5 challenges."""
    return f"<{os.getpid()}.{next(_counter)}.{int(time.time())}@fastpoplib.test>"


# SASL mechanisms are generators: they yield a challenge, receive the client's decoded
# response, and return the authenticated user name (or None). A mechanism whose first
# challenge is empty is client-first and may take an initial response.
Mechanism = Generator[bytes, bytes, Optional[str]]


def _sasl_plain(conn: Connection) -> Mechanism:
    authzid, authcid, password = (yield b"").decode("utf-8").split("\0")
    if authzid and authzid != authcid:  # acting as another user is not supported
        return None
    return authcid if conn._check_password(authcid, password) else None


def _sasl_login(conn: Connection) -> Mechanism:
    user_prompt, password_prompt = conn.server.sasl_quirks.login_prompts
    user = (yield user_prompt).decode("utf-8")
    password = (yield password_prompt).decode("utf-8")
    return user if conn._check_password(user, password) else None


def _sasl_cram_md5(conn: Connection) -> Mechanism:
    challenge = unique_id().encode("ascii")
    user, _, digest = (yield challenge).decode("utf-8").rpartition(" ")
    password = conn.server.users.get(user)
    if password is None or conn.server.sasl_quirks.cram_md5_unusable:
        return None
    expected = hmac.new(password.encode("utf-8"), challenge, hashlib.md5).hexdigest()
    return user if same_digest(expected, digest) else None


def same_digest(expected_hex: str, given: str) -> bool:
    """Compare hex digests case-insensitively; ``given`` comes from the client, maybe not ASCII."""
    return hmac.compare_digest(expected_hex.encode(), given.lower().encode("utf-8", "surrogateescape"))


def _token_ok(conn: Connection, user: Optional[str], token: Optional[str]) -> bool:
    tokens = conn.server.oauth2_tokens if conn.server.oauth2_tokens is not None else conn.server.users
    return user is not None and token is not None and tokens.get(user) == token


def _bearer(value: Optional[str]) -> Optional[str]:
    return value[len("Bearer ") :] if value and value.startswith("Bearer ") else None


def _sasl_xoauth2(conn: Connection) -> Mechanism:
    # "user=" user ^A "auth=Bearer " token ^A ^A
    fields = dict(f.split("=", 1) for f in (yield b"").decode("utf-8").split("\x01") if f)
    user = fields.get("user")
    if _token_ok(conn, user, _bearer(fields.get("auth"))):
        return user
    # Google's failure shape: an error challenge, which the client answers with an empty line.
    error = conn.server.sasl_quirks.oauth2_error
    yield json.dumps({"status": "401", "schemes": "bearer", "scope": "https://mail.google.com/"}).encode() if error is None else error
    return None


def _sasl_oauthbearer(conn: Connection) -> Mechanism:
    # RFC 7628: gs2-header ("n,a=user,") ^A key=value ^A ... ^A ^A
    gs2, *pairs = (yield b"").decode("utf-8").split("\x01")
    user = next((p[2:] for p in gs2.split(",") if p.startswith("a=")), None)
    fields = dict(p.split("=", 1) for p in pairs if p)
    if _token_ok(conn, user, _bearer(fields.get("auth"))):
        return user
    # RFC 7628 3.2.2: an error challenge; the client answers with a lone ^A.
    error = conn.server.sasl_quirks.oauth2_error
    yield json.dumps({"status": "invalid_token", "scope": "pop3"}).encode() if error is None else error
    return None


_SCRAM_ITERATIONS = 4096  # RFC 7677's minimum


def _scram_attributes(text: str) -> Dict[str, str]:
    return dict(item.split("=", 1) for item in text.split(","))


def _sasl_scram(hash_name: str) -> Callable[[Connection], Mechanism]:
    def scram(conn: Connection) -> Mechanism:
        # RFC 5802 / 7677, without channel binding.
        quirks = conn.server.sasl_quirks
        cbind, authzid, first_bare = (yield b"").decode("utf-8").split(",", 2)
        if cbind not in ("n", "y") or authzid:
            return None
        first = _scram_attributes(first_bare)
        user = first["n"].replace("=2C", ",").replace("=3D", "=")
        nonce = first["r"] + secrets.token_urlsafe(18)
        salt = secrets.token_bytes(16)
        sent = {"r": nonce, "s": base64.b64encode(salt).decode(), "i": str(_SCRAM_ITERATIONS), **quirks.scram_server_first}
        server_first = ",".join(f"{key}={value}" for key, value in sent.items())
        final = (yield server_first.encode()).decode("utf-8")
        without_proof, _, proof = final.rpartition(",p=")
        attrs = _scram_attributes(without_proof)
        password = conn.server.users.get(user)
        if password is None or attrs["r"] != nonce or base64.b64decode(attrs["c"]) != f"{cbind},,".encode():
            return None
        salted = hashlib.pbkdf2_hmac(hash_name, password.encode("utf-8"), salt, _SCRAM_ITERATIONS)
        client_key = hmac.digest(salted, b"Client Key", hash_name)
        stored_key = hashlib.new(hash_name, client_key).digest()
        auth_message = f"{first_bare},{server_first},{without_proof}".encode("utf-8")
        signature = hmac.digest(stored_key, auth_message, hash_name)
        recovered = bytes(a ^ b for a, b in zip(base64.b64decode(proof), signature))
        if not hmac.compare_digest(hashlib.new(hash_name, recovered).digest(), stored_key):
            return None
        server_signature = hmac.digest(hmac.digest(salted, b"Server Key", hash_name), auth_message, hash_name)
        if quirks.scram_server_final == "wrong":
            server_signature = secrets.token_bytes(len(server_signature))
        # POP3 has no "success with data": the server-final message is a challenge, answered empty.
        if quirks.scram_server_final != "missing":
            yield b"v=" + base64.b64encode(server_signature)
        return user

    return scram


_ENDLESS_ROUNDS = 10_000  # SASLQuirks.endless_continuations: bounded, like every fault


def endless() -> Mechanism:
    for _ in range(_ENDLESS_ROUNDS):
        yield b""
    return None


@dataclass
class SASLQuirks:
    """SASL as broken or hostile servers do it, for ``POP3TestServer(sasl_quirks=...)``.

    Attributes:
        cram_md5_unusable: CRAM-MD5 is offered but refuses every digest, as on servers that
            store passwords hashed.
        login_prompts: LOGIN's two prompts (sent base64-encoded): ``(b"", b"")``,
            ``(b"Benutzername:", b"Kennwort:")``...
        text_continuation: sent as is (``b"go ahead"`` gives ``+ go ahead``) instead of an
            empty first challenge (``+ ``: a client-first mechanism's initial response asked for).
        scram_server_first: attributes replaced in the SCRAM server-first message as sent
            (``{"i": "abc"}``, ``{"s": "!!!"}``); the server goes on with its real values.
        scram_server_final: ``"valid"``; ``"missing"``: ``+OK`` without the server's signature;
            ``"wrong"``: a signature made without knowing the password.
        endless_continuations: AUTH answers every response with ``+ `` until the client
            cancels with ``*`` (at most 10,000 rounds).
        oauth2_error: the error report XOAUTH2 and OAUTHBEARER send after a refused token,
            instead of their JSON.
    """

    cram_md5_unusable: bool = False
    login_prompts: Tuple[bytes, bytes] = (b"Username:", b"Password:")
    text_continuation: Optional[bytes] = None
    scram_server_first: Mapping[str, str] = field(default_factory=dict)
    scram_server_final: str = "valid"
    endless_continuations: bool = False
    oauth2_error: Optional[bytes] = None

    def __post_init__(self) -> None:
        if self.scram_server_final not in ("valid", "missing", "wrong"):
            raise ValueError("scram_server_final must be 'valid', 'missing' or 'wrong'")


MECHANISMS: Dict[str, Callable[[Connection], Mechanism]] = {
    "PLAIN": _sasl_plain,
    "LOGIN": _sasl_login,
    "CRAM-MD5": _sasl_cram_md5,
    "XOAUTH2": _sasl_xoauth2,
    "OAUTHBEARER": _sasl_oauthbearer,
    "SCRAM-SHA-1": _sasl_scram("sha1"),
    "SCRAM-SHA-256": _sasl_scram("sha256"),
    "SCRAM-SHA-512": _sasl_scram("sha512"),
}
