"""``auth()`` (one SASL exchange, RFC 5034) and ``login()`` (the choice of methods and the
fallback between them), as flows run by both clients.

They yield only ``_flows.Run`` (typed commands, secrets as ``_core.Secret``) and
``_flows.capabilities``. Every way out of an AUTH
exchange leaves the session in step: after a failure on our side the exchange is cancelled
with ``*`` and the server's ``-ERR`` read before raising, so the next command is never taken
as SASL data.
"""

from __future__ import annotations

import base64
import binascii
import logging
from typing import Any, Callable, List, Optional, Tuple, Union

from . import _core, _flows, _sasl, _secrets, _trace
from ._token_retry import first_token, retry_token
from .exceptions import AuthenticationError, LocalProtocolError, RemoteProtocolError, ServerError

AuthObject = Callable[[Optional[bytes]], Union[str, bytes, None]]

# RFC 5034 §4: an AUTH command line with its initial response is at most 255 octets.
_MAX_AUTH_LINE = 255


def _raw(data: Union[str, bytes, None]) -> bytes:
    return data.encode("utf-8") if isinstance(data, str) else (data or b"")


def _b64(data: Union[str, bytes, None]) -> bytes:
    return base64.b64encode(_raw(data))


def _cancel() -> _flows.Flow:
    """RFC 5034: ``*`` cancels the exchange; the server answers ``-ERR``."""
    try:
        yield _flows.Run(_core.Command.sasl_cancel())
    except ServerError:
        pass


def _quit() -> _flows.Flow:
    """The server failed to prove it knows the password: it may be an impostor, so the
    session ends here and nothing else is sent to it."""
    try:
        yield _flows.Run(_core.Command.quit())
    except ServerError:
        pass


def _challenge(mechanism: str, authobject: Any, resp: bytes) -> bytes:
    """The decoded ``+ <base64>`` challenge; a mechanism that ignores challenges gets the
    text as sent when it is not base64 (``+ go ahead``)."""
    text = resp[1:].strip()
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error:
        if _sasl.needs_challenge(mechanism, authobject):
            raise _sasl.MalformedChallenge(f"{mechanism}: the challenge is not base64: {_sasl.printable(text, 60)!r}") from None
        return text


def exchange(client: Any, mechanism: str, authobject: AuthObject, initial_response_ok: bool = True) -> _flows.Flow:
    """One SASL exchange. Raises AuthenticationError (refused: by the server, or by the auth
    object), RemoteProtocolError (malformed challenge, too many rounds), the typed
    RESP-CODES errors, or :class:`_sasl.ServerNotVerified` (the server did not prove itself;
    QUIT was sent)."""
    name = mechanism.upper()
    if not name.isascii() or not name or " " in name:
        raise ValueError(f"invalid SASL mechanism name {mechanism!r}")
    mech = name.encode("ascii")
    return (yield from _secrets.hidden(client, None, _exchange(client, mech, authobject, initial_response_ok)))


