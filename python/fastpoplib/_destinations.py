"""The retriever's destinations beyond local files: an IMAP folder (APPEND, RFC 3501, with
UIDPLUS, MULTIAPPEND and LITERAL+ when offered), an LMTP server (RFC 2033, through
``smtplib.LMTP``) and an MDA program (the message on its standard input).

Each is one class behind the destination interface of :mod:`fastpoplib._store`: a message
counts as stored only on the destination's own confirmation (IMAP's tagged OK, the recipient's
LMTP 250, the MDA's exit status 0), and anything else leaves it on the POP server.

A network destination cannot be searched for the retriever's store keys, so it keeps a small
journal beside the account's state: the keys it confirmed since the engine last saved its
state, and, for IMAP, an *intent* written before each APPEND (the message's SHA-256, size,
Message-ID and the folder's UIDNEXT at that time). A run killed after the server's OK but
before the state was written leaves the intent behind; the next run looks for the message in
the folder (UID SEARCH from that UIDNEXT on, by Message-ID, else by size, then the SHA-256 of
each candidate's BODY.PEEK[]) and counts it as stored if it is there, byte for byte. No header
is added and no byte is rewritten. LMTP and MDA cannot be asked: a run killed between their
confirmation and the journal write (one message) delivers that message again.

imapclient is imported only when an IMAP destination is opened: it is the ``fastpoplib[imap]``
extra, and ``import fastpoplib`` does not need it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shlex
import smtplib
import ssl
import subprocess
import tempfile
import threading
import time
from datetime import datetime, timezone
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Callable, Optional
from urllib.parse import unquote, urlsplit

from ._store import Outcome, Receipt, Refusal, StoreError, make_dirs, write_atomic

log = logging.getLogger("fastpoplib.retriever")

BATCH_MESSAGES = 50  # messages per MULTIAPPEND (and per journal write of intents)
BATCH_BYTES = 8 << 20  # bytes per MULTIAPPEND: what a batch may hold in memory
IDLE_CHECK = 60.0  # seconds unused after which a connection is checked (NOOP) before it is used again
EX_TEMPFAIL = 75  # sysexits.h: "temporary failure, try again later"
MDA_KEEP_ENV = ("PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR")
IMAP_EXTRA = "the IMAP destination needs imapclient: pip install 'fastpoplib[imap]'"


class DestinationError(StoreError):
    """The destination could not be opened. ``kind`` says why, for the exit code: ``usage``
    (a bad URL, a missing extra), ``auth`` (login refused) or ``connection``."""

    def __init__(self, message: str, kind: str = "connection") -> None:
        super().__init__(message)
        self.kind = kind


def state_home() -> Path:
    """Where destinations without a directory of their own keep the retriever's state and
    locks: ``$XDG_STATE_HOME/fastpoplib``, by default ``~/.local/state/fastpoplib``."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "fastpoplib"


def _state_dir(kind: str, identity: str) -> Path:
    return state_home() / kind / hashlib.sha256(identity.encode("utf-8")).hexdigest()[:16]


class Journal:
    """The destination's own record (see the module docstring): ``stored`` maps the keys it
    confirmed since the engine's last state save to what the destination said; ``intents``
    holds the IMAP messages whose APPEND was sent and whose outcome is not known yet. Saved
    atomically; a damaged file counts as empty (its messages may then be delivered again)."""

    def __init__(self, path: Path, read: bool = True) -> None:
        self.path = path
        self.stored: dict[str, str] = {}
        self.intents: dict[str, dict[str, Any]] = {}
        if not read:
            return
        try:
            data = json.loads(path.read_bytes())
            self.stored = {str(k): str(v) for k, v in data["stored"].items()}
            self.intents = {str(k): dict(v) for k, v in data["intents"].items()}
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            log.warning("the destination journal %s was damaged; ignoring it", path)

    def save(self) -> None:
        make_dirs(self.path.parent)
        write_atomic(self.path, json.dumps({"stored": self.stored, "intents": self.intents}).encode("utf-8"))


