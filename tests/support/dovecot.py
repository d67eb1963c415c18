"""Dovecot fixtures for the interoperability suite (``tests/interop/test_dovecot_interop.py``).

``dovecot_server`` (session scope) is a private, unprivileged Dovecot 2.3 on loopback high ports,
built on the shipped harness :mod:`fastpoplib.testing.dovecot`: plaintext + STLS on
``plain_port``, implicit TLS on ``tls_port``, a trustme certificate (trust ``cafile``, or use
``ssl_context()``), every user's password :data:`PASSWORD`. Its mailboxes are generated once per
session, deterministically:

    basic   20 ordinary messages (``fastpoplib.testing.sample_mailbox``)
    edge    dot-stuffed lines, 8-bit and invalid UTF-8, a 998-byte and a 100 kB line, no final
            newline, a message stored with bare LF line ends
    big     3 messages of about 5 MB
    many    3000 small messages

``users[name]`` holds each user's messages as stored. ``fresh_user`` (function scope) adds a
user with 5 messages for a test that deletes. ``dovecot_strict`` (session scope) is a second
instance on 127.0.0.2 that refuses plaintext authentication before STLS; it has a ``basic`` user.

Without Dovecot (or without root, which the harness needs to hand the mail to ``nobody``) the
tests are skipped, except in CI (``CI=true``), where a skip would hide a broken setup: they fail.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional

import pytest

from fastpoplib.testing import sample_mailbox
from fastpoplib.testing.dovecot import MAIL_UID, PASSWORD, Dovecot, installed

__all__ = ["PASSWORD", "InteropDovecot", "add_users", "dovecot_mail", "dovecot_server", "dovecot_strict", "fresh_user", "edge_messages"]

# Appended to the harness's config (Dovecot keeps the last value of a repeated setting).
COMMON_SETTINGS = """
# RETR must not rename the files to set \\Seen: the mailboxes stay as generated.
pop3_no_flag_updates = yes
"""
# A client on 127.0.0.1 talking to 127.0.0.2 is neither local (its IP differs from the server's)
# nor trusted, so Dovecot treats the connection as insecure until STLS.
STRICT_SETTINGS = COMMON_SETTINGS + "listen = 127.0.0.2\ndisable_plaintext_auth = yes\n"


class InteropDovecot(Dovecot):
    """The shipped harness, configured for the interop suite and knowing its users' messages."""

    password = PASSWORD

    def __init__(self, root: Path, *, strict: bool = False, protocols: Iterable[str] = ("pop3",)) -> None:
        super().__init__(root, protocols)
        self.users: Dict[str, List[bytes]] = {}
        if strict:
            self.host = "127.0.0.2"
            leaf = self._ca.issue_cert(self.host, "localhost")
            leaf.private_key_pem.write_to_path(str(self.root / "key.pem"))
            leaf.cert_chain_pems[0].write_to_path(str(self.root / "cert.pem"))
        with open(self.conf, "a") as conf:
            conf.write(STRICT_SETTINGS if strict else COMMON_SETTINGS)

    def add_user(self, name: str, messages: Iterable[bytes], quota: Optional[str] = None) -> List[bytes]:
        """Creates ``name`` with these messages, stored byte for byte (the harness would turn
        bare LF into CRLF; Maildir allows LF and Dovecot converts it on the wire), and an
        optional storage ``quota`` ("100K"). Returns them."""
        maildir = self.root / "mail" / name / "Maildir"
        for sub in ("cur", "new", "tmp"):
            (maildir / sub).mkdir(parents=True, exist_ok=True)
        stored = list(messages)
        for i, data in enumerate(stored):
            # S= is the file's size, W= its size with CRLF line ends: what LIST reports, read
            # from the name instead of the file. Names sort in message order (Dovecot's UIDs).
            wire_size = len(data) + data.count(b"\n") - data.count(b"\r\n")
            (maildir / "cur" / f"{1700000000 + i}.M{i}P1.fastpoplib,S={len(data)},W={wire_size}:2,").write_bytes(data)
        home = maildir.parent
        for path in [home, *home.rglob("*")]:
            os.chown(path, MAIL_UID, MAIL_UID)
        self._add_passwd(name, home, quota)
        self.users[name] = stored
        return stored

    def log_mark(self) -> int:
        """Where the log ends now, for :meth:`wait_for_log`."""
        return len(self.log())

    def wait_for_log(self, needle: str, since: int = 0, timeout: float = 5.0) -> str:
        """The log after ``since`` once it contains ``needle``: Dovecot's log process writes
        a little after the event. Fails after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.log()[since:]
            if needle in text:
                return text
            if time.monotonic() > deadline:
                pytest.fail(f"{needle!r} not in Dovecot's log within {timeout} s:\n{text}")
            time.sleep(0.05)

    def stop(self) -> None:
        super().stop()
        pid_file = self.root / "run" / "master.pid"
        if pid_file.exists():  # doveadm could not stop it: do not leave a server behind
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid_file.read_text()), signal.SIGKILL)


def edge_messages() -> List[bytes]:
    """The ``edge`` mailbox: cases where POP3 framing, line limits or encodings bite."""
    head = b"From: edge@example.com\r\nSubject: %s\r\n\r\n"
    return [
        head % b"dots" + b".\r\n..\r\n...\r\n.leading\r\n .notleading\r\nend\r\n",
        head % b"8-bit" + "Grüße — ünïcödé ✓ 😀\r\n".encode() + b"\x80\xfe not utf-8 \xff\r\n",
        head % b"998" + b"x" * 998 + b"\r\n",
        head % b"100k" + b"y" * 100_000 + b"\r\n",
        head % b"no final newline" + b"last line",
        b"From: lf@example.com\nSubject: bare LF\n\nline1\nline2\n.dot\nlast\n",
    ]


def big_messages() -> List[bytes]:
    """Three messages of 65,002 lines, about 5 MB each."""
    return [b"Subject: big %d\r\n\r\n" % i + (b"z" * 76 + b"\r\n") * 65_000 for i in range(3)]


def many_messages() -> List[bytes]:
    return [b"Subject: n%d\r\n\r\nbody %d\r\n" % (i, i) for i in range(3000)]


def _require_dovecot() -> None:
    if installed() and os.geteuid() == 0:
        return
    if os.environ.get("CI") == "true":
        pytest.fail("Dovecot tests cannot run in CI: they need root and Dovecot (.ci/install-dovecot.sh)")
    pytest.skip("Dovecot is not installed (run .ci/install-dovecot.sh) or not running as root")


@contextlib.contextmanager
def _instance(*, strict: bool, protocols: Iterable[str] = ("pop3",)) -> Iterator[InteropDovecot]:
    """An instance in a directory of its own, removed afterwards. Not under pytest's tmp_path:
    Dovecot's unprivileged processes must be able to reach the files."""
    _require_dovecot()
    root = tempfile.mkdtemp(prefix="fastpoplib-dovecot-")
    try:
        yield InteropDovecot(Path(root), strict=strict, protocols=protocols)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def dovecot_server() -> Iterator[InteropDovecot]:
    with _instance(strict=False) as dove:
        dove.add_user("basic", sample_mailbox(20).messages)
        dove.add_user("edge", edge_messages())
        dove.add_user("big", big_messages())
        dove.add_user("many", many_messages())
        with dove:
            yield dove