def _exchange(client: Any, mech: bytes, authobject: AuthObject, initial_response_ok: bool) -> _flows.Flow:
    # Each response is listed before base64 too: a server may echo it decoded (the session
    # masks the base64 form it sent).
    name = mech.decode("ascii")
    first = authobject(None) if initial_response_ok else None
    initial, pending = None, None
    if first is not None:
        _secrets.add(client, _raw(first))
        response = _b64(first) or b"="  # "=": an empty initial response
        if len(b"AUTH ") + len(mech) + 1 + len(response) <= _MAX_AUTH_LINE:
            initial = _core.Secret(response)
        else:
            pending = response  # too long for the AUTH line: sent after the first "+".
    # One more challenge when the initial response did not go on the AUTH line.
    allowed = _sasl.rounds(name, authobject) + (initial is None)
    resp = yield _flows.Run(_core.Command.auth(mech, initial))
    answered = 0
    while not resp.startswith(b"+OK"):
        try:
            if answered == allowed:
                raise _sasl.MalformedChallenge(f"{name}: more than {allowed} challenge(s); the exchange was cancelled")
            answered += 1
            if pending is not None:
                answer, pending = pending, None
            else:
                raw = _raw(authobject(_challenge(name, authobject, resp)))
                _secrets.add(client, raw)
                answer = _b64(raw)
        except _sasl.MalformedChallenge as exc:
            yield from _cancel()
            raise RemoteProtocolError(str(exc)) from None
        except _sasl.ServerNotVerified:
            yield from _cancel()
            yield from _quit()
            raise
        except _sasl.SaslError as exc:
            yield from _cancel()
            raise AuthenticationError(str(exc).encode()) from None
        except Exception:
            yield from _cancel()  # a caller's auth object failed: still end in step
            raise
        try:
            resp = yield _flows.Run(_core.Command.sasl_response(_core.Secret(answer)))
        except AuthenticationError as exc:
            exc.details = getattr(authobject, "details", None)
            raise
    finish = getattr(authobject, "finish", None)
    if finish is not None:
        try:
            finish()
        except _sasl.ServerNotVerified:
            yield from _quit()
            raise
    return resp


def auth(client: Any, mechanism: str, authobject: AuthObject, initial_response_ok: bool = True) -> _flows.Flow:
    """``auth()``: :func:`exchange` with the server's failure to prove itself raised as an
    AuthenticationError."""
    try:
        return (yield from exchange(client, mechanism, authobject, initial_response_ok))
    except _sasl.ServerNotVerified as exc:
        raise AuthenticationError(f"{exc}; connection closed".encode()) from None


class _PasswordRefused(Exception):
    """The server refused the password itself (sent by PLAIN, LOGIN or PASS): every other
    method would be refused too, and each further failure costs time (Dovecot delays the next
    attempt from the same address by 2, 4, 8, then 15 s) and may count towards a lockout."""

    def __init__(self, error: AuthenticationError) -> None:
        self.error = error


def _attempt(client: Any, method: str, user: str, secret: str, oauth2: bool) -> _flows.Flow:
    if method == "USER":
        yield _flows.Run(_core.Command.user(_flows.arg(user, client.encoding)))
        try:
            return (yield _flows.Run(_core.Command.pass_(_flows.secret(secret, client.encoding))))
        except AuthenticationError as exc:
            raise _PasswordRefused(exc) from None
    if method == "APOP":
        return (yield from _flows.apop(client._apop_timestamp(), user, secret, client.encoding))
    authobject = _sasl.OAuth2(method, user, secret) if oauth2 else _sasl.for_password(method, user, secret)
    try:
        return (yield from exchange(client, method, authobject))
    except AuthenticationError as exc:
        if authobject.password_sent:
            raise _PasswordRefused(exc) from None
        raise


