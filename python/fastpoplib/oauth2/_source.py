"""A token source over the stored tokens: hands out an access token that stays valid for at
least 5 minutes, refreshing it first (once across concurrent runs, under the account's lock)
and saving a rotated refresh token before the new access token is used."""

from __future__ import annotations

import logging
import math
import re
import time
from dataclasses import replace
from typing import Any, Dict, Optional

from ._errors import InvalidGrant, OAuth2Error
from ._providers import Settings, settings_for
from ._secret import Secret
from ._tokens import TokenRecord, TokenStore

REFRESH_MARGIN = 300.0  # seconds: refresh when the access token expires sooner (issue 18)
WARN_BEFORE = 14 * 86400  # seconds before a refresh token's known expiry to warn
DEFAULT_LIFETIME = 3600  # seconds, when a token response has no expires_in
MAX_LIFETIME = 86400.0  # seconds an access token is trusted at most, whatever the server says
_VSCHARS = re.compile(r"[\x20-\x7e]*")  # RFC 6749 Appendix A.12, A.17: access-token, refresh-token = 1*VSCHAR

log = logging.getLogger("fastpoplib.oauth2")


class SignInRequired(Exception):
    """The account has no usable refresh token (never signed in, signed out, or refused by
    the server): the user must run ``fastpoplib auth login``. The message says so."""

    def __init__(self, name: str, why: str) -> None:
        super().__init__(f"{why}; sign in again: fastpoplib auth login --account {name}")
        self.account = name


def record_from(settings: Settings, response: Dict[str, Any], previous: Optional[TokenRecord] = None, now: Optional[float] = None) -> TokenRecord:
    """The record to store for a token response (RFC 6749 §5.1); a response without a new
    refresh token keeps the previous one (no rotation)."""
    now = time.time() if now is None else now
    access = response.get("access_token")
    if not isinstance(access, str) or not access:
        raise OAuth2Error("the token response has no access_token")
    refresh = response.get("refresh_token")
    for field, value in (("access_token", access), ("refresh_token", refresh)):
        if isinstance(value, str) and not _VSCHARS.fullmatch(value):
            # Never stored: a CR or LF would end the AUTH line it is sent in (and the
            # sentence must not show it).
            raise OAuth2Error(
                f"the token response's {field} holds characters no token may have (RFC 6749 Appendix A: printable"
                " ASCII only); nothing was stored; check the token endpoint"
            )
    refresh_token = Secret(refresh) if isinstance(refresh, str) and refresh else (previous.refresh_token if previous else None)
    try:
        lifetime = float(response.get("expires_in", DEFAULT_LIFETIME))
    except (TypeError, ValueError):
        lifetime = DEFAULT_LIFETIME
    if math.isnan(lifetime):
        lifetime = DEFAULT_LIFETIME
    lifetime = min(max(lifetime, 0.0), MAX_LIFETIME)  # a lying server gets no token kept forever
    refresh_expires_at: Optional[float] = None
    if "refresh_token_expires_in" in response:  # Google, for apps in testing (7 days)
        try:
            refresh_expires_at = now + float(response["refresh_token_expires_in"])
        except (TypeError, ValueError):
            pass
        if refresh_expires_at is not None and not math.isfinite(refresh_expires_at):
            refresh_expires_at = None
    elif settings.refresh_lifetime is not None:
        refresh_expires_at = now + settings.refresh_lifetime
    elif previous is not None and not isinstance(refresh, str):
        refresh_expires_at = previous.refresh_expires_at
    return TokenRecord(
        client_id=settings.client_id,
        token_endpoint=settings.token_endpoint or "",
        access_token=Secret(access),
        refresh_token=refresh_token,
        expires_at=now + lifetime,
        scope=str(response.get("scope") or settings.scope),
        refresh_expires_at=refresh_expires_at,
        obtained_at=previous.obtained_at if previous else now,
        refreshed_at=now if previous else None,
    )