class _Spool:
    """A message on its way to a network destination: held in memory (an APPEND literal, LMTP
    DATA and an MDA's standard input all take it whole), handed over on commit."""

    def __init__(self, settle: Callable[[str, bytes], list[Outcome]], lock: threading.RLock) -> None:
        self.settle, self.lock = settle, lock
        self.chunks: list[bytes] | None = []
        self.committed = False

    def write(self, chunk: bytes) -> None:
        if self.chunks is None:
            raise StoreError("the delivery was aborted")
        self.chunks.append(chunk)

    def commit(self, key: str) -> list[Outcome]:
        if self.chunks is None:
            raise StoreError("the delivery was aborted")
        data, self.chunks = b"".join(self.chunks), None
        outcomes = self.settle(key, data)
        self.committed = any(isinstance(o, Receipt) and o.key == key for o in outcomes)
        return outcomes

    def abort(self) -> None:
        # Waits for a delivery in progress (the destination's lock), as a file store's abort does.
        with self.lock:
            self.chunks = None


class _Remote:
    """What the network destinations share: the journal, one lock around every conversation
    with the destination (the engine's worker threads and an interrupted run's abort), and the
    receipts of the journal as the answer to "do you hold it"."""

    def __init__(self, path: str, state_dir: Path, account: str) -> None:
        self.path = path
        self.state_dir = state_dir
        self.cancelled = threading.Event()
        self.lock = threading.RLock()
        # Read by stored_keys(), once the engine holds the account's lock.
        self.journal = Journal(state_dir / (hashlib.sha256(account.encode("utf-8")).hexdigest()[:16] + ".journal.json"), read=False)

    def begin(self) -> _Spool:
        return _Spool(self._settle, self.lock)

    def _settle(self, key: str, data: bytes) -> list[Outcome]:
        with self.lock:
            return self._confirm(self.deliver(key, data))

    def _confirm(self, outcomes: list[Outcome]) -> list[Outcome]:
        """Journal the receipts before the engine sees them."""
        confirmed = {o.key: o.detail for o in outcomes if isinstance(o, Receipt)}
        if confirmed:
            self.journal.stored.update(confirmed)
            self.journal.save()
        return outcomes

    def deliver(self, key: str, data: bytes) -> list[Outcome]:
        raise NotImplementedError

    def stored_keys(self) -> set[str]:
        with self.lock:
            self.journal = Journal(self.journal.path)
            return set(self.journal.stored)

    def flush(self) -> list[Outcome]:
        return []

    def recorded(self) -> None:
        with self.lock:
            if self.journal.stored:
                self.journal.stored = {}
                self.journal.save()

    def close(self) -> None:
        pass


# --- IMAP ------------------------------------------------------------------------------------


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


def _header_fields(data: bytes) -> Any:
    end = data.find(b"\r\n\r\n")
    return BytesHeaderParser(policy=compat32).parsebytes(data[: end + 2] if end >= 0 else data)


def internal_date(data: bytes) -> datetime | None:
    """When the message arrived, for APPEND's INTERNALDATE: the date of its first (topmost)
    Received header, else its Date header; None if neither parses (the server then uses
    its own clock). A date without a zone counts as UTC."""
    headers = _header_fields(data)
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
    value = _header_fields(data)["Message-ID"]
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


class ImapDestination(_Remote):
    """APPEND to one folder of an IMAP server; see the module docstring for how a run killed
    in the middle of an APPEND is repaired.

    ``secret()`` gives ``{"password": ...}`` or ``{"oauth2_token": ...}`` (OAUTHBEARER or
    XOAUTH2, whichever the server offers); it is asked once connected. ``timeout`` (seconds) bounds every network operation.
    Raises :class:`DestinationError` when the server cannot be reached or refuses the login.
    """

    def __init__(
        self,
        url: ImapURL,
        secret: Callable[[], dict[str, str]],
        account: str,
        *,
        cafile: str | None = None,
        insecure: bool = False,
        timeout: float = 60.0,
    ) -> None:
        super().__init__(str(url), _state_dir("imap", str(url)), account)
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

    def _connect(self, secret: Callable[[], dict[str, str]], cafile: str | None, insecure: bool, timeout: float) -> Any:
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

    def _login(self, client: Any, secret: dict[str, str]) -> None:
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
                outcomes += [Refusal(k, outcome.reason, stop=True) for k, _ in batch[i + 1 :]]
                for k, _ in batch[i + 1 :]:
                    del self.journal.intents[k]  # never sent
                break
        return outcomes

    def _multiappend(self, batch: list[tuple[str, bytes]]) -> list[Outcome]:
        messages = []
        for _, data in batch:
            when = internal_date(data)
            messages.append({"msg": data, "date": when} if when else {"msg": data})
        try:
            typ, response = self.client.multiappend(self.folder, messages)
        except (OSError, self._errors.IMAPClientError) as exc:
            return self._lost(batch, exc)
        self.used = time.monotonic()
        text = _response_text(response)
        if typ != "OK":
            # RFC 3502: a refused MULTIAPPEND appends none of its messages.
            for key, _ in batch:
                del self.journal.intents[key]
            reason, stop = self._refusal(typ, text)
            return [Refusal(key, reason, stop) for key, _ in batch]
        return self._receipts([key for key, _ in batch], text)

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
            reason, stop = self._refusal("NO", str(exc).split("failed: ", 1)[-1].encode())
            return Refusal(key, reason, stop)
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
        log.debug("appended %d message(s) to %s: %s", len(keys), self.path, "; ".join(details))
        return [Receipt(key, detail) for key, detail in zip(keys, details)]

    def _refusal(self, typ: str, text: bytes) -> tuple[str, bool]:
        """The sentence for a refused APPEND, and whether to stop the run's deliveries (the
        response codes of RFC 5530 that no other message would get past)."""
        shown = text.decode("utf-8", "backslashreplace")
        code = _CODE.match(text)
        name = code.group(1).decode().upper() if code else ""
        said = f"the IMAP server refused APPEND: {typ} {shown}"
        if name == "OVERQUOTA":
            return f"{said} (the IMAP mailbox is full); it stays on the POP server, free some space and run again", True
        if name == "TRYCREATE":
            return f"{said} (the folder {self.folder!r} is gone); it stays on the POP server, run again to create it", True
        return f"{said}; it stays on the POP server", name in ("SERVERBUG", "UNAVAILABLE", "INUSE")

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
    text = str(exc) or type(exc).__name__
    return text.strip()


