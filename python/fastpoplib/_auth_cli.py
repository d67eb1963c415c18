"""``fastpoplib auth login|status|logout``: OAuth2 sign-in of the accounts of a config file
with ``auth = "oauth2"``. Prints the verification URI and user code (device grant, RFC 8628)
or opens the browser (``--browser``: authorization code + PKCE, loopback redirect, RFC 8252);
never prints a token."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ._retriever import EXIT_AUTH, EXIT_BUSY, EXIT_CONNECTION, EXIT_OK, EXIT_USAGE, Account, ConfigError, printable
from ._store import LockBusy
from .oauth2 import (
    Denied,
    InvalidGrant,
    OAuth2ConfigError,
    OAuth2Error,
    Settings,
    TokenStore,
    TokenStoreError,
    account_state,
    record_from,
    settings_for,
    state_line,
)

EXTRA = "pip install 'fastpoplib[oauth]'"


def add_parser(sub: Any, accounts_from: Any) -> None:
    """The ``auth`` command and its three subcommands; ``accounts_from`` reads --config."""
    auth = sub.add_parser("auth", help="OAuth2 sign-in for accounts with auth = \"oauth2\" (login, status, logout)")
    verbs = auth.add_subparsers(dest="auth_command", required=True, metavar="ACTION", help="login, status or logout")

    def common(p: argparse.ArgumentParser, need_account: bool) -> None:
        p.add_argument("--config", metavar="FILE", required=True, help="TOML file with the [[account]] tables")
        p.add_argument(
            "--account", metavar="NAME", action="append", required=need_account, help="the account's name in the config file"
            + ("" if need_account else " (repeatable; default: every account)")
        )

    login = verbs.add_parser(
        "login", help="sign in: show a code to enter at the provider (device grant), or --browser; stores the tokens"
    )
    common(login, True)
    login.add_argument("--browser", action="store_true", help="sign in in a browser on this machine (authorization code with PKCE)")
    login.set_defaults(func=lambda args: cmd_login(args, accounts_from))

    status = verbs.add_parser("status", help="each account's sign-in state (never a token); exit 3 if one must sign in")
    common(status, False)
    status.set_defaults(func=lambda args: cmd_status(args, accounts_from))

    logout = verbs.add_parser("logout", help="forget the account's stored tokens")
    common(logout, True)
    logout.set_defaults(func=lambda args: cmd_logout(args, accounts_from))


def _oauth2_accounts(args: argparse.Namespace, accounts_from: Any) -> list[Account]:
    accounts: list[Account] = accounts_from(args)
    if args.auth_command != "status":
        if len(accounts) != 1:
            raise ConfigError("give one --account NAME")
        if accounts[0].auth != "oauth2":
            raise ConfigError(f"account {accounts[0].name!r} has no auth = \"oauth2\" in {args.config}")
    return accounts


def _settings(config: str, acct: Account) -> Settings:
    """The account's OAuth2 settings, or the ConfigError every ``auth`` command (and
    ``fetch``) gives for a missing or bad ``oauth2_*`` key."""
    try:
        return settings_for(acct)
    except OAuth2ConfigError as exc:
        raise _config_error(config, acct, exc) from None


def _config_error(config: str, acct: Account, exc: OAuth2ConfigError) -> ConfigError:
    return ConfigError(f"{config}: account {acct.name!r}: {exc}")


def _store() -> TokenStore:
    try:
        return TokenStore()
    except TokenStoreError as exc:
        raise ConfigError(str(exc)) from None


def cmd_login(args: argparse.Namespace, accounts_from: Any) -> int:
    (acct,) = _oauth2_accounts(args, accounts_from)
    try:
        from .oauth2 import _grants
    except ImportError:
        raise ConfigError(f"OAuth2 sign-in needs the oauth extra: {EXTRA}") from None
    store = _store()
    settings = _settings(args.config, acct)
    try:
        store.check_writable()
        settings = _grants.discover(settings)
        grant = _grants.browser_login if args.browser else _grants.device_login
        response = grant(settings, lambda text: print("\n".join(map(printable, text.split("\n"))), flush=True))
        record = record_from(settings, response)
        with store.locked(acct.name):
            store.save(acct.name, record)
    except OAuth2ConfigError as exc:  # from discovery
        raise _config_error(args.config, acct, exc) from None
    except TokenStoreError as exc:
        raise ConfigError(str(exc)) from None
    except LockBusy as exc:
        print(f"fastpoplib: {exc}", file=sys.stderr)
        return EXIT_BUSY
    except (Denied, InvalidGrant) as exc:
        print(f"fastpoplib: sign-in failed: {printable(str(exc))}", file=sys.stderr)
        return EXIT_AUTH
    except OAuth2Error as exc:
        print(f"fastpoplib: sign-in failed: {printable(str(exc))}", file=sys.stderr)
        return EXIT_CONNECTION
    print(f"{printable(acct.name)}: signed in; tokens stored in the {store.kind}")
    return EXIT_OK


def cmd_status(args: argparse.Namespace, accounts_from: Any) -> int:
    """Each account's state; exit 2 if an account's settings are unusable (the sentence of
    ``login`` and ``fetch``, on stderr), else 3 if one must sign in."""
    store = _store()
    misconfigured = must_sign_in = False
    for acct in _oauth2_accounts(args, accounts_from):
        if acct.auth != "oauth2":
            print(f"{printable(acct.name)}: signs in with a password")
            continue
        try:
            _settings(args.config, acct)
            record = store.load(acct.name)
        except ConfigError as exc:  # the other accounts are still shown
            print(f"fastpoplib: {printable(str(exc))}", file=sys.stderr)
            misconfigured = True
            continue
        except TokenStoreError as exc:
            print(f"{printable(acct.name)}: {exc}")
            must_sign_in = True
            continue
        must_sign_in = must_sign_in or record is None or bool(record.failed)
        print(printable(state_line(acct.name, record)))
    return EXIT_USAGE if misconfigured else EXIT_AUTH if must_sign_in else EXIT_OK


def cmd_logout(args: argparse.Namespace, accounts_from: Any) -> int:
    (acct,) = _oauth2_accounts(args, accounts_from)
    store = _store()
    try:
        with store.locked(acct.name):
            try:
                record = store.load(acct.name)
            except TokenStoreError:
                record = None  # damaged: nothing to revoke, deleted below
            if record is not None and record.refresh_token is not None and not record.failed:
                _revoke(acct, record.refresh_token.reveal())
            removed = store.delete(acct.name)
    except LockBusy as exc:
        print(f"fastpoplib: {exc}", file=sys.stderr)
        return EXIT_BUSY
    except TokenStoreError as exc:
        raise ConfigError(str(exc)) from None
    print(f"{printable(acct.name)}: " + ("signed out; its tokens are deleted" if removed else "was not signed in"))
    return EXIT_OK


def _revoke(acct: Account, refresh_token: str) -> None:
    """Revoke at the provider when it has a revocation endpoint (RFC 7009: Google, issuers
    that publish one; not Microsoft); a failure is reported, the local tokens go anyway."""
    try:
        from .oauth2 import _grants

        settings = _grants.discover(settings_for(acct))
        if settings.revocation_endpoint:
            _grants.revoke(settings, refresh_token)
            print(f"{printable(acct.name)}: the provider revoked the sign-in")
    except (ImportError, OAuth2ConfigError, OAuth2Error) as exc:
        print(f"{printable(acct.name)}: could not revoke the sign-in at the provider ({exc}); deleting the tokens here anyway")


def sign_in_state(acct: Account) -> str | None:
    """The OAuth2 sign-in state ``fastpoplib status`` shows for an ``auth = "oauth2"``
    account (None for a password account): close expiry and refused refreshes included."""
    if acct.auth != "oauth2":
        return None
    try:
        return account_state(acct)
    except (OAuth2ConfigError, TokenStoreError) as exc:
        return str(exc)