def login(
    client: Any,
    user: str,
    password: Optional[str],
    oauth2_token: Optional[str],
    mechanisms: Optional[List[str]],
    allow_insecure: bool,
    allow_apop: bool,
    oauth2: Optional[Callable[[], str]] = None,
) -> _flows.Flow:
    """Tries each method both sides support until one succeeds and sets
    ``client.auth_mechanism`` to it. The order over TLS: SCRAM, PLAIN, LOGIN, USER/PASS, CRAM-MD5, APOP
    (the password is hidden by TLS, so PLAIN comes before CRAM-MD5, which servers storing
    hashed passwords refuse); without TLS (``allow_insecure``): SCRAM, CRAM-MD5, PLAIN, LOGIN,
    USER/PASS, APOP (challenge-response first, keeping the password off the wire). Stops at the first reply that is not a refusal of the
    credentials, when the password itself was refused, and whenever the server fails to
    prove itself (SCRAM). The secret is masked in what the server echoes. With a token source
    (``oauth2``), a refused token is reported to its ``invalidate(token)`` (when it has one)
    and the login tried once more with a new token: the server may have expired it before
    the time it announced."""
    if sum(x is not None for x in (password, oauth2_token, oauth2)) != 1:
        raise ValueError("give exactly one of password, oauth2_token and oauth2")
    # Checked before any secret is in play (and a token fetched for nothing): these sentences
    # are ours, never masked.
    oauth2_login = password is None
    wanted = _sasl.check_wanted(mechanisms, oauth2_login)
    if not client._tls_up and not allow_insecure:
        what = "an OAuth2 token" if oauth2_login else "a password"
        raise LocalProtocolError(
            f"refusing to send {what} over an unencrypted connection; use POP3_SSL or stls(), or pass allow_insecure=True"
        )
    if oauth2 is None:
        secret = oauth2_token if oauth2_token is not None else password or ""
        flow = _methods(client, user, secret, oauth2_login, wanted, allow_apop)
        return (yield from _secrets.hidden(client, secret, flow))
    token = yield _flows.Offload(lambda: first_token(oauth2))
    try:
        return (yield from _secrets.hidden(client, token, _methods(client, user, token, True, wanted, allow_apop)))
    except AuthenticationError as exc:
        refused = exc
    fresh = yield _flows.Offload(lambda: retry_token(oauth2, token))
    if fresh is None:
        raise refused
    _trace.event(logging.INFO, client._label, "OAuth2 token refused; trying once more with a new one")
    return (yield from _secrets.hidden(client, fresh, _methods(client, user, fresh, True, wanted, allow_apop)))


def _methods(
    client: Any,
    user: str,
    secret: str,
    oauth2: bool,
    wanted: Optional[List[str]],
    allow_apop: bool,
) -> _flows.Flow:
    caps = yield from _flows.capabilities(client)
    methods = _sasl.candidates(
        caps.sasl,
        wanted,
        oauth2,
        user_ok=not caps or caps.has("USER"),
        apop_ok=allow_apop and client._apop_timestamp() is not None,
        tls=client._tls_up,
    )
    if not methods:
        offered = " ".join(caps.sasl) or "none"
        raise LocalProtocolError(f"no login method both the server (SASL: {offered}) and this call allow")
    tried: List[Tuple[str, str]] = []
    last = b""
    details = None
    scram_refused = False
    for method in methods:
        if scram_refused and method.startswith("SCRAM-"):
            # Another SCRAM hash checks the same password against the same store: one more
            # refusal (and failure delay) for nothing. PLAIN, next, can still succeed.
            continue
        try:
            resp = yield from _attempt(client, method, user, secret, oauth2)
        # Only a refusal of the credentials moves on. [IN-USE], [LOGIN-DELAY], [SYS/TEMP] and
        # [SYS/PERM] raise their own ServerError subclasses and end login(): another method
        # would fail the same way, or count as one more login attempt.
        except (AuthenticationError, _PasswordRefused) as exc:
            refusal = exc.error if isinstance(exc, _PasswordRefused) else exc
            last = _secrets.redact(refusal.response, [secret.encode("utf-8")])
            tried.append((method, _sasl.printable(last)))
            details = refusal.details if refusal.details is not None else details
            if isinstance(exc, _PasswordRefused):
                break
            scram_refused = scram_refused or method.startswith("SCRAM-")
            _trace.event(logging.WARNING, client._label, "login with %s refused; trying the next method", method)
            continue
        except _sasl.ServerNotVerified as exc:
            tried.append((method, str(exc)))
            last = f"{exc}; connection closed".encode()
            break
        client.auth_mechanism = method
        _trace.event(logging.INFO, client._label, "logged in as %s with %s", user, method)
        # RFC 2449 §5: capabilities may change at login; the session forgot the old ones.
        yield from _flows.capabilities(client)
        return resp
    error = AuthenticationError(last)
    error.attempts = tuple(tried)
    error.details = details
    raise error