# --- LMTP ------------------------------------------------------------------------------------


class LmtpDestination(_Remote):
    """Delivery over LMTP (RFC 2033) to one recipient: stored on that recipient's 250 after
    DATA; a 4xx keeps the message for a later run (and stops this run's deliveries), a 5xx
    is a failed message. ``target`` is ``HOST:PORT`` or ``unix:PATH``."""

    def __init__(self, target: str, recipient: str, account: str, *, timeout: float = 60.0) -> None:
        super().__init__(f"lmtp {target} for {recipient}", _state_dir("lmtp", f"{target} {recipient}"), account)
        self.target, self.recipient, self.timeout = target, recipient, timeout
        self.address = parse_lmtp_target(target)
        self.smtp: smtplib.LMTP | None = self._open()
        self.used = time.monotonic()

    def _open(self) -> smtplib.LMTP:
        host, port = self.address
        try:
            smtp = smtplib.LMTP(host, port or 0, timeout=self.timeout)
            smtp.ehlo_or_helo_if_needed()
        except (OSError, smtplib.SMTPException) as exc:
            raise DestinationError(f"the LMTP server {self.target} cannot be reached: {_smtp_text(exc)}") from None
        return smtp

    def _alive(self) -> smtplib.LMTP:
        """The connection, checked with NOOP after IDLE_CHECK seconds unused (LMTP servers
        drop idle clients), opened again if it is gone."""
        if self.smtp is not None and time.monotonic() - self.used >= IDLE_CHECK:
            try:
                if self.smtp.noop()[0] != 250:
                    self._drop()
            except (OSError, smtplib.SMTPException):
                self._drop()
        if self.smtp is None:
            self.smtp = self._open()
        return self.smtp

    def deliver(self, key: str, data: bytes) -> list[Outcome]:
        try:
            smtp = self._alive()
        except DestinationError as exc:
            return [Refusal(key, f"{exc}; it stays on the POP server", stop=True)]
        self.used = time.monotonic()
        try:
            smtp.sendmail(_sender(data), [self.recipient], data)
        except smtplib.SMTPRecipientsRefused as exc:
            code, text = exc.recipients.get(self.recipient, (0, b""))
            return [self._refused(key, "RCPT TO", code, text)]
        except smtplib.SMTPResponseException as exc:  # MAIL FROM refused, or the reply after DATA
            return [self._refused(key, "the message", exc.smtp_code, exc.smtp_error)]
        except (OSError, smtplib.SMTPException) as exc:
            self._drop()
            return [
                Refusal(
                    key,
                    f"the connection to the LMTP server {self.target} was lost ({_smtp_text(exc)}); it stays on the POP server",
                    stop=True,
                )
            ]
        return [Receipt(key, f"LMTP 250 for {self.recipient}")]

    def _refused(self, key: str, what: str, code: int, text: Any) -> Refusal:
        said = f"{code} {_smtp_text(text)}"
        if 400 <= code < 500:
            return Refusal(key, f"the LMTP server answered {said} to {what} for now; it stays on the POP server, the next run tries again", stop=True)
        return Refusal(key, f"the LMTP server refused {what}: {said}; it stays on the POP server")

    def _drop(self) -> None:
        smtp, self.smtp = self.smtp, None
        if smtp is not None:
            smtp.close()

    def close(self) -> None:
        with self.lock:
            if self.smtp is not None:
                try:
                    self.smtp.quit()
                except (OSError, smtplib.SMTPException):
                    pass
                self._drop()


