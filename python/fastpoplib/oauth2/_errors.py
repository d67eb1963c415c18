"""What can go wrong in OAuth2, each a sentence with no token in it."""


class OAuth2ConfigError(ValueError):
    """The account's OAuth2 settings are incomplete or unsafe; the message says which key."""


class OAuth2Error(Exception):
    """The authorization server refused or failed."""


class InvalidGrant(OAuth2Error):
    """The refresh token (or code) was refused for good: the user must sign in again."""


class Denied(OAuth2Error):
    """The user refused, or the sign-in expired before the user approved it."""