@pytest.fixture(scope="session")
def dovecot_strict() -> Iterator[InteropDovecot]:
    with _instance(strict=True) as dove:
        dove.add_user("basic", sample_mailbox(20).messages)
        with dove:
            yield dove


@pytest.fixture(scope="session")
def dovecot_mail() -> Iterator[InteropDovecot]:
    """POP3, IMAP (``imap_port`` with STARTTLS, ``imaps_port``) and LMTP (``lmtp_port``) with
    the quota plugin: the retriever's source and destinations. Users: :func:`add_users`."""
    with _instance(strict=False, protocols=("pop3", "imap", "lmtp")) as dove:
        with open(dove.conf, "a") as conf:  # Dovecot 2.3 checks an OAuth2 token as the password
            conf.write("auth_mechanisms = plain login cram-md5 scram-sha-1 scram-sha-256 apop oauthbearer xoauth2\n")
            conf.write("plugin {\n  quota_max_mail_size = 1M\n}\n")  # a larger message: NO [LIMIT]
        with dove:
            yield dove


_fresh_ids = itertools.count()


def add_users(dove: InteropDovecot, **mailboxes: List[bytes]) -> Dict[str, str]:
    """Adds a user per keyword (its messages; a ``quota_NAME`` keyword's list is ignored and
    NAME gets a 20 KB quota), with names unique in the session: returns keyword -> user name."""
    names = {}
    for key, messages in mailboxes.items():
        name = f"{key}{next(_fresh_ids)}"
        dove.add_user(name, messages, quota="20K" if key.startswith("quota_") else None)
        names[key] = name
    time.sleep(1.01 - time.time() % 1.0)  # see fresh_user
    return names


@pytest.fixture
def fresh_user(dovecot_server: InteropDovecot) -> str:
    """A new user with 5 messages, for a test that deletes."""
    name = f"fresh{next(_fresh_ids)}"
    dovecot_server.add_user(name, sample_mailbox(5, seed=7).messages)
    # Dovecot stats users.passwd at most once per wall-clock second and serves its cached copy
    # in between; a lookup in a later second than this write is sure to see the new user.
    time.sleep(1.01 - time.time() % 1.0)
    return name
