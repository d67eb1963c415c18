"""SASL mechanisms (RFC 4422) as auth objects, without I/O.

smtplib's convention, so each object also works with ``auth()``: ``obj(None)`` gives the
initial response (``None``: there is none), ``obj(challenge)`` answers each decoded server
challenge. Beyond a plain callable, an object says how many challenges it answers after its
initial response (``rounds``), whether a challenge must be base64 (``needs_challenge``), and
``finish()`` checks, at the server's ``+OK``, that the exchange really completed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
from typing import Any, Callable, Dict, List, Optional, Union

Response = Union[str, bytes, None]


class SaslError(Exception):
    """The auth object refuses to go on: the exchange is cancelled and the login refused
    (``login()`` may try the next mechanism). The message holds no secret."""


class MalformedChallenge(SaslError):
    """The server's challenge is malformed or hostile: raised as RemoteProtocolError."""


class ServerNotVerified(SaslError):
    """The server did not prove that it knows the password: nothing more may be sent to it."""


def printable(data: Union[str, bytes], limit: int = 200) -> str:
    """Server text fit for a message: no control, format or line-separator characters."""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    shown = "".join(c if c.isprintable() else "?" for c in text[:limit])
    return shown + ("..." if len(text) > limit else "")


class Mechanism:
    name = ""
    rounds = 0  # challenges answered after the initial response
    needs_challenge = True  # False: the challenge is ignored, so it need not be base64
    # True once the password itself went out (PLAIN, LOGIN): a refusal after that is the
    # server's verdict on that very password, so login() tries nothing else.
    password_sent = False

    def __call__(self, challenge: Optional[bytes]) -> Response:
        raise NotImplementedError

    def finish(self) -> None:
        """Called at the server's ``+OK``; raises if the mechanism is not complete."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} secret=****>"


class Plain(Mechanism):
    """RFC 4616: ``authzid NUL authcid NUL password``, sent whatever the challenge says."""

    name = "PLAIN"
    needs_challenge = False

    def __init__(self, user: str, password: str, authzid: str = "") -> None:
        self._message = f"{authzid}\0{user}\0{password}"

    def __call__(self, challenge: Optional[bytes]) -> Response:
        self.password_sent = True
        return self._message


class Login(Mechanism):
    """The obsolete LOGIN mechanism: no initial response, then the user name and the
    password, in that order. Prompts differ between servers ("Username:", "", localised),
    so they are not read."""

    name = "LOGIN"
    rounds = 1
    needs_challenge = False

    def __init__(self, user: str, password: str) -> None:
        self._answers = [user, password]

    def __call__(self, challenge: Optional[bytes]) -> Response:
        if challenge is None:
            return None
        if not self._answers:
            raise MalformedChallenge("LOGIN: a third prompt after the user name and the password")
        self.password_sent = len(self._answers) == 1
        return self._answers.pop(0)


class CramMD5(Mechanism):
    """RFC 2195: ``user SP hex(HMAC-MD5(password, challenge))``."""

    name = "CRAM-MD5"

    def __init__(self, user: str, password: str) -> None:
        self._user, self._password = user, password.encode("utf-8")

    def __call__(self, challenge: Optional[bytes]) -> Response:
        if challenge is None:
            return None  # server-first
        if not challenge:
            raise MalformedChallenge("CRAM-MD5: empty challenge")
        return f"{self._user} {hmac.new(self._password, challenge, 'md5').hexdigest()}"


# RFC 7677 asks servers for at least 4096 iterations, and real servers use 4096 to ~100,000.
# A lower count would let a fake server brute-force the password from our proof cheaply; a
# higher one only burns CPU (the derivation blocks the thread, the event loop too, and no
# timeout interrupts it): 600,000 (OWASP's figure for PBKDF2-SHA-256) costs ~0.5 s at most.
SCRAM_MIN_ITERATIONS = 4096
SCRAM_MAX_ITERATIONS = 600_000

SCRAM_HASHES = {"SCRAM-SHA-1": "sha1", "SCRAM-SHA-256": "sha256", "SCRAM-SHA-512": "sha512"}
_PRINTABLE_NONCE = re.compile(r"[\x21-\x2b\x2d-\x7e]+")  # RFC 5802: printable except ","


def _scram_fields(message: bytes, what: str) -> Dict[str, str]:
    """``k=v,k=v`` with one-letter keys, in order; anything else is malformed."""
    try:
        text = message.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedChallenge(f"SCRAM: {what} is not UTF-8") from None
    fields: Dict[str, str] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        if not sep or len(key) != 1 or key in fields:
            raise MalformedChallenge(f"SCRAM: malformed {what}")
        fields[key] = value
    return fields


class Scram(Mechanism):
    """SCRAM-SHA-1/-256/-512 (RFC 5802, 7677) without channel binding (the TLS layer below
    is verified on its own). The server must send its signature and it must match: a
    server that does not know the password cannot fake a successful login. The password is
    used as UTF-8 without SASLprep (the same for ASCII passwords)."""

    rounds = 2  # server-first, server-final

    @property
    def needs_challenge(self) -> bool:  # type: ignore[override]
        return self._step > 0  # the client-first message ignores any "+ go ahead"

    def __init__(self, mechanism: str, user: str, password: str, nonce: Optional[str] = None) -> None:
        self.name = mechanism.upper()
        if self.name not in SCRAM_HASHES:
            raise ValueError(f"unsupported SCRAM variant {mechanism!r}")
        self._hash = SCRAM_HASHES[self.name]
        self._password = password.encode("utf-8")
        self._nonce = nonce or base64.b64encode(secrets.token_bytes(18)).decode()
        self._first_bare = "n=" + user.replace("=", "=3D").replace(",", "=2C") + ",r=" + self._nonce
        self._server_signature = b""
        self._step = 0
        self.verified = False

    def __call__(self, challenge: Optional[bytes]) -> Response:
        self._step += 1
        if self._step == 1:
            return "n,," + self._first_bare
        if self._step == 2:
            return self._client_final(challenge or b"")
        if self._step == 3:
            return self._check_server_final(challenge or b"")
        raise MalformedChallenge(f"{self.name}: a challenge after the server's signature")

    def _client_final(self, server_first: bytes) -> str:
        fields = _scram_fields(server_first, "server-first message")
        if list(fields)[:3] != ["r", "s", "i"]:  # also refuses "m=" (mandatory extensions)
            raise MalformedChallenge(f"{self.name}: server-first message lacks r, s, i")
        nonce, salt_b64, count = fields["r"], fields["s"], fields["i"]
        if not nonce.startswith(self._nonce) or len(nonce) == len(self._nonce) or not _PRINTABLE_NONCE.fullmatch(nonce):
            raise MalformedChallenge(f"{self.name}: the server's nonce does not extend ours")
        try:
            salt = base64.b64decode(salt_b64, validate=True)
        except ValueError:  # binascii.Error, or a str that is not ASCII
            raise MalformedChallenge(f"{self.name}: the salt is not base64") from None
        if not salt:
            raise MalformedChallenge(f"{self.name}: empty salt")
        if not re.fullmatch(r"[0-9]{1,10}", count):  # no int() of a 5,000-digit string
            raise MalformedChallenge(f"{self.name}: the iteration count is not a number")
        iterations = int(count)
        if not SCRAM_MIN_ITERATIONS <= iterations <= SCRAM_MAX_ITERATIONS:
            raise MalformedChallenge(
                f"{self.name}: iteration count {iterations} outside {SCRAM_MIN_ITERATIONS}..{SCRAM_MAX_ITERATIONS}"
            )
        salted = hashlib.pbkdf2_hmac(self._hash, self._password, salt, iterations)
        client_key = hmac.digest(salted, b"Client Key", self._hash)
        stored_key = hashlib.new(self._hash, client_key).digest()
        without_proof = f"c=biws,r={nonce}"  # biws: base64 of "n,," (no channel binding)
        auth_message = f"{self._first_bare},{server_first.decode()},{without_proof}".encode()
        proof = bytes(a ^ b for a, b in zip(client_key, hmac.digest(stored_key, auth_message, self._hash)))
        server_key = hmac.digest(salted, b"Server Key", self._hash)
        self._server_signature = hmac.digest(server_key, auth_message, self._hash)
        return f"{without_proof},p={base64.b64encode(proof).decode()}"

    def _check_server_final(self, server_final: bytes) -> bytes:
        fields = _scram_fields(server_final, "server-final message")
        if "e" in fields:
            raise SaslError(f"{self.name}: the server reports {printable(fields['e'], 60)}")
        try:
            signature = base64.b64decode(fields.get("v", ""), validate=True)
        except ValueError:  # binascii.Error, or a str that is not ASCII
            raise MalformedChallenge(f"{self.name}: the server signature is not base64") from None
        if not hmac.compare_digest(signature, self._server_signature):
            raise ServerNotVerified(f"{self.name}: the server's signature is wrong: it does not know the password")
        self.verified = True
        return b""

    def finish(self) -> None:
        if not self.verified:
            raise ServerNotVerified(f"{self.name}: the server accepted the login without proving it knows the password")


# The server's error report after a refused token is small JSON; anything larger or deeper
# is kept as text (json's parser recurses: deep nesting would raise RecursionError).
OAUTH2_MAX_ERROR = 4096
OAUTH2_MAX_DEPTH = 16


def parse_error_json(data: bytes) -> Dict[str, Any]:
    """The server's error report: the JSON object, or ``{"raw": text}`` when it is not a
    small, shallow JSON object."""
    raw = {"raw": printable(data)}
    if len(data) > OAUTH2_MAX_ERROR:
        return raw
    depth = deepest = 0
    in_string = escaped = False
    for byte in data:  # nesting depth, counting brackets outside strings
        if in_string:
            escaped, in_string = (False, True) if escaped else (byte == 0x5C, byte != 0x22)
        elif byte == 0x22:
            in_string = True
        elif byte in b"[{":
            depth += 1
            deepest = max(deepest, depth)
        elif byte in b"]}":
            depth -= 1
    if deepest > OAUTH2_MAX_DEPTH:
        return raw
    try:
        value = json.loads(data)
    except ValueError:
        return raw
    return value if isinstance(value, dict) else raw


class OAuth2(Mechanism):
    """XOAUTH2 (Google, Microsoft) or OAUTHBEARER (RFC 7628). A challenge after the token
    carries the server's error: it is kept in :attr:`details` and acknowledged, after which
    the server ends the exchange with ``-ERR``."""

    rounds = 1  # the error report
    needs_challenge = False  # the first is ignored; the error report is kept even as text

    def __init__(self, mechanism: str, user: str, token: str) -> None:
        self.name = mechanism.upper()
        if self.name not in OAUTH2_MECHANISMS:
            raise ValueError(f"unsupported OAuth2 mechanism {mechanism!r}")
        self._user, self._token = user, token
        self.details: Optional[Dict[str, Any]] = None
        self._sent = False

    def __call__(self, challenge: Optional[bytes]) -> Response:
        if not self._sent:  # the initial response, or the answer to the empty "+ "
            self._sent = True
            if self.name == "OAUTHBEARER":
                return f"n,a={self._user},\x01auth=Bearer {self._token}\x01\x01"
            return f"user={self._user}\x01auth=Bearer {self._token}\x01\x01"
        self.details = parse_error_json(challenge or b"")
        # RFC 7628 3.2.3: OAUTHBEARER acknowledges with ^A; XOAUTH2 with an empty line.
        return b"\x01" if self.name == "OAUTHBEARER" else b""


OAUTH2_MECHANISMS = ["XOAUTH2", "OAUTHBEARER"]
# login() tries what the server offers in this order, strongest first; USER is USER/PASS.
PASSWORD_METHODS = ["SCRAM-SHA-512", "SCRAM-SHA-256", "SCRAM-SHA-1", "CRAM-MD5", "PLAIN", "LOGIN", "USER", "APOP"]
# Over TLS the password is already hidden from the network: CRAM-MD5 adds nothing over PLAIN and
# is refused by servers that store hashed passwords, so trying it first costs a failed login.
PASSWORD_METHODS_TLS = ["SCRAM-SHA-512", "SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN", "LOGIN", "USER", "CRAM-MD5", "APOP"]
# Challenges after the initial response for auth objects that do not say; unknown: a handful.
_ROUNDS = {"PLAIN": 0, "LOGIN": 1, "CRAM-MD5": 0, "XOAUTH2": 1, "OAUTHBEARER": 1, **{m: 2 for m in SCRAM_HASHES}}
_DEFAULT_ROUNDS = 8
_IGNORE_CHALLENGE = {"PLAIN", "LOGIN", *OAUTH2_MECHANISMS}


def rounds(mechanism: str, authobject: Any) -> int:
    return getattr(authobject, "rounds", _ROUNDS.get(mechanism, _DEFAULT_ROUNDS))


def needs_challenge(mechanism: str, authobject: Any) -> bool:
    return getattr(authobject, "needs_challenge", mechanism not in _IGNORE_CHALLENGE)


def for_password(method: str, user: str, password: str) -> Mechanism:
    if method in SCRAM_HASHES:
        return Scram(method, user, password)
    factories: Dict[str, Callable[[str, str], Mechanism]] = {"CRAM-MD5": CramMD5, "PLAIN": Plain, "LOGIN": Login}
    return factories[method](user, password)


def candidates(
    offered: List[str], wanted: Optional[List[str]], oauth2: bool, user_ok: bool, apop_ok: bool, tls: bool = False
) -> List[str]:
    """What ``login()`` tries, in order: ``wanted`` (validated, upper case) or the default
    order (:data:`PASSWORD_METHODS_TLS` over TLS, else :data:`PASSWORD_METHODS`), restricted to
    what the server offers. USER needs USER in CAPA (or no CAPA); APOP needs ``allow_apop`` and
    a timestamp in the greeting."""
    known = OAUTH2_MECHANISMS if oauth2 else PASSWORD_METHODS_TLS if tls else PASSWORD_METHODS
    order = known if wanted is None else wanted
    available = set(offered) | ({"USER"} if user_ok else set()) | ({"APOP"} if apop_ok else set())
    return [m for m in order if m in available]


def check_wanted(mechanisms: Optional[List[str]], oauth2: bool) -> Optional[List[str]]:
    """``mechanisms=`` upper-cased; a name fastpoplib does not implement is refused rather
    than mapped to something else."""
    if mechanisms is None:
        return None
    known = OAUTH2_MECHANISMS if oauth2 else PASSWORD_METHODS
    wanted = [m.upper() for m in mechanisms]
    unknown = [m for m in wanted if m not in known]
    if unknown:
        kind = "an OAuth2 token" if oauth2 else "a password"
        raise ValueError(f"unsupported login method(s) with {kind}: {', '.join(unknown)}; choose among {', '.join(known)}")
    return wanted
