"""Account settings of ``fastpoplib fetch``, ``ls`` and ``watch``: :class:`Account` (each
setting checked on creation, :class:`ConfigError` with a sentence otherwise) and where its
secrets come from (a command, an environment variable, netrc, the stored OAuth2 sign-in)."""

from __future__ import annotations

import math
import netrc
import os
import shlex
import subprocess
from dataclasses import dataclass, field
from typing import Any

from .. import _tls
from ..oauth2 import OAuth2ConfigError, token_source

# The longest timeout or wait accepted, in seconds (what a socket timeout can hold).
MAX_SECONDS = 9.2e9


class ConfigError(Exception):
    """A bad option or configuration file (exit code 2)."""



# Config-file keys of an account that signs in with OAuth2 (`auth = "oauth2"`; see fastpoplib.oauth2).
OAUTH2_KEYS = (
    "auth",
    "oauth2_provider",
    "oauth2_client_id",
    "oauth2_client_secret",
    "oauth2_scope",
    "oauth2_tenant",
    "oauth2_issuer",
    "oauth2_token_endpoint",
    "oauth2_device_endpoint",
    "oauth2_authorization_endpoint",
)

# field: (kind, minimum, maximum); kinds: str, bool, int (whole number), float (seconds);
# a float minimum is exclusive for the timeout and interval, inclusive otherwise
_SETTINGS = {
    "host": (str, None, None),
    "user": (str, None, None),
    "name": (str, None, None),
    "port": (int, 1, 65535),
    "tls": (str, None, None),
    "insecure": (bool, None, None),
    "cafile": (str, None, None),
    "fingerprint": (str, None, None),
    "password_env": (str, None, None),
    "password_command": (str, None, None),
    "netrc_file": (str, None, None),
    "oauth2_token_command": (str, None, None),
    **{key: (str, None, None) for key in OAUTH2_KEYS},
    "maildir": (str, None, None),
    "mbox": (str, None, None),
    "imap": (str, None, None),
    "imap_password_env": (str, None, None),
    "imap_password_command": (str, None, None),
    "imap_oauth2_token_command": (str, None, None),
    "imap_auth": (str, None, None),
    "imap_cafile": (str, None, None),
    "lmtp": (str, None, None),
    "lmtp_recipient": (str, None, None),
    "mda": (str, None, None),
    "delete": (bool, None, None),
    "max_size": (int, 1, None),
    "max_messages": (int, 1, None),
    "timeout": (float, 0, None),
    "wait": (float, 0, None),
    "mbox_lock_wait": (float, 0, None),
    "interval": (float, 0, None),
}


def _check_setting(name: str, value: Any) -> None:
    kind, least, most = _SETTINGS[name]
    where = name if name in ("name", "imap_auth") or name in OAUTH2_KEYS else f"{name} (--{name.replace('_', '-')})"  # config-file keys only
    if kind is str and not isinstance(value, str):
        raise ConfigError(f"{where} must be a string, not {value!r}")
    if kind is bool and not isinstance(value, bool):
        raise ConfigError(f"{where} must be true or false, not {value!r}")
    if kind in (int, float):
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if kind is int and not isinstance(value, int):
            number = False
        if not number or not math.isfinite(value):
            what = "a whole number" if kind is int else "a number of seconds"
            raise ConfigError(f"{where} must be {what}, not {value!r}")
        if kind is int and (value < least or (most is not None and value > most)):
            bounds = f"from {least} to {most}" if most is not None else f"of at least {least}"
            raise ConfigError(f"{where} must be a whole number {bounds}, not {value!r}")
        exclusive = name in ("timeout", "interval")  # 0 would mean no time at all
        if kind is float and (value < least or (exclusive and value == least)):
            relation = "greater than" if exclusive else "at least"
            raise ConfigError(f"{where} must be {relation} {least} seconds, not {value!r}")
        if kind is float and value > MAX_SECONDS:
            raise ConfigError(f"{where} must be at most {MAX_SECONDS:g} seconds, not {value!r}")


