"""Destinations at their edges, against Dovecot: the IMAP destination's OAuth2
login refused early (the token expired or was revoked at the server before its announced
expiry) is retried once with a refreshed token, as the POP3 login does; a destination that
refuses every message (an unknown LMTP recipient, a full IMAP mailbox) stops the run and
pauses the account in ``watch`` instead of being retried each interval."""

from __future__ import annotations

import json
import os
import signal
import socketserver
import subprocess
import sys
import tempfile
import textwrap
import threading
import types
from pathlib import Path
from typing import Any, Iterator

import pytest
from support.dovecot import PASSWORD, InteropDovecot, _require_dovecot, add_users
from fastpoplib.testing import POP3TestServer
from fastpoplib.testing.dovecot import Dovecot
from test_destinations_imap import bodies, four_kb
from support.cli import no_traceback, wait_for

pytestmark = pytest.mark.timeout(180)


def run(*args: str, env: dict[str, str], timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fastpoplib", *args], capture_output=True, text=True, env=env, timeout=timeout, check=False)


# -- 7. IMAP with OAuth2: a token refused early is replaced once -------------------------------

oauth_server = pytest.importorskip("fastpoplib.testing.oauth_server", reason="the oauth and testing extras")


@pytest.fixture(scope="module")
def oauth() -> Iterator[Any]:
    with oauth_server.OAuth2TestServer() as srv:
        srv.add_client("mail-client")
        yield srv


@pytest.fixture(scope="module")
def dove(oauth: Any) -> Iterator[Dovecot]:
    """Dovecot checking every XOAUTH2/OAUTHBEARER token at the test server (RFC 7662)."""
    _require_dovecot()
    root = tempfile.mkdtemp(prefix="fastpoplib-dovecot-edges-")
    client, secret = oauth_server.INTROSPECTION_CLIENT
    server = Dovecot(Path(root), protocols=("pop3", "imap"), oauth2_introspection_url=f"http://{client}:{secret}@127.0.0.1:{oauth.port}/introspect")
    for i in range(4):  # every user before the start (Dovecot rereads its passwd-file by mtime)
        server.add_user(f"edge{i}", [b"Subject: m%d\r\n\r\nbody %d\r\n" % (n, n) for n in range(3)])
    with server:
        yield server
    subprocess.run(["rm", "-rf", root], check=False)


def signed_in(tmp_path: Path, oauth: Any, user: str) -> None:
    """What ``auth login`` stores (approved at once), with an access token valid for an hour."""
    from fastpoplib.oauth2 import TokenStore, _grants, record_from, settings_for

    keys = ["oauth2_client_secret", "oauth2_tenant", "oauth2_token_endpoint", "oauth2_device_endpoint", "oauth2_authorization_endpoint"]
    acct = types.SimpleNamespace(
        name="work", oauth2_provider="custom", oauth2_client_id="mail-client", oauth2_scope="mail", oauth2_issuer=oauth.issuer, **dict.fromkeys(keys)
    )
    settings = _grants.discover(settings_for(acct))
    response = _grants.device_login(settings, lambda text: oauth.approve(text.rsplit(" ", 1)[1], user=user), sleep=lambda s: None)
    TokenStore(tmp_path / "state" / "fastpoplib" / "oauth2", backend="file").save("work", record_from(settings, response))


def imap_oauth2_config(tmp_path: Path, oauth: Any, dove: Dovecot, user: str, imap_user: str = "") -> Path:
    path = tmp_path / "fetch.toml"
    path.write_text(
        textwrap.dedent(
            f"""\
            [[account]]
            name = "work"
            host = "{dove.host}"
            port = {dove.tls_port}
            user = "{user}"
            tls = "implicit"
            cafile = "{dove.cafile}"
            auth = "oauth2"
            oauth2_provider = "custom"
            oauth2_client_id = "mail-client"
            oauth2_scope = "mail"
            oauth2_issuer = "{oauth.issuer}"
            imap = "imaps://{imap_user or user}@{dove.host}:{dove.imaps_port}/Fetched"
            imap_auth = "oauth2"
            imap_cafile = "{dove.cafile}"
            """
        )
    )
    return path


def appended(dove: Dovecot, user: str) -> int:
    folder = dove.root / "mail" / user / "Maildir" / ".Fetched"
    return sum(1 for sub in ("new", "cur") if (folder / sub).exists() for _ in (folder / sub).iterdir())


def oauth_env(tmp_path: Path) -> dict[str, str]:
    return dict(os.environ, XDG_STATE_HOME=str(tmp_path / "state"), FASTPOPLIB_TOKEN_STORE="file")


def test_imap_oauth2_token_expired_early_at_the_server_is_refreshed_and_the_login_retried_once(oauth: Any, dove: Dovecot, tmp_path: Path) -> None:
    oauth.refresh_count = 0
    signed_in(tmp_path, oauth, "edge0")
    oauth.expire_access_tokens()  # the server no longer takes it; the store says an hour is left
    result = run("-v", "fetch", "--config", str(imap_oauth2_config(tmp_path, oauth, dove, "edge0")), env=oauth_env(tmp_path))
    assert result.returncode == 0, result.stderr
    assert appended(dove, "edge0") == 3
    assert "the IMAP server 127.0.0.1 refused the OAuth2 token; trying once more with a new one" in result.stderr
    assert oauth.refresh_count == 1  # the IMAP retry refreshed; POP3 then used that token
    for token in oauth.issued_tokens():
        assert token not in result.stdout + result.stderr


def test_imap_oauth2_grant_revoked_at_the_server_says_sign_in_again(oauth: Any, dove: Dovecot, tmp_path: Path) -> None:
    signed_in(tmp_path, oauth, "edge1")
    oauth.revoke_all("edge1")  # the user withdrew consent: the access and the refresh token are dead
    result = run("fetch", "--delete", "--config", str(imap_oauth2_config(tmp_path, oauth, dove, "edge1")), env=oauth_env(tmp_path))
    assert result.returncode == 3, result.stderr
    assert "sign in again: fastpoplib auth login --account work" in result.stderr
    no_traceback(result.stdout, result.stderr)
    assert appended(dove, "edge1") == 0
    assert len(list((dove.root / "mail" / "edge1" / "Maildir" / "cur").iterdir())) + len(
        list((dove.root / "mail" / "edge1" / "Maildir" / "new").iterdir())
    ) == 3  # nothing deleted on the source


def test_imap_oauth2_token_refused_again_after_the_refresh_is_not_retried_in_a_loop(oauth: Any, dove: Dovecot, tmp_path: Path) -> None:
    """The token is another user's (a wrong IMAP user name): one refresh, one more login, then
    the IMAP server's words."""
    oauth.refresh_count = 0
    signed_in(tmp_path, oauth, "edge2")
    result = run("fetch", "--config", str(imap_oauth2_config(tmp_path, oauth, dove, "edge2", imap_user="edge3")), env=oauth_env(tmp_path))
    assert result.returncode == 3, result.stderr
    assert "the IMAP server 127.0.0.1 refused the login of edge3: [AUTHENTICATIONFAILED]" in result.stderr
    assert oauth.refresh_count == 1
    # Dovecot logs each IMAP connection's login attempts when it closes (just after the run).
    wait_for(lambda: any("imap-login" in line and "user=<edge3>" in line for line in dove.log().splitlines()), "Dovecot's log line")
    [line] = [line for line in dove.log().splitlines() if "imap-login" in line and "user=<edge3>" in line]
    assert "(auth failed, 2 attempts in" in line, line


# -- 8. a destination refusing every message pauses the account in watch ---------------------


def pop_entry(name: str, srv: POP3TestServer, **dest: Any) -> str:
    lines = [
        "[[account]]",
        f"name = '{name}'",
        f"host = '{srv.host}'",
        f"port = {srv.port}",
        "user = 'user'",
        "tls = 'none'",
        "insecure = true",
        "password_env = 'POP_PW'",
        "interval = 0.1",
    ]
    return "\n".join(lines + [f"{k} = {json.dumps(v)}" for k, v in dest.items()]) + "\n"


def statuses(config: Path, env: dict[str, str]) -> dict[str, dict[str, Any]]:
    out = run("status", "--config", str(config), "--json", env=env, timeout=30)
    assert out.returncode == 0, out.stderr
    return {row["account"]: row for row in json.loads(out.stdout)}


def test_watch_pauses_an_account_whose_destination_refuses_every_message(dovecot_mail: InteropDovecot, tmp_path: Path) -> None:
    """An unknown LMTP recipient (550 5.1.1 to RCPT TO) and a full IMAP mailbox (NO
    [OVERQUOTA]): each account is polled once, its first refusal stops the run (the rest are
    not tried), the server's words are logged and shown by status, and watch polls it no
    more while a healthy account goes on being polled."""
    users = add_users(dovecot_mail, quota_dest=[])
    env = dict(os.environ, POP_PW="password", IMAP_PW=PASSWORD, XDG_STATE_HOME=str(tmp_path / "state"))
    lmtp = f"{dovecot_mail.host}:{dovecot_mail.lmtp_port}"
    imap = f"imaps://{users['quota_dest']}@{dovecot_mail.host}:{dovecot_mail.imaps_port}/INBOX"
    with (
        POP3TestServer(four_kb(3, "gone"), stls=False) as gone,
        POP3TestServer(four_kb(10, "full"), stls=False) as full,
        POP3TestServer(four_kb(1, "ok"), stls=False) as healthy,
    ):
        config = tmp_path / "accounts.toml"
        config.write_text(
            "\n".join(
                [
                    pop_entry("gone", gone, lmtp=lmtp, lmtp_recipient="nobody-here", delete=True),
                    pop_entry("full", full, imap=imap, imap_password_env="IMAP_PW", imap_cafile=dovecot_mail.cafile, delete=True),
                    pop_entry("ok", healthy, maildir=str(tmp_path / "ok")),
                ]
            )
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "fastpoplib", "watch", "--config", str(config)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        try:
            wait_for(lambda: all(statuses(config, env).get(n, {}).get("paused") for n in ("gone", "full")), "both accounts paused", deadline=60)
            wait_for(lambda: len(healthy.sessions) >= 10, "10 polls of the healthy account", deadline=60)
            assert len(gone.sessions) == 1 and len(full.sessions) == 1, "a paused account was polled again"
            rows = statuses(config, env)
        finally:
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        no_traceback(out, err)
        assert len(gone.mailbox.messages) == 3 and len(full.mailbox.messages) == 10  # --delete: nothing was stored, nothing deleted
    assert err.count("the LMTP server refused the recipient nobody-here: 550") == 1, err  # the first message only
    assert "ERROR gone: message 1 (UID uid-0001) and the rest were not stored: the LMTP server refused the recipient nobody-here: 550 5.1.1" in err, err
    assert "check --lmtp-recipient (and its mailbox) and run again; paused: not polled again until watch is restarted" in err, err
    assert "ERROR full: message 1 (UID uid-0001) and the rest were not stored: the IMAP server refused APPEND: NO [OVERQUOTA]" in err, err
    refused = "message 1 (UID uid-0001) and the rest were not stored: the LMTP server refused the recipient nobody-here: 550"
    assert rows["gone"]["last_error"].startswith(refused)
    assert "[OVERQUOTA]" in rows["full"]["last_error"] and rows["full"]["next_poll"] is None
    assert not rows["ok"]["paused"] and rows["ok"]["last_error"] is None
    assert sum(bodies(dovecot_mail, users["quota_dest"]).values()) == 0


class _LmtpAfterData(socketserver.StreamRequestHandler):
    """An LMTP server taking MAIL and RCPT, then answering DATA with ``server.reply``."""

    def handle(self) -> None:
        send = self.wfile.write
        send(b"220 lmtp.test LMTP ready\r\n")
        while line := self.rfile.readline():
            verb = line[:4].upper()
            if verb == b"LHLO":
                send(b"250-lmtp.test\r\n250 ENHANCEDSTATUSCODES\r\n")
            elif verb == b"DATA":
                send(b"354 go ahead\r\n")
                while self.rfile.readline() not in (b".\r\n", b""):
                    pass
                send(self.server.reply)  # type: ignore[attr-defined]
            elif verb == b"QUIT":
                send(b"221 bye\r\n")
                return
            else:
                send(b"250 2.0.0 ok\r\n")


@pytest.mark.parametrize(
    ("reply", "pauses"),
    [
        (b"552 5.2.2 <dest@test> Mailbox is full\r\n", True),  # the recipient's mailbox: every message
        (b"550 5.1.1 <dest@test> User unknown\r\n", True),
        (b"552 5.3.4 Message too big for system\r\n", False),  # this message only: the others go on
        (b"554 5.6.0 Message content rejected\r\n", False),
        (b"550 Requested action not taken\r\n", False),  # no enhanced code: nothing known beyond this message
    ],
)
def test_a_5xx_after_data_pauses_only_when_it_is_about_the_recipient(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reply: bytes, pauses: bool) -> None:
    from fastpoplib._destinations import LmtpDestination
    from fastpoplib._store import Refusal

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _LmtpAfterData)
    server.daemon_threads = True
    server.reply = reply  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        dest = LmtpDestination(f"127.0.0.1:{server.server_address[1]}", "dest@test", "acct", timeout=10)
        try:
            delivery = dest.begin()
            delivery.write(four_kb(1, "after-data")[0])
            [outcome] = delivery.commit("u1")
        finally:
            dest.close()
    finally:
        server.shutdown()
        server.server_close()
    assert isinstance(outcome, Refusal)
    assert (outcome.stop, outcome.pause) == (pauses, pauses)
    assert reply.decode().strip() in outcome.reason