def parse_lmtp_target(target: str) -> tuple[str, Optional[int]]:
    """``HOST:PORT`` (``[v6]:PORT`` too) → (host, port); ``unix:PATH`` → (PATH, None), the
    form smtplib.LMTP takes for a Unix socket. Raises DestinationError for anything else."""
    if target.startswith("unix:"):
        path = target[5:]
        if not path.startswith("/"):
            raise DestinationError(f"--lmtp unix:PATH needs an absolute path, not {path!r}", "usage")
        return path, None
    host, sep, port = target.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise DestinationError(f"--lmtp must be HOST:PORT or unix:PATH, not {target!r}", "usage")
    return host, int(port)


def _sender(data: bytes) -> str:
    """The envelope sender for MAIL FROM: the message's Return-Path, else the null sender."""
    value = _header_fields(data)["Return-Path"]
    text = str(value).strip() if value is not None else ""
    address = text[1:-1] if text.startswith("<") and text.endswith(">") else text
    return address if address.isascii() and " " not in address and "\n" not in address else ""


def _smtp_text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if isinstance(value, smtplib.SMTPResponseException):
        return f"{value.smtp_code} {_smtp_text(value.smtp_error)}"
    return str(value) or type(value).__name__


# --- MDA -------------------------------------------------------------------------------------


class MdaDestination(_Remote):
    """Delivery by a program (procmail, maildrop, dovecot-lda...): the message on its standard
    input, stored on exit status 0; 75 (EX_TEMPFAIL) keeps it for a later run and stops this
    run's deliveries; anything else is a failed message, kept on the server. The command is
    split as a shell would (no shell runs it) and gets only a minimal environment
    (``MDA_KEEP_ENV``): no password the retriever was given reaches it. Killed after
    ``timeout`` seconds (kept for a later run)."""

    def __init__(self, command: str, account: str, *, timeout: float = 60.0) -> None:
        super().__init__(f"mda {command}", _state_dir("mda", command), account)
        try:
            self.argv = shlex.split(command)
        except ValueError as exc:
            raise DestinationError(f"the --mda command cannot be parsed: {exc}", "usage") from None
        if not self.argv:
            raise DestinationError("the --mda command is empty", "usage")
        self.timeout = timeout
        self.env = {k: v for k, v in os.environ.items() if k in MDA_KEEP_ENV}

    def deliver(self, key: str, data: bytes) -> list[Outcome]:
        with tempfile.TemporaryFile() as errors:
            try:
                done = subprocess.run(self.argv, input=data, stdout=subprocess.DEVNULL, stderr=errors, env=self.env, timeout=self.timeout, check=False)
            except subprocess.TimeoutExpired:
                return [Refusal(key, f"the MDA did not finish within {self.timeout:g} s and was killed; it stays on the POP server", stop=True)]
            except OSError as exc:
                return [Refusal(key, f"the MDA could not be run ({exc.strerror or exc}); check --mda", stop=True)]
            errors.seek(0)
            said = errors.read(300).decode("utf-8", "backslashreplace").strip().splitlines()
        detail = f" ({said[0]})" if said else ""
        if done.returncode == 0:
            return [Receipt(key, "MDA exit 0")]
        if done.returncode == EX_TEMPFAIL:
            return [Refusal(key, f"the MDA asked to try again later (exit 75){detail}; it stays on the POP server, the next run tries again", stop=True)]
        status = f"exit status {done.returncode}" if done.returncode > 0 else f"signal {-done.returncode}"
        return [Refusal(key, f"the MDA failed ({status}){detail}; it stays on the POP server")]


__all__ = [
    "BATCH_MESSAGES",
    "DestinationError",
    "ImapDestination",
    "ImapURL",
    "Journal",
    "LmtpDestination",
    "MdaDestination",
    "internal_date",
    "parse_lmtp_target",
    "state_home",
]