@dataclass
class Account:
    host: str
    user: str
    name: str = ""
    port: int | None = None
    tls: str = "implicit"  # implicit | starttls | none
    insecure: bool = False  # allow a clear-text password and skip nothing else
    cafile: str | None = None
    fingerprint: str | None = None  # SHA256:... of the server's certificate, pinned
    password_env: str | None = None
    password_command: str | None = None
    netrc_file: str | None = None
    oauth2_token_command: str | None = None
    auth: str = "password"  # or "oauth2": tokens from `fastpoplib auth login` (the oauth2_* keys)
    oauth2_provider: str | None = None
    oauth2_client_id: str | None = None
    oauth2_client_secret: str | None = field(default=None, repr=False)  # not confidential for desktop apps, still never shown
    oauth2_scope: str | None = None
    oauth2_tenant: str | None = None
    oauth2_issuer: str | None = None
    oauth2_token_endpoint: str | None = None
    oauth2_device_endpoint: str | None = None
    oauth2_authorization_endpoint: str | None = None
    maildir: str | None = None
    mbox: str | None = None
    imap: str | None = None  # imaps://USER@HOST[:PORT]/FOLDER or imap://... (STARTTLS)
    imap_password_env: str | None = None
    imap_password_command: str | None = None
    imap_oauth2_token_command: str | None = None
    imap_auth: str | None = None  # "oauth2": the IMAP login uses this account's stored OAuth2 tokens too
    imap_cafile: str | None = None
    lmtp: str | None = None  # HOST:PORT or unix:PATH
    lmtp_recipient: str | None = None
    mda: str | None = None  # a command: the message on its standard input
    delete: bool = False
    max_size: int | None = None
    max_messages: int | None = None
    timeout: float = 60.0
    wait: float = 0.0  # seconds to wait for another run of this account to finish
    mbox_lock_wait: float = 60.0  # seconds to wait for another program's mbox locks
    interval: float = 300.0  # watch: seconds between polls (about what Gmail's fetcher did)
    # Typed at the CLI's prompt (never a config key or an option): see cli._ask_passwords.
    typed_password: str | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in _SETTINGS:
            value = getattr(self, name)
            if value is not None:
                _check_setting(name, value)
        if self.tls not in ("implicit", "starttls", "none"):
            raise ConfigError(f"tls must be implicit, starttls or none, not {self.tls!r}")
        if self.tls == "none" and not self.insecure:
            raise ConfigError(f"{self.label}: tls = none sends the password in clear text; add --insecure to allow it")
        chosen = [name for name in DESTINATIONS if getattr(self, name)]
        if len(chosen) > 1:
            given = " and ".join(f"--{name}" for name in chosen)
            raise ConfigError(f"{self.label}: an account has one destination; choose one of {given}")
        if self.imap_auth is not None and self.imap_auth != "oauth2":
            raise ConfigError(f"{self.label}: imap_auth must be oauth2 (the IMAP login with this account's stored OAuth2 tokens), not {self.imap_auth!r}")
        if self.imap_auth and self.auth != "oauth2":
            raise ConfigError(
                f"{self.label}: imap_auth = \"oauth2\" uses this account's OAuth2 sign-in; set auth = \"oauth2\" too, or use imap_oauth2_token_command"
            )
        imap_sources = [self.imap_password_env, self.imap_password_command, self.imap_oauth2_token_command, self.imap_auth]
        if self.imap and sum(source is not None for source in imap_sources) != 1:
            raise ConfigError(
                f"{self.label}: --imap needs exactly one of --imap-password-env, --imap-password-command,"
                " --imap-oauth2-token-command and imap_auth = \"oauth2\""
            )
        if self.lmtp and not self.lmtp_recipient:
            raise ConfigError(f"{self.label}: --lmtp needs --lmtp-recipient ADDRESS (the mailbox to deliver to)")
        for name in ("imap_password_env", "imap_password_command", "imap_oauth2_token_command", "imap_auth", "imap_cafile", "lmtp_recipient"):
            if getattr(self, name) is not None and not getattr(self, name.split("_")[0]):
                option = name.split("_")[0]
                given = name if name == "imap_auth" else f"--{name.replace('_', '-')}"
                raise ConfigError(f"{self.label}: {given} is for the --{option} destination; give --{option} too")
        if self.tls == "none" and (self.fingerprint is not None or self.cafile is not None):
            given = "--fingerprint" if self.fingerprint is not None else "--cafile"
            raise ConfigError(f"{self.label}: {given} checks the server's TLS certificate, but tls = none uses no TLS; use --tls implicit or starttls")
        if self.fingerprint is not None:
            if self.cafile is not None:
                raise ConfigError(f"{self.label}: choose --fingerprint or --cafile, not both")
            try:
                _tls.pin(self.fingerprint)
            except ValueError as exc:
                raise ConfigError(f"fingerprint (--fingerprint): {exc}") from None
        if self.auth not in ("password", "oauth2"):
            raise ConfigError(f"{self.label}: auth must be password or oauth2, not {self.auth!r}")
        if self.auth == "oauth2" and self.oauth2_token_command:
            raise ConfigError(f"{self.label}: choose auth = \"oauth2\" or oauth2_token_command, not both")
        self.name = self.name or self.label

    @property
    def label(self) -> str:
        return f"{self.user}@{self.host}" + (f":{self.port}" if self.port else "")

    @property
    def identity(self) -> str:
        """Whose mail it is, for store keys, state and lock: the port made explicit, so that
        ``--port 995`` and the default name the same account."""
        return f"{self.user}@{self.host.lower()}:{self.port or (995 if self.tls == 'implicit' else 110)}"

    def has_secret_source(self) -> bool:
        """Whether :meth:`secret` has somewhere to read from without asking the user."""
        if self.auth == "oauth2" or self.oauth2_token_command or self.password_command or self.password_env:
            return True
        try:
            auth = netrc.netrc(self.netrc_file).authenticators(self.host)
        except FileNotFoundError:
            return False
        except (OSError, netrc.NetrcParseError):
            return True  # secret() reports the unreadable file
        return auth is not None and auth[2] is not None

    def secret(self) -> dict[str, Any]:
        """``{"password": ...}``, ``{"oauth2_token": ...}`` or ``{"oauth2": token source}``
        from the configured source or typed at the prompt; never from the command line itself."""
        if self.auth == "oauth2":
            try:
                return {"oauth2": token_source(self)}
            except OAuth2ConfigError as exc:
                raise ConfigError(f"{self.label}: {exc}") from None
        if self.typed_password is not None:
            return {"password": self.typed_password}
        if self.oauth2_token_command:
            return {"oauth2_token": _run_secret_command(self.oauth2_token_command, "--oauth2-token-command")}
        if self.password_command:
            return {"password": _run_secret_command(self.password_command, "--password-command")}
        if self.password_env:
            value = os.environ.get(self.password_env)
            if value is None:
                raise ConfigError(f"the environment variable {self.password_env} (--password-env) is not set")
            return {"password": value}
        try:
            auth = netrc.netrc(self.netrc_file).authenticators(self.host)
        except FileNotFoundError:
            raise ConfigError(_NO_PASSWORD.format(host=self.host)) from None
        except (OSError, netrc.NetrcParseError) as exc:
            raise ConfigError(f"cannot read the netrc file: {exc}") from None
        if auth is None or auth[2] is None:
            raise ConfigError(_NO_PASSWORD.format(host=self.host))
        return {"password": auth[2]}

    def imap_secret(self) -> dict[str, Any]:
        """The IMAP destination's ``{"password": ...}`` or ``{"oauth2_token": ...}``; with
        ``imap_auth = "oauth2"`` ``{"oauth2": source}``, the token source of the account's
        stored sign-in (as :meth:`secret` gives for POP3)."""
        if self.imap_auth == "oauth2":
            try:
                return {"oauth2": token_source(self)}
            except OAuth2ConfigError as exc:
                raise ConfigError(f"{self.label}: {exc}") from None
        if self.imap_oauth2_token_command:
            return {"oauth2_token": _run_secret_command(self.imap_oauth2_token_command, "--imap-oauth2-token-command")}
        if self.imap_password_command:
            return {"password": _run_secret_command(self.imap_password_command, "--imap-password-command")}
        assert self.imap_password_env is not None  # one source is required (__post_init__)
        value = os.environ.get(self.imap_password_env)
        if value is None:
            raise ConfigError(f"the environment variable {self.imap_password_env} (--imap-password-env) is not set")
        return {"password": value}


