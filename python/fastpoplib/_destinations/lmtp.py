"""The LMTP destination (RFC 2033) through ``smtplib.LMTP``: one recipient, stored on its 250."""

from __future__ import annotations

import re
import smtplib
import socket
import time
from pathlib import Path
from typing import Any, Optional

from .._store import Outcome, Receipt, Refusal
from .remote import IDLE_CHECK, DestinationError, Remote, header_fields, state_dir_for


def lmtp_state_dir(target: str, recipient: str) -> Path:
    """Where the state of accounts delivering to this recipient lives (nothing is opened)."""
    return state_dir_for("lmtp", f"{target} {recipient}")


class LmtpDestination(Remote):
    """Delivery over LMTP (RFC 2033) to one recipient: stored on that recipient's 250 after
    DATA; a 4xx keeps the message for a later run, a 5xx is a failed message. A 5xx that
    refuses the recipient itself (to RCPT TO, or after DATA with an enhanced status code of
    RFC 3463 X.1.x, X.2.0-2: unknown, disabled, full) refuses every message: the run stores
    no more, and ``watch`` pauses the account. ``target`` is ``HOST:PORT`` or ``unix:PATH``."""

    def __init__(self, target: str, recipient: str, account: str, *, timeout: float = 60.0) -> None:
        super().__init__(f"lmtp {target} for {recipient}", lmtp_state_dir(target, recipient), account)
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
            return [self._refused(key, "RCPT TO", code, text, recipient=True)]
        except smtplib.SMTPDataError as exc:  # the recipient's reply after DATA
            recipient = bool(_RECIPIENT_STATUS.match(_smtp_text(exc.smtp_error)))
            return [self._refused(key, "the message", exc.smtp_code, exc.smtp_error, recipient)]
        except smtplib.SMTPResponseException as exc:  # MAIL FROM refused: this message's sender
            return [self._refused(key, "the message", exc.smtp_code, exc.smtp_error)]
        except (OSError, smtplib.SMTPException) as exc:
            self._drop()
            if isinstance(exc, socket.timeout) or isinstance(exc.__context__, socket.timeout):
                # This message only (a server stalled on it): the next one opens a new connection.
                return [Refusal(key, f"the LMTP server {self.target} did not answer within {self.timeout:g} s; it stays on the POP server")]
            return [
                Refusal(
                    key,
                    f"the connection to the LMTP server {self.target} was lost ({_smtp_text(exc)}); it stays on the POP server",
                    stop=True,
                )
            ]
        return [Receipt(key, f"LMTP 250 for {self.recipient}")]

    def _refused(self, key: str, what: str, code: int, text: Any, recipient: bool = False) -> Refusal:
        said = f"{code} {_smtp_text(text)}"
        if 400 <= code < 500:
            # Temporary, maybe for this message only: the others are still tried.
            return Refusal(key, f"the LMTP server answered {said} to {what} (a temporary failure); it stays on the POP server")
        if recipient and code >= 500:
            return Refusal(
                key,
                f"the LMTP server refused the recipient {self.recipient}: {said}; it stays on the POP server,"
                " check --lmtp-recipient (and its mailbox) and run again",
                stop=True,
                pause=True,
            )
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


# RFC 3463 enhanced status codes about the recipient, not the message: X.1.x addressing,
# X.2.0 mailbox, X.2.1 disabled, X.2.2 full (X.2.3 "too long" is the message's).
_RECIPIENT_STATUS = re.compile(r"5\.(1\.[0-9]{1,3}|2\.[012])\b")


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
    value = header_fields(data)["Return-Path"]
    text = str(value).strip() if value is not None else ""
    address = text[1:-1] if text.startswith("<") and text.endswith(">") else text
    return address if address.isascii() and " " not in address and "\n" not in address else ""


def _smtp_text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if isinstance(value, smtplib.SMTPResponseException):
        return f"{value.smtp_code} {_smtp_text(value.smtp_error)}"
    return str(value) or type(value).__name__