class TokenSource:
    """``source()`` returns an access token valid for at least :data:`REFRESH_MARGIN`
    seconds, for ``login(user, oauth2=source)``. Blocking (HTTP to the token endpoint, 30 s
    timeout per request); thread-safe and safe across processes.

    Raises SignInRequired (no tokens, or the refresh token was refused: ``invalid_grant``),
    ``OAuth2Error`` (the server failed), ``TokenStoreError``, ``_store.LockBusy``, and
    ImportError naming the ``oauth`` extra when authlib or httpx is missing."""

    def __init__(self, settings: Settings, store: Optional[TokenStore] = None) -> None:
        self.settings: Settings = settings
        self.store: TokenStore = store or TokenStore()
        self._refused: Optional[Secret] = None  # the access token a server refused

    def __repr__(self) -> str:
        return f"<TokenSource account={self.settings.name!r}>"

    def invalidate(self, token: str) -> None:
        """The server refused ``token``: the next call refreshes unless another run already
        replaced it."""
        self._refused = Secret(token)

    def __call__(self) -> str:
        name = self.settings.name
        record = self._load()
        if not self._stale(record):
            warn_if_expiring(name, record)
            return record.access_token.reveal()
        with self.store.locked(name):
            record = self._load()  # another run may have refreshed while we waited
            if not self._stale(record):
                return record.access_token.reveal()
            record = self._refresh(record)
        self._refused = None
        return record.access_token.reveal()

    def _load(self) -> TokenRecord:
        name = self.settings.name
        record = self.store.load(name)
        if record is None:
            raise SignInRequired(name, f"account {name!r} has no stored OAuth2 tokens")
        if record.client_id != self.settings.client_id:
            raise SignInRequired(name, f"account {name!r} signed in with another oauth2_client_id")
        if record.failed:
            raise SignInRequired(name, f"the last refresh of account {name!r} was refused ({record.failed})")
        return record

    def _stale(self, record: TokenRecord) -> bool:
        return record.expires_within(REFRESH_MARGIN) or record.access_token == self._refused

    def _refresh(self, record: TokenRecord) -> TokenRecord:
        from . import _grants

        name = self.settings.name
        if record.refresh_token is None:
            raise SignInRequired(name, f"the access token of account {name!r} expired and there is no refresh token")
        settings = self.settings
        if not settings.token_endpoint:  # an issuer's: found at sign-in, kept in the record
            settings = replace(settings, token_endpoint=record.token_endpoint) if record.token_endpoint else _grants.discover(settings)
        try:
            response = _grants.refresh(settings, record.refresh_token.reveal())
        except InvalidGrant as exc:
            log.warning("account %s: the OAuth2 refresh token was refused: %s", name, exc)
            self.store.save(name, record.marked_failed(f"invalid_grant at {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"))
            raise SignInRequired(name, f"the authorization server refused the refresh token of account {name!r}") from None
        new = record_from(settings, response, previous=record)
        # Saved (durably) before the new access token is used: the server may already have
        # invalidated the old refresh token, so this one is now the only valid one.
        self.store.save(name, new)
        log.info("account %s: OAuth2 access token refreshed%s", name, " (refresh token rotated)" if new.refresh_token != record.refresh_token else "")
        warn_if_expiring(name, new)
        return new


def warn_if_expiring(name: str, record: TokenRecord) -> None:
    if record.refresh_expires_at is not None and record.refresh_expires_at - time.time() < WARN_BEFORE:
        days = max(0.0, (record.refresh_expires_at - time.time()) / 86400)
        log.warning("account %s: its OAuth2 refresh token expires in %.0f day(s) unless used; run fetch or auth login before then", name, days)


def state_line(name: str, record: Optional[TokenRecord], now: Optional[float] = None) -> str:
    """``NAME: `` and :func:`state_text`: what ``auth status`` prints for an account."""
    return f"{name}: {state_text(name, record, now)}"


def state_text(name: str, record: Optional[TokenRecord], now: Optional[float] = None) -> str:
    """An account's sign-in state in a few words, never a token."""
    now = time.time() if now is None else now
    if record is None:
        return f"not signed in (fastpoplib auth login --account {name})"
    if record.failed:
        return f"refresh refused ({record.failed}); sign in again: fastpoplib auth login --account {name}"
    left = record.expires_at - now
    access = f"access token valid for {left / 60:.0f} min" if left > 0 else "access token expired (refreshed at next use)"
    refresh = "no refresh token" if record.refresh_token is None else "refresh token stored"
    if record.refresh_token is not None and record.refresh_expires_at is not None:
        days = (record.refresh_expires_at - now) / 86400
        refresh += f", expires in {days:.0f} day(s) unless used" if days > 0 else ", expired: sign in again"
        if 0 < days * 86400 < WARN_BEFORE:
            refresh += " (WARNING: soon)"
    return f"signed in; {access}; {refresh}"


def token_source(account: Any, store: Optional[TokenStore] = None) -> TokenSource:
    """The token source of a retriever account with ``auth = "oauth2"`` (its ``oauth2_*``
    settings and stored tokens): ``token_source(acct)()`` is a fresh access token. For the
    POP3 login and for an IMAP destination alike."""
    return TokenSource(settings_for(account), store)


def account_state(account: Any, store: Optional[TokenStore] = None) -> str:
    """:func:`state_text` of a retriever account with ``auth = "oauth2"``, read from the
    store: for ``fastpoplib status``. Raises OAuth2ConfigError when its settings are
    incomplete (as a fetch would), TokenStoreError when the store is unreadable."""
    settings_for(account)
    return state_text(account.name, (store or TokenStore()).load(account.name))

