"""The IMAP destination: APPEND to one folder (RFC 3501; UIDPLUS, MULTIAPPEND and LITERAL+ when
offered) through imapclient, the ``fastpoplib[imap]`` extra, imported only when an IMAP
destination is opened. How a run killed in the middle of an APPEND appends nothing twice: see
the package docstring."""

from __future__ import annotations

import hashlib
import re
import ssl
import time
from dataclasses import replace
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Callable
from urllib.parse import unquote, urlsplit

from .._store import Outcome, Receipt, Refusal
from .._token_retry import first_token, retry_token
from .remote import IDLE_CHECK, DestinationError, Journal, Remote, header_fields, log, state_dir_for

BATCH_MESSAGES = 50  # messages per MULTIAPPEND (and per journal write of intents)
BATCH_BYTES = 8 << 20  # bytes per MULTIAPPEND: what a batch may hold in memory
IMAP_EXTRA = "the IMAP destination needs imapclient: pip install 'fastpoplib[imap]'"


class ImapURL:
    """``imaps://USER@HOST[:PORT]/FOLDER`` (implicit TLS, port 993) or ``imap://...`` (STARTTLS,
    port 143). USER and FOLDER are percent-decoded (RFC 5092 style); FOLDER defaults to INBOX."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.password is not None:  # checked first: no message below may show it
            raise DestinationError(
                "the IMAP URL holds a password; give it with --imap-password-env or --imap-password-command instead",
                "usage",
            )
        try:
            port = parts.port
        except ValueError as exc:
            raise DestinationError(f"the IMAP URL {url!r} is not valid: {exc}", "usage") from None
        if parts.scheme not in ("imap", "imaps"):
            raise DestinationError(f"the IMAP URL must start with imaps:// or imap://, not {url!r}", "usage")
        if not parts.username or not parts.hostname:
            raise DestinationError(f"the IMAP URL {url!r} needs a user and a host: imaps://USER@HOST/FOLDER", "usage")
        if parts.query or parts.fragment:
            raise DestinationError(f"the IMAP URL {url!r} has a query or fragment; use imaps://USER@HOST/FOLDER", "usage")
        self.tls = parts.scheme == "imaps"
        self.user = unquote(parts.username)
        self.host = parts.hostname
        self.port = port or (993 if self.tls else 143)
        self.folder = unquote(parts.path.lstrip("/")) or "INBOX"

    def __str__(self) -> str:
        return f"{'imaps' if self.tls else 'imap'}://{self.user}@{self.host}:{self.port}/{self.folder}"


def internal_date(data: bytes) -> datetime | None:
    """When the message arrived, for APPEND's INTERNALDATE: the date of its first (topmost)
    Received header, else its Date header; None if neither parses (the server then uses
    its own clock). A date without a zone counts as UTC."""
    headers = header_fields(data)
    candidates = [str(r).rsplit(";", 1)[-1] for r in (headers.get_all("Received") or [])[:1] if ";" in str(r)]
    candidates += [str(headers["Date"])] if headers["Date"] is not None else []
    for text in candidates:
        try:
            when = parsedate_to_datetime(" ".join(text.split()))
        except (TypeError, ValueError, IndexError, OverflowError):
            continue
        if when is None or not 1900 <= when.year <= 9999:
            continue
        return when if when.tzinfo else when.replace(tzinfo=timezone.utc)
    return None


def _message_id(data: bytes) -> str | None:
    value = header_fields(data)["Message-ID"]
    text = " ".join(str(value).split()) if value is not None else ""
    return text if text and text.isascii() and '"' not in text and "\\" not in text else None


_APPENDUID = re.compile(rb"\[APPENDUID ([0-9]+) ([0-9:,]+)\]", re.IGNORECASE)
_CODE = re.compile(rb"^\[([A-Za-z-]+)")


def _uid_set(text: bytes) -> list[int]:
    uids: list[int] = []
    for part in text.split(b","):
        low, _, high = part.partition(b":")
        uids.extend(range(int(low), int(high or low) + 1))
    return uids


def imap_state_dir(url: ImapURL) -> Path:
    """Where the state of accounts delivering to this folder lives (nothing is opened)."""
    return state_dir_for("imap", str(url))


class ImapDestination(Remote):
    """APPEND to one folder of an IMAP server; see the module docstring for how a run killed
    in the middle of an APPEND is repaired.

    ``secret()`` gives ``{"password": ...}``, ``{"oauth2_token": ...}`` or ``{"oauth2":
    source}`` (a token source: a token refused at login is replaced once); OAUTHBEARER or
    XOAUTH2, whichever the server offers. It is asked once connected. ``timeout`` (seconds) bounds every network operation.
    Raises :class:`DestinationError` when the server cannot be reached or refuses the login.
    """

    def __init__(
        self,
        url: ImapURL,
        secret: Callable[[], dict[str, Any]],
        account: str,
        *,
        cafile: str | None = None,
        insecure: bool = False,
        timeout: float = 60.0,
    ) -> None:
        super().__init__(str(url), imap_state_dir(url), account)
        self.url = url
        try:
            import imapclient  # type: ignore[import-untyped,import-not-found,unused-ignore]
            from imapclient import exceptions as imap_errors  # type: ignore[import-untyped,import-not-found,unused-ignore]
        except ImportError:
            raise DestinationError(IMAP_EXTRA, "usage") from None
        self._errors = imap_errors
        self._client_class = imapclient.IMAPClient
        self.batch: list[tuple[str, bytes]] = []
        self.batch_bytes = 0
        self.lost: str | None = None  # why the connection is unusable
        self.idle_check = IDLE_CHECK
        self._reconnect = lambda: self._connect(secret, cafile, insecure, timeout)
        self.client = self._connect(secret, cafile, insecure, timeout)
        try:
            self._open_folder()
        except BaseException:
            self.close()
            raise
        self.used = time.monotonic()

    def _alive(self) -> None:
        """Servers drop clients idle for a while (RFC 9051 allows after 30 minutes; a slow POP
        download is idle time here): after ``idle_check`` seconds, NOOP first, and log in
        again if the connection is gone. Nothing was in flight, so nothing is lost."""
        if time.monotonic() - self.used < self.idle_check:
            return
        try:
            self.client.noop()
        except (OSError, self._errors.IMAPClientError):
            log.info("the connection to %s was closed while idle; connecting again", self.path)
            _drop(self.client)
            self.client = self._reconnect()
            self._open_folder()
        self.used = time.monotonic()

    def _fail(self, what: str, exc: BaseException) -> DestinationError:
        return DestinationError(f"the IMAP server {self.url.host}:{self.url.port} {what}: {_text(exc)}")

    def _connect(self, secret: Callable[[], dict[str, Any]], cafile: str | None, insecure: bool, timeout: float) -> Any:
        url, errors = self.url, self._errors
        try:
            context = ssl.create_default_context(cafile=cafile)
        except (OSError, ssl.SSLError) as exc:
            raise DestinationError(f"cannot read the CA file {cafile} (--imap-cafile): {_text(exc)}", "usage") from None
        try:
            client = self._client_class(url.host, port=url.port, ssl=url.tls, ssl_context=context, timeout=timeout)
        except ssl.SSLCertVerificationError as exc:
            raise DestinationError(
                f"the IMAP server's certificate is not trusted: {exc.verify_message}; if it uses a private CA, pass --imap-cafile FILE (PEM)"
            ) from None
        except (OSError, errors.IMAPClientError, ssl.SSLError) as exc:
            raise self._fail("cannot be reached", exc) from None
        try:
            if not url.tls:
                if client.has_capability("STARTTLS"):
                    client.starttls(context)
                elif not insecure:
                    raise DestinationError(
                        f"the IMAP server {url.host}:{url.port} does not offer STARTTLS, so the password would travel"
                        " in clear text; use imaps:// if it offers implicit TLS, or add --insecure",
                        "usage",
                    )
            self._login(client, secret())
        except ssl.SSLCertVerificationError as exc:
            _drop(client)
            raise DestinationError(f"the IMAP server's certificate is not trusted: {exc.verify_message}; pass --imap-cafile FILE (PEM)") from None
        except (OSError, errors.IMAPClientError, ssl.SSLError) as exc:
            _drop(client)
            raise self._fail("failed while starting TLS or logging in", exc) from None
        except BaseException:  # a refused login, a failed password command: nothing stays open
            _drop(client)
            raise
        return client

    def _login(self, client: Any, secret: dict[str, Any]) -> None:
        source = secret.get("oauth2")
        if source is None:
            self._login_with(client, secret)
            return
        # A token source (the account's stored sign-in): a token the server refuses early
        # (expired or revoked there before its announced expiry) is replaced once, as for POP3.
        token = first_token(source)
        try:
            self._login_with(client, {"oauth2_token": token})
            return
        except DestinationError as exc:
            if exc.kind != "auth":
                raise
            fresh = retry_token(source, token)  # SignInRequired when the refresh token is refused too
            if fresh is None:
                raise
        log.info("the IMAP server %s refused the OAuth2 token; trying once more with a new one", self.url.host)
        self._login_with(client, {"oauth2_token": fresh})

    def _login_with(self, client: Any, secret: dict[str, str]) -> None:
        token = secret.get("oauth2_token")
        try:
            if token is None:
                client.login(self.url.user, secret["password"])
            elif client.has_capability("AUTH=OAUTHBEARER"):
                client.oauthbearer_login(self.url.user, token)
            elif client.has_capability("AUTH=XOAUTH2"):
                client.oauth2_login(self.url.user, token)
            else:
                raise DestinationError(
                    f"the IMAP server {self.url.host} offers neither OAUTHBEARER nor XOAUTH2; use --imap-password-env or --imap-password-command",
                    "usage",
                )
        except self._errors.LoginError as exc:
            # The server's words only: imapclient's text never holds the secret.
            raise DestinationError(
                f"the IMAP server {self.url.host} refused the login of {self.url.user}: {_text(exc)}; check the IMAP user name and password or token",
                "auth",
            ) from None

    def _open_folder(self) -> None:
        client = self.client
        try:
            # "/" in the URL separates levels; the server may use another separator (Dovecot ".").
            listed = client.list_folders("", "")
            delimiter = listed[0][1] if listed and listed[0][1] else b"/"
            folder = self.url.folder.replace("/", delimiter.decode() if isinstance(delimiter, bytes) else delimiter)
            self.folder = folder
            if not client.folder_exists(folder):
                client.create_folder(folder)
                log.info("created the IMAP folder %s", folder)
            status = client.folder_status(folder, ["UIDNEXT", "UIDVALIDITY"])  # STATUS: the folder stays unselected
        except (OSError, self._errors.IMAPClientError) as exc:
            raise self._fail(f"did not open the folder {folder!r}", exc) from None
        self.uidvalidity = int(status.get(b"UIDVALIDITY", 0))
        self.uidnext = int(status.get(b"UIDNEXT", 1))
        self.multiappend = client.has_capability("MULTIAPPEND")
        self.uidplus = client.has_capability("UIDPLUS")

    # -- "do you hold it": the journal's receipts, and the intents looked up in the folder

    def stored_keys(self) -> set[str]:
        with self.lock:
            self.journal = Journal(self.journal.path)
            if self.journal.intents:
                try:
                    self.client.select_folder(self.folder, readonly=True)
                    for key, intent in list(self.journal.intents.items()):
                        if self._in_folder(intent):
                            self.journal.stored[key] = "found in the folder after an interrupted run"
                        del self.journal.intents[key]
                    self.client.close_folder()
                except (OSError, self._errors.IMAPClientError) as exc:
                    raise self._fail("failed while looking for messages of an interrupted run", exc) from None
                self.journal.save()
            return set(self.journal.stored)

    def _in_folder(self, intent: dict[str, Any]) -> bool:
        criteria: list[Any] = []
        if intent.get("uidvalidity") == self.uidvalidity:
            criteria += ["UID", f"{int(intent['since'])}:*"]
        if intent.get("msgid"):
            criteria += ["HEADER", "Message-ID", intent["msgid"]]
        else:
            criteria += ["LARGER", str(int(intent["size"]) - 1), "SMALLER", str(int(intent["size"]) + 1)]
        uids = self.client.search(criteria)
        for start in range(0, len(uids), 20):
            bodies = self.client.fetch(uids[start : start + 20], ["BODY.PEEK[]"])
            for item in bodies.values():
                if hashlib.sha256(item.get(b"BODY[]", b"")).hexdigest() == intent["sha256"]:
                    return True
        return False

    # -- APPEND

    def deliver(self, key: str, data: bytes) -> list[Outcome]:
        if self.lost is not None:
            return [Refusal(key, self.lost, stop=True)]
        self.batch.append((key, data))
        self.batch_bytes += len(data)
        # Without MULTIAPPEND a batch still costs one journal write, then an APPEND per message.
        if len(self.batch) < BATCH_MESSAGES and self.batch_bytes < BATCH_BYTES:
            return []
        return self._append_batch()

    def flush(self) -> list[Outcome]:
        with self.lock:
            return self._confirm(self._append_batch() if self.batch else [])

    def _append_batch(self) -> list[Outcome]:
        batch, self.batch, self.batch_bytes = self.batch, [], 0
        try:
            self._alive()
        except DestinationError as exc:
            self.lost = f"{exc}; it stays on the POP server"
            return [Refusal(key, self.lost, stop=True) for key, _ in batch]
        for key, data in batch:
            self.journal.intents[key] = {
                "sha256": hashlib.sha256(data).hexdigest(),
                "size": len(data),
                "msgid": _message_id(data),
                "since": self.uidnext,
                "uidvalidity": self.uidvalidity,
            }
        self.journal.save()  # before the APPEND: a run killed after its OK finds the message next time
        if self.multiappend:
            return self._multiappend(batch)
        outcomes: list[Outcome] = []
        for i, (key, data) in enumerate(batch):
            outcome = self._append_one(key, data)
            outcomes.append(outcome)
            if isinstance(outcome, Refusal) and outcome.stop:
                return outcomes + self._not_sent(batch[i + 1 :], outcome.reason)
        return outcomes

    def _multiappend(self, batch: list[tuple[str, bytes]]) -> list[Outcome]:
        messages = []
        for _, data in batch:
            when = internal_date(data)
            messages.append({"msg": data, "date": when} if when else {"msg": data})
        try:
            typ, response = self.client.multiappend(self.folder, messages)
        except (OSError, self._errors.IMAPClientAbortError) as exc:
            return self._lost(batch, exc)
        except self._errors.IMAPClientError as exc:  # a tagged BAD (a NUL in a literal...)
            typ, response = "BAD", [str(exc).split("BAD ", 1)[-1].encode()]
        self.used = time.monotonic()
        text = _response_text(response)
        if typ == "OK":
            return self._receipts([key for key, _ in batch], text)
        # RFC 3502: a refused MULTIAPPEND appends none of its messages.
        refused = self._refusal("", typ, text)
        if refused.stop or len(batch) == 1:
            for key, _ in batch:
                del self.journal.intents[key]
            return [replace(refused, key=key) for key, _ in batch]
        # One message the server will not take (too big, a NUL) must not hold up the others,
        # run after run: each goes alone (a MULTIAPPEND of one keeps the bytes exact).
        outcomes: list[Outcome] = []
        for i, one in enumerate(batch):
            outcomes += self._multiappend([one])
            if isinstance(outcomes[-1], Refusal) and outcomes[-1].stop:
                return outcomes + self._not_sent(batch[i + 1 :], outcomes[-1].reason)
        return outcomes

    def _not_sent(self, rest: list[tuple[str, bytes]], reason: str) -> list[Outcome]:
        for key, _ in rest:
            del self.journal.intents[key]
        return [Refusal(key, reason, stop=True) for key, _ in rest]

    def _append_one(self, key: str, data: bytes) -> Outcome:
        if not data.count(b"\r") == data.count(b"\n") == data.count(b"\r\n"):
            # Without MULTIAPPEND the message goes through imaplib's APPEND, which turns a lone
            # CR or LF into CRLF: sending it would not store the bytes received.
            del self.journal.intents[key]
            return Refusal(
                key,
                "it has a bare CR or LF, which APPEND on this IMAP server (no MULTIAPPEND) would rewrite, so it was not appended",
            )
        try:
            text = self.client.append(self.folder, data, msg_time=internal_date(data))
        except self._errors.IMAPClientAbortError as exc:
            return self._lost([(key, data)], exc)[0]
        except self._errors.IMAPClientError as exc:
            # imapclient raises a plain IMAPClientError for a tagged NO: "append failed: TEXT".
            del self.journal.intents[key]
            return self._refusal(key, "NO", str(exc).split("failed: ", 1)[-1].encode())
        except OSError as exc:
            return self._lost([(key, data)], exc)[0]
        finally:
            self.used = time.monotonic()
        return self._receipts([key], text if isinstance(text, bytes) else str(text).encode())[0]

    def _receipts(self, keys: list[str], text: bytes) -> list[Outcome]:
        found = _APPENDUID.search(text) if self.uidplus else None
        uids = _uid_set(found.group(2)) if found else []
        if found and len(uids) == len(keys):
            uidvalidity = int(found.group(1))
            details = [f"UID {uid}, UIDVALIDITY {uidvalidity}" for uid in uids]
            if uidvalidity == self.uidvalidity:
                self.uidnext = max(self.uidnext, uids[-1] + 1)
        else:
            details = ["tagged OK"] * len(keys)
        for key in keys:
            del self.journal.intents[key]
        return [Receipt(key, detail) for key, detail in zip(keys, details)]

    def _refusal(self, key: str, typ: str, text: bytes) -> Refusal:
        """The refusal of an APPEND: its sentence, and whether it stops the run's deliveries
        (the response codes of RFC 5530 that no other message would get past) or, a full
        mailbox, pauses ``watch`` until someone frees space."""
        shown = text.decode("utf-8", "backslashreplace")
        code = _CODE.match(text)
        name = code.group(1).decode().upper() if code else ""
        said = f"the IMAP server refused APPEND: {typ} {shown}"
        if name == "OVERQUOTA":
            return Refusal(key, f"{said} (the IMAP mailbox is full); it stays on the POP server, free some space and run again", stop=True, pause=True)
        if name == "TRYCREATE":
            return Refusal(key, f"{said} (the folder {self.folder!r} is gone); it stays on the POP server, run again to create it", stop=True)
        return Refusal(key, f"{said}; it stays on the POP server", name in ("SERVERBUG", "UNAVAILABLE", "INUSE"))

    def _lost(self, batch: list[tuple[str, bytes]], exc: BaseException) -> list[Outcome]:
        # The outcome is unknown: the intents stay, and the next run looks in the folder.
        reason = (
            f"the connection to the IMAP server was lost during APPEND ({_text(exc)}); it stays on the POP server,"
            " and the next run checks whether the IMAP server stored it"
        )
        self.lost = "the connection to the IMAP server was lost earlier in this run; it stays on the POP server"
        return [Refusal(key, reason, stop=True) for key, _ in batch]

    def close(self) -> None:
        with self.lock:
            self.batch, self.batch_bytes = [], 0
            _drop(self.client, logout=True)


def _response_text(response: Any) -> bytes:
    first = response[0] if response else b""
    return first if isinstance(first, bytes) else str(first).encode()


def _drop(client: Any, logout: bool = False) -> None:
    try:
        if logout:
            client.logout()
        else:
            client.shutdown()
    except Exception:  # noqa: BLE001 - closing a connection that may already be gone
        try:
            client.shutdown()
        except Exception:  # noqa: BLE001, S110
            pass


def _text(exc: BaseException) -> str:
    """What imapclient or imaplib said, for a sentence: a server reply they carry as bytes
    (``str(exc)`` shows ``b'...'``) decoded."""
    said = exc.args[0] if len(exc.args) == 1 else None
    if isinstance(said, bytes):
        return said.decode("utf-8", "backslashreplace").strip()
    text = str(exc) or type(exc).__name__
    if re.fullmatch(r"b'[^'\\]*'", text):
        text = text[2:-1]
    return text.strip()
