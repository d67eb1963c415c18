"""Where an account signs in: the provider presets (Microsoft, Google) or a custom issuer,
turned into one :class:`Settings` (client, scope, endpoints). Standard library only: the HTTP
of discovery lives in ``_grants``."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace
from typing import Any, Dict, Optional
from urllib.parse import urlsplit

from ._errors import OAuth2ConfigError
from ._secret import Secret

MICROSOFT_SCOPE = "https://outlook.office.com/POP.AccessAsUser.All https://outlook.office.com/IMAP.AccessAsUser.All offline_access"
GOOGLE_SCOPE = "https://mail.google.com/"
# Microsoft refresh tokens expire after 90 days unused (AADSTS700082); each refresh rotates
# them and starts the 90 days again.
MICROSOFT_REFRESH_LIFETIME = 90 * 86400
PROVIDERS = ("microsoft", "google", "custom")
MICROSOFT_TENANTS = ("common", "consumers", "organizations")


@dataclass(frozen=True)
class Settings:
    """How one account signs in. ``name`` keys its tokens in the store; endpoints may be
    ``None`` until discovered from ``issuer`` (RFC 8414)."""

    name: str
    provider: str
    client_id: str
    client_secret: Optional[Secret]
    scope: str
    token_endpoint: Optional[str] = None
    device_endpoint: Optional[str] = None
    authorization_endpoint: Optional[str] = None
    revocation_endpoint: Optional[str] = None  # RFC 7009, used by `auth logout` when known
    issuer: Optional[str] = None
    refresh_lifetime: Optional[int] = None  # seconds a refresh token lives unused, when known
    redirect_host: str = "127.0.0.1"  # the loopback redirect's host name (RFC 8252 §7.3)

    def with_metadata(self, metadata: Dict[str, Any]) -> "Settings":
        """Endpoints from discovered metadata, where none were configured."""
        def pick(own: Optional[str], key: str) -> Optional[str]:
            value = metadata.get(key)
            return own or (require_https(value, key) if isinstance(value, str) else None)

        return replace(
            self,
            token_endpoint=pick(self.token_endpoint, "token_endpoint"),
            device_endpoint=pick(self.device_endpoint, "device_authorization_endpoint"),
            authorization_endpoint=pick(self.authorization_endpoint, "authorization_endpoint"),
            revocation_endpoint=pick(self.revocation_endpoint, "revocation_endpoint"),
        )


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def require_https(url: str, what: str) -> str:
    """``url`` when it is HTTPS, or HTTP to a loopback address; else OAuth2ConfigError."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError:
        raise OAuth2ConfigError(f"{what} is not a URL: {url!r}") from None
    if parts.scheme == "https" and host:
        return url
    if parts.scheme == "http" and is_loopback(host):
        return url
    raise OAuth2ConfigError(f"{what} must be an https:// URL (http:// only to a loopback address), not {url!r}")


def settings_for(account: Any) -> Settings:
    """The :class:`Settings` of a retriever account with ``auth = "oauth2"`` (the
    ``oauth2_*`` config keys); raises OAuth2ConfigError naming the missing or bad key."""
    name = account.name
    provider = account.oauth2_provider or "custom"
    if provider not in PROVIDERS:
        raise OAuth2ConfigError(f"oauth2_provider must be one of {', '.join(PROVIDERS)}, not {provider!r}")
    if not account.oauth2_client_id:
        raise OAuth2ConfigError(
            f"account {name!r} has auth = \"oauth2\" but no oauth2_client_id; register a client (see the OAuth2 docs page)"
        )
    secret = Secret(account.oauth2_client_secret) if account.oauth2_client_secret else None
    common = dict(name=name, provider=provider, client_id=account.oauth2_client_id, client_secret=secret)
    if provider == "microsoft":
        tenant = account.oauth2_tenant or "common"
        if tenant not in MICROSOFT_TENANTS and not all(c.isalnum() or c in "-." for c in tenant):
            raise OAuth2ConfigError(f"oauth2_tenant must be common, consumers, organizations or a tenant ID, not {tenant!r}")
        base = f"https://login.microsoftonline.com/{tenant}/oauth2/v2.0"
        settings = Settings(
            **common,
            scope=account.oauth2_scope or MICROSOFT_SCOPE,
            token_endpoint=f"{base}/token",
            device_endpoint=f"{base}/devicecode",
            authorization_endpoint=f"{base}/authorize",
            refresh_lifetime=MICROSOFT_REFRESH_LIFETIME,
            redirect_host="localhost",  # what Entra accepts for "Mobile and desktop applications"
        )
    elif provider == "google":
        settings = Settings(
            **common,
            scope=account.oauth2_scope or GOOGLE_SCOPE,
            token_endpoint="https://oauth2.googleapis.com/token",
            device_endpoint="https://oauth2.googleapis.com/device/code",
            authorization_endpoint="https://accounts.google.com/o/oauth2/v2/auth",
            revocation_endpoint="https://oauth2.googleapis.com/revoke",
        )
    else:
        if not account.oauth2_scope:
            raise OAuth2ConfigError(f"account {name!r}: oauth2_provider = \"custom\" needs oauth2_scope")
        endpoints = {
            "token_endpoint": account.oauth2_token_endpoint,
            "device_endpoint": account.oauth2_device_endpoint,
            "authorization_endpoint": account.oauth2_authorization_endpoint,
        }
        for key, url in endpoints.items():
            if url:
                require_https(url, f"oauth2_{key}")
        if account.oauth2_issuer:
            require_https(account.oauth2_issuer, "oauth2_issuer")
        elif not account.oauth2_token_endpoint:
            raise OAuth2ConfigError(f"account {name!r}: oauth2_provider = \"custom\" needs oauth2_issuer or oauth2_token_endpoint")
        settings = Settings(**common, scope=account.oauth2_scope, issuer=account.oauth2_issuer, **endpoints)
    return settings
