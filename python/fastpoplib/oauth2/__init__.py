"""OAuth2 sign-in that keeps working: tokens stored per account (keyring or a private file),
refreshed before use with rotation, one refresh across concurrent runs.

    from fastpoplib.oauth2 import TokenSource, TokenStore
    pop.login(user, oauth2=source)          # source: any callable returning an access token

This package imports only the standard library; the HTTP parts (authlib, httpx: ``pip install
'fastpoplib[oauth]'``) load when a token must be fetched or refreshed.
"""

from ._errors import Denied, InvalidGrant, OAuth2ConfigError, OAuth2Error
from ._providers import GOOGLE_SCOPE, MICROSOFT_SCOPE, Settings, settings_for
from ._secret import Secret
from ._source import REFRESH_MARGIN, account_state, SignInRequired, TokenSource, record_from, state_line, token_source
from ._tokens import TokenRecord, TokenStore, TokenStoreError

__all__ = [
    "Denied",
    "account_state",
    "InvalidGrant",
    "OAuth2Error",
    "GOOGLE_SCOPE",
    "MICROSOFT_SCOPE",
    "REFRESH_MARGIN",
    "OAuth2ConfigError",
    "Secret",
    "Settings",
    "SignInRequired",
    "TokenRecord",
    "TokenSource",
    "TokenStore",
    "TokenStoreError",
    "record_from",
    "settings_for",
    "state_line",
    "token_source",
]