DESTINATIONS = ("maildir", "mbox", "imap", "lmtp", "mda")  # an account has one


_NO_PASSWORD = (
    "no password for {host}: give --password-env VAR, --password-command CMD, or a netrc entry for {host}"
    " (~/.netrc or --netrc-file), or run fastpoplib on a terminal to type it"
)


def _run_secret_command(command: str, option: str) -> str:
    # The command line may hold no secret, but its output might: never echo the output.
    try:
        out = subprocess.run(shlex.split(command), capture_output=True, timeout=60, check=False)
    except OSError as exc:
        raise ConfigError(f"the {option} command could not be run ({exc.strerror}); check {option}") from None
    except subprocess.TimeoutExpired:
        raise ConfigError(f"the {option} command did not finish within 60 s") from None
    except ValueError as exc:  # shlex: unbalanced quotes
        raise ConfigError(f"the {option} command cannot be parsed: {exc}") from None
    if out.returncode != 0:
        raise ConfigError(f"the {option} command failed with exit status {out.returncode}; run it yourself to see why")
    try:
        text = out.stdout.decode("utf-8")
    except UnicodeDecodeError:
        # Its message would show a byte of the secret and where it is: say only what is wrong.
        raise ConfigError(f"the {option} command's output is not UTF-8; secrets are read as UTF-8") from None
    lines = text.splitlines()
    if not lines or not lines[0]:
        raise ConfigError(f"the {option} command printed nothing")
    return lines[0]

