"""Where an account's tokens live: the OS keyring (the ``keyring`` extra, when a backend
works) or a file written atomically (temporary file, fsync, rename), 0600 in a 0700 directory
under the user's state directory. Plus the per-account lock that makes concurrent runs
refresh once. One owner: :class:`TokenStore`; tokens are :class:`Secret` in memory."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Dict, Optional

from .._store import AccountLock, LockBusy, StoreError, check_private_below, make_dirs, state_home, write_atomic
from ._secret import Secret

KEYRING_SERVICE = "fastpoplib-oauth2"
STORE_ENV = "FASTPOPLIB_TOKEN_STORE"  # "file" or "keyring": override the automatic choice
LOCK_WAIT = 120.0  # seconds to wait for another run's refresh (its HTTP timeout is 30 s)
_FORMAT = 1


class TokenStoreError(Exception):
    """The token store cannot be read or written; the message says where and why."""


@dataclass(frozen=True)
class TokenRecord:
    """One account's tokens and what is known about them. Times are UNIX seconds.
    ``failed``: why the last refresh was refused (the user must sign in again)."""

    client_id: str
    token_endpoint: str
    access_token: Secret
    refresh_token: Optional[Secret]
    expires_at: float
    scope: str = ""
    refresh_expires_at: Optional[float] = None
    obtained_at: float = 0.0
    refreshed_at: Optional[float] = None
    failed: Optional[str] = None

    def to_json(self) -> bytes:
        data: Dict[str, Any] = {"format": _FORMAT}
        for key, value in self.__dict__.items():
            data[key] = value.reveal() if isinstance(value, Secret) else value
        return json.dumps(data, sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes, where: str) -> "TokenRecord":
        try:
            data = json.loads(raw)
            if not isinstance(data, dict) or data.pop("format", None) != _FORMAT:
                raise ValueError("unknown format")
            data["access_token"] = Secret(data["access_token"])
            if data.get("refresh_token") is not None:
                data["refresh_token"] = Secret(data["refresh_token"])
            return cls(**data)
        except (ValueError, TypeError, KeyError):
            # Never the parser's message: it may quote a piece of a token.
            raise TokenStoreError(f"the stored tokens in {where} are damaged; sign in again with fastpoplib auth login") from None

    def expires_within(self, seconds: float, now: Optional[float] = None) -> bool:
        return self.expires_at - (time.time() if now is None else now) < seconds

    def __repr__(self) -> str:
        return f"<TokenRecord client_id={self.client_id!r} expires_at={self.expires_at:.0f} failed={self.failed!r}>"

    def marked_failed(self, why: str) -> "TokenRecord":
        return replace(self, failed=why)


def state_dir() -> Path:
    """``$XDG_STATE_HOME/fastpoplib/oauth2`` (default ``~/.local/state/fastpoplib/oauth2``)."""
    return state_home() / "oauth2"


def _keyring() -> Any:
    """The keyring module when it is installed and its backend can store secrets, else None;
    TokenStoreError when the backend the user configured cannot be loaded."""
    try:
        import keyring  # type: ignore[import-not-found,unused-ignore]
        from keyring.backends import fail  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return None
    try:
        backend = keyring.get_keyring()
    except Exception as exc:  # noqa: BLE001 - a configured backend's import or init failed
        raise TokenStoreError(
            f"the keyring backend could not be loaded ({type(exc).__name__}); fix the keyring configuration"
            f" (PYTHON_KEYRING_BACKEND, keyringrc.cfg), or set {STORE_ENV}=file to use a file"
        ) from None
    if isinstance(backend, fail.Keyring) or getattr(backend, "priority", 0) <= 0:
        return None
    chained = getattr(backend, "backends", None)
    if chained is not None and not chained:
        return None
    return keyring


class TokenStore:
    """Tokens by account name. ``backend`` ``"file"``/``"keyring"``/``None`` (automatic:
    ``$FASTPOPLIB_TOKEN_STORE``, else the keyring when it works, else the file)."""

    def __init__(self, directory: Optional[Path] = None, backend: Optional[str] = None) -> None:
        self.directory: Path = directory or state_dir()
        choice = backend or os.environ.get(STORE_ENV) or "auto"
        if choice not in ("auto", "file", "keyring"):
            raise TokenStoreError(f"{STORE_ENV} must be file or keyring, not {choice!r}")
        self._keyring: Any = None if choice == "file" else _keyring()
        if choice == "keyring" and self._keyring is None:
            raise TokenStoreError(f"{STORE_ENV}=keyring, but no working keyring backend: pip install 'fastpoplib[keyring]'")

    @property
    def kind(self) -> str:
        return "keyring" if self._keyring is not None else f"file in {self.directory}"

    def _path(self, name: str) -> Path:
        return self.directory / (hashlib.sha256(name.encode("utf-8")).hexdigest()[:24] + ".json")

    def _check_parents(self) -> None:
        """TokenStoreError if a directory above the token directory (from
        ``$XDG_STATE_HOME/fastpoplib`` down) is writable by others: they could swap the
        token directory, and the refresh tokens in it, for their own."""
        try:
            check_private_below(state_home(), self.directory)
        except StoreError as exc:
            raise TokenStoreError(str(exc).replace("the state directory", "the directory")) from None

    def _ensure_dir(self) -> None:
        self._check_parents()
        try:
            make_dirs(self.directory)
            os.chmod(self.directory, 0o700)  # also when it existed with a wider mode
        except OSError as exc:
            raise TokenStoreError(
                f"cannot create the token directory {self.directory}: {exc.strerror or exc}; fix it or set XDG_STATE_HOME"
            ) from None

    def _in_keyring(self, what: str, method: str, *args: str) -> Any:
        """A keyring call; any failure (a locked keyring, no D-Bus session, a refused
        prompt: each backend raises its own types) as TokenStoreError naming its type."""
        try:
            return getattr(self._keyring, method)(KEYRING_SERVICE, *args)
        except Exception as exc:  # noqa: BLE001
            raise TokenStoreError(
                f"the keyring could not be {what} ({type(exc).__name__}: is it locked?); unlock it, or set {STORE_ENV}=file to use a file"
            ) from None

    def check_writable(self) -> None:
        """Raises TokenStoreError now if tokens could not be saved later (before a sign-in
        the user would otherwise approve for nothing): a locked keyring refuses reads too."""
        if self._keyring is None:
            self._ensure_dir()
        else:
            self._in_keyring("read", "get_password", "")

    def load(self, name: str) -> Optional[TokenRecord]:
        """The account's record, or None when it never signed in (or signed out)."""
        if self._keyring is not None:
            text = self._in_keyring("read", "get_password", name)
            return None if text is None else TokenRecord.from_json(str(text).encode(), "the keyring")
        self._check_parents()
        path = self._path(name)
        try:
            with open(path, "rb") as f:
                # Made private again if someone widened it (the promise is 0600 in 0700).
                if os.fstat(f.fileno()).st_mode & 0o077:
                    os.fchmod(f.fileno(), 0o600)
                    os.chmod(self.directory, 0o700)
                raw = f.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise TokenStoreError(f"cannot read the token file {path}: {exc.strerror}") from None
        return TokenRecord.from_json(raw, str(path))

    def save(self, name: str, record: TokenRecord) -> None:
        """Durably replace the account's record: after this returns, a crash keeps it."""
        if self._keyring is not None:
            self._in_keyring("written", "set_password", name, record.to_json().decode())
            return
        try:
            self._ensure_dir()
            write_atomic(self._path(name), record.to_json())
        except OSError as exc:
            raise TokenStoreError(f"cannot write the token file in {self.directory}: {exc.strerror}") from None

    def delete(self, name: str) -> bool:
        """Forget the account's tokens; False when there were none."""
        if self._keyring is not None:
            if self._in_keyring("read", "get_password", name) is None:
                return False
            self._in_keyring("written", "delete_password", name)
            return True
        try:
            self._path(name).unlink()
        except FileNotFoundError:
            return False
        return True

    def locked(self, name: str) -> "_Locked":
        """``with store.locked(name):`` one refresh of this account at a time, across
        processes and threads (``flock``); ``_store.LockBusy`` after :data:`LOCK_WAIT` seconds."""
        return _Locked(self, name)


class _Locked:
    def __init__(self, store: TokenStore, name: str) -> None:
        self._store, self._name, self._lock = store, name, AccountLock(store.directory, "oauth2:" + name)

    def __enter__(self) -> None:
        self._store._ensure_dir()
        # flock on a file opened anew for each holder: excludes other processes and other
        # threads of this one alike.
        try:
            self._lock.acquire(LOCK_WAIT, threading.Event())
        except LockBusy:
            raise LockBusy(f"another run held the OAuth2 token lock of account {self._name!r} for over {LOCK_WAIT:g} s; try again") from None

    def __exit__(self, *exc: object) -> None:
        self._lock.release()

