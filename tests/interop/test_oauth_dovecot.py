"""OAuth2 end to end: Dovecot's ``oauth2`` passdb checks every XOAUTH2/OAUTHBEARER token at
the shipped authorization server's introspection endpoint (RFC 7662), and ``fastpoplib
fetch`` signs in, fetches, refreshes an expired token (rotation), stops with exit 3 and the
sentence once the grant is revoked, survives kill -9 after a rotation, refreshes once for two
concurrent runs, and never shows a token (-vv output, state files, its own command line and
environment)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import types
from pathlib import Path
from typing import Any, Iterator

import pytest

pytest.importorskip("authlib", reason="the oauth and testing extras are part of the test extra")
pytest.importorskip("flask", reason="the testing extra")

from support.dovecot import _require_dovecot  # noqa: E402

from fastpoplib.oauth2 import TokenStore, record_from, settings_for  # noqa: E402
from fastpoplib.oauth2 import _grants  # noqa: E402
from fastpoplib.testing import Fault, POP3TestServer  # noqa: E402
from fastpoplib.testing.dovecot import MAIL_UID, Dovecot  # noqa: E402
from fastpoplib.testing.oauth_server import INTROSPECTION_CLIENT, OAuth2TestServer  # noqa: E402

DEADLINE = 30.0  # seconds any polling loop may take
USERS = 8  # more than the tests here use
_users = iter(range(USERS))


@pytest.fixture(scope="module")
def oauth() -> Iterator[OAuth2TestServer]:
    with OAuth2TestServer() as srv:
        srv.add_client("mail-client")
        yield srv


@pytest.fixture(scope="module")
def dove(oauth: OAuth2TestServer) -> Iterator[Dovecot]:
    _require_dovecot()
    root = tempfile.mkdtemp(prefix="fastpoplib-dovecot-oauth-")
    client, secret = INTROSPECTION_CLIENT
    server = Dovecot(Path(root), protocols=("pop3", "imap"), oauth2_introspection_url=f"http://{client}:{secret}@127.0.0.1:{oauth.port}/introspect")
    # Every user before the start: Dovecot notices a changed passwd-file by its mtime, in
    # whole seconds, so users added in quick succession while it runs may go unseen.
    for i in range(USERS):
        server.add_user(f"oauser{i}", [b"Subject: m%d\r\n\r\nbody %d\r\n" % (n, n) for n in range(3)])
    with server:
        yield server
    subprocess.run(["rm", "-rf", root], check=False)


@pytest.fixture
def fresh(oauth: OAuth2TestServer) -> Iterator[OAuth2TestServer]:
    """The module's server with this test's knobs reset."""
    oauth.access_token_lifetime = 3600
    oauth.refresh_count = 0
    yield oauth


def add_message(dove: Dovecot, user: str, i: int) -> None:
    data = b"Subject: later %d\r\n\r\nbody\r\n" % i
    path = dove.root / "mail" / user / "Maildir" / "new" / f"{1800000000 + i}.M{i}P9.fastpoplib"
    path.write_bytes(data)
    os.chown(path, MAIL_UID, MAIL_UID)


def config(tmp_path: Path, oauth: OAuth2TestServer, user: str, host: str, port: int, tls: str, cafile: str = "") -> Path:
    path = tmp_path / f"fetch-{port}.toml"
    extra = f'cafile = "{cafile}"\n' if cafile else "insecure = true\n"
    path.write_text(
        textwrap.dedent(
            f"""\
            [[account]]
            name = "work"
            host = "{host}"
            port = {port}
            user = "{user}"
            tls = "{tls}"
            maildir = "{tmp_path / 'Maildir'}"
            auth = "oauth2"
            oauth2_provider = "custom"
            oauth2_client_id = "mail-client"
            oauth2_scope = "mail"
            oauth2_issuer = "{oauth.issuer}"
            """
        )
        + extra
    )
    return path


def dovecot_config(tmp_path: Path, oauth: OAuth2TestServer, dove: Dovecot, user: str) -> Path:
    return config(tmp_path, oauth, user, dove.host, dove.tls_port, "implicit", dove.cafile)


def env(tmp_path: Path) -> dict[str, str]:
    return dict(os.environ, XDG_STATE_HOME=str(tmp_path / "state"), FASTPOPLIB_TOKEN_STORE="file")


def store(tmp_path: Path) -> TokenStore:
    return TokenStore(tmp_path / "state" / "fastpoplib" / "oauth2", backend="file")


def fetch(tmp_path: Path, cfg: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fastpoplib", "-vv", "fetch", "--config", str(cfg), *extra],
        capture_output=True,
        text=True,
        env=env(tmp_path),
        timeout=120,
        check=False,
    )


def new_user(dove: Dovecot) -> str:
    """A user of its own for the test, with 3 messages."""
    return f"oauser{next(_users)}"


def sign_in(tmp_path: Path, oauth: OAuth2TestServer, user: str) -> None:
    """What `auth login` does, approved at once (test_oauth_cli runs the command itself)."""
    acct = types.SimpleNamespace(
        name="work", oauth2_provider="custom", oauth2_client_id="mail-client", oauth2_scope="mail", oauth2_issuer=oauth.issuer,
        **dict.fromkeys(["oauth2_client_secret", "oauth2_tenant", "oauth2_token_endpoint", "oauth2_device_endpoint", "oauth2_authorization_endpoint"]),
    )
    settings = _grants.discover(settings_for(acct))
    response = _grants.device_login(settings, lambda text: oauth.approve(text.rsplit(" ", 1)[1], user=user), sleep=lambda s: None)
    store(tmp_path).save("work", record_from(settings, response))


def sign_in_stale(tmp_path: Path, oauth: OAuth2TestServer, user: str) -> None:
    """:func:`sign_in` with an access token stale at once: the next use refreshes."""
    oauth.access_token_lifetime = 60
    sign_in(tmp_path, oauth, user)
    oauth.access_token_lifetime = 3600


def stored_files(tmp_path: Path) -> str:
    """Every file the fetch wrote except the token store: the Maildir and its state."""
    return "".join(p.read_bytes().decode("latin-1") for p in (tmp_path / "Maildir").rglob("*") if p.is_file())


def no_token_in(oauth: OAuth2TestServer, *texts: str) -> None:
    for token in oauth.issued_tokens():
        for text in texts:
            assert token not in text, "a token leaked"


def messages(tmp_path: Path) -> int:
    return sum(1 for sub in ("new", "cur") for _ in (tmp_path / "Maildir" / sub).iterdir())


def test_sign_in_fetch_expire_refresh_rotate_revoke(fresh: OAuth2TestServer, dove: Dovecot, tmp_path: Path) -> None:
    oauth = fresh
    user = new_user(dove)
    cfg = dovecot_config(tmp_path, oauth, dove, user)
    # sign in with the real command: device grant, the user approves the printed code
    login = subprocess.Popen(
        [sys.executable, "-m", "fastpoplib", "-vv", "auth", "login", "--config", str(cfg), "--account", "work"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env(tmp_path),
    )
    assert login.stdout is not None
    oauth.approve(login.stdout.readline().rsplit(" ", 1)[1].strip(), user=user)
    out, err = login.communicate(timeout=60)
    assert login.returncode == 0, out + err

    first = fetch(tmp_path, cfg)
    assert first.returncode == 0, first.stderr
    assert messages(tmp_path) == 3 and oauth.refresh_count == 0
    assert "with XOAUTH2" in first.stderr  # -vv: "logged in as ... with XOAUTH2"

    before = store(tmp_path).load("work")
    assert before is not None and before.refresh_token is not None
    oauth.expire_access_tokens()
    add_message(dove, user, 1)
    second = fetch(tmp_path, cfg)
    assert second.returncode == 0, second.stderr
    assert messages(tmp_path) == 4
    assert oauth.refresh_count == 1
    after = store(tmp_path).load("work")
    assert after is not None and after.refresh_token is not None and after.refresh_token != before.refresh_token
    assert oauth.active_refresh_tokens(user) == [after.refresh_token.reveal()]  # the old one is spent

    oauth.revoke_all(user)
    third = fetch(tmp_path, cfg)
    assert third.returncode == 3, third.stderr
    assert "sign in again: fastpoplib auth login --account work" in third.stderr
    assert "Traceback" not in third.stderr
    no_token_in(oauth, out, err, first.stdout, first.stderr, second.stdout, second.stderr, third.stdout, third.stderr, stored_files(tmp_path))


def test_oauthbearer_when_capa_offers_only_it(fresh: OAuth2TestServer, dove: Dovecot, tmp_path: Path) -> None:
    user = new_user(dove)
    sign_in(tmp_path, fresh, user)
    # Dovecot offers both; the library's own choice is XOAUTH2: OAUTHBEARER checked directly.
    import fastpoplib
    from fastpoplib.oauth2 import TokenSource

    acct_settings = _grants.discover(
        settings_for(
            types.SimpleNamespace(
                name="work", oauth2_provider="custom", oauth2_client_id="mail-client", oauth2_scope="mail", oauth2_issuer=fresh.issuer,
                **dict.fromkeys(["oauth2_client_secret", "oauth2_tenant", "oauth2_token_endpoint", "oauth2_device_endpoint", "oauth2_authorization_endpoint"]),
            )
        )
    )
    source = TokenSource(acct_settings, store(tmp_path))
    with fastpoplib.POP3_SSL(dove.host, dove.tls_port, cafile=dove.cafile) as pop:
        pop.login(user, oauth2=source, mechanisms=["OAUTHBEARER"])
        assert pop.auth_mechanism == "OAUTHBEARER" and pop.stat()[0] == 3


def test_kill_9_after_a_rotation_loses_nothing(fresh: OAuth2TestServer, dove: Dovecot, tmp_path: Path) -> None:
    oauth = fresh
    user = new_user(dove)
    sign_in_stale(tmp_path, oauth, user)
    # A POP3 server that takes the AUTH command and never answers: the run is held just
    # after it refreshed (and rotated) and sent the new access token.
    stall = Fault.stall(30, on="AUTH")
    with POP3TestServer(sasl=["XOAUTH2"], stls=False) as held:
        held.add_fault(stall)
        cfg = config(tmp_path, oauth, user, held.host, held.port, "none")
        proc = subprocess.Popen(
            [sys.executable, "-m", "fastpoplib", "-vv", "fetch", "--config", str(cfg)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env(tmp_path),
        )
        deadline = time.monotonic() + DEADLINE
        while not stall.fired:
            assert proc.poll() is None and time.monotonic() < deadline, "the fetch did not reach AUTH"
            time.sleep(0.02)
        # what `ps` shows of the process: its command line and environment
        shown = Path(f"/proc/{proc.pid}/cmdline").read_bytes() + Path(f"/proc/{proc.pid}/environ").read_bytes()
        proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate(timeout=30)
    no_token_in(oauth, shown.decode("latin-1"), out.decode("latin-1"), err.decode("latin-1"))
    assert oauth.refresh_count == 1
    saved = store(tmp_path).load("work")
    assert saved is not None and saved.refresh_token is not None
    assert oauth.active_refresh_tokens(user) == [saved.refresh_token.reveal()]
    # the next run, at the real server, works with what the killed run stored
    run = fetch(tmp_path, dovecot_config(tmp_path, oauth, dove, user))
    assert run.returncode == 0, run.stderr
    assert messages(tmp_path) == 3 and oauth.refresh_count == 1


def test_two_concurrent_fetches_refresh_once(fresh: OAuth2TestServer, dove: Dovecot, tmp_path: Path) -> None:
    oauth = fresh
    user = new_user(dove)
    sign_in_stale(tmp_path, oauth, user)
    cfg = dovecot_config(tmp_path, oauth, dove, user)
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "fastpoplib", "fetch", "--config", str(cfg), "--maildir", str(tmp_path / f"box{i}")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env(tmp_path),
        )
        for i in range(2)
    ]
    results: list[Any] = [(p.wait(timeout=120), *p.communicate(timeout=30)) for p in runs]
    for code, out, err in results:
        assert code == 0, out + err
    assert oauth.refresh_count == 1
    for i in range(2):
        assert sum(1 for _ in (tmp_path / f"box{i}" / "new").iterdir()) == 3


def test_token_of_another_user_is_refused_with_oauth2_advice(fresh: OAuth2TestServer, dove: Dovecot, tmp_path: Path) -> None:
    signed_in_as, fetching = new_user(dove), new_user(dove)
    sign_in(tmp_path, fresh, signed_in_as)
    run = fetch(tmp_path, dovecot_config(tmp_path, fresh, dove, fetching))
    assert run.returncode == 3, run.stderr
    assert "check the user name, that POP is enabled for the mailbox, and the app's mail permission (scope)" in run.stderr
    assert fresh.refresh_count == 1  # refused once: refreshed and tried again, then given up
    no_token_in(fresh, run.stdout, run.stderr)


def test_imap_auth_oauth2_appends_with_the_refreshed_stored_token(fresh: OAuth2TestServer, dove: Dovecot, tmp_path: Path) -> None:
    oauth = fresh
    user = new_user(dove)
    sign_in_stale(tmp_path, oauth, user)
    oauth.expire_access_tokens()  # the token signed in with is refused: only a refreshed one logs in
    cfg = dovecot_config(tmp_path, oauth, dove, user)
    text = cfg.read_text().replace(f'maildir = "{tmp_path / "Maildir"}"\n', "")
    cfg.write_text(text + f'imap = "imaps://{user}@{dove.host}:{dove.imaps_port}/Fetched"\nimap_auth = "oauth2"\nimap_cafile = "{dove.cafile}"\n')
    result = fetch(tmp_path, cfg)
    assert result.returncode == 0, result.stderr
    appended = [p for sub in ("new", "cur") for p in (dove.root / "mail" / user / "Maildir" / ".Fetched" / sub).iterdir()]
    assert len(appended) == 3
    assert oauth.refresh_count == 1  # POP3 and IMAP share one refresh
    no_token_in(oauth, result.stdout, result.stderr)


@pytest.mark.parametrize(
    "extra, problem",
    [
        ('imap_auth = "oauth2"\n', 'imap_auth is for the --imap destination; give --imap too'),
        ('imap = "imaps://u@127.0.0.1/X"\nimap_auth = "password"\n', "imap_auth must be oauth2"),
        ('imap = "imaps://u@127.0.0.1/X"\nimap_auth = "oauth2"\nimap_password_env = "P"\n', 'exactly one of'),
        ('auth = "password"\npassword_env = "P"\nimap = "imaps://u@127.0.0.1/X"\nimap_auth = "oauth2"\n', 'set auth = "oauth2" too'),
    ],
)
def test_inconsistent_imap_auth_is_a_usage_error(extra: str, problem: str, tmp_path: Path, oauth: OAuth2TestServer) -> None:
    cfg = config(tmp_path, oauth, "u", "127.0.0.1", 995, "implicit")
    text = cfg.read_text().replace(f'maildir = "{tmp_path / "Maildir"}"\n', "")
    if 'auth = "password"' in extra:
        text = text.replace('auth = "oauth2"\n', "")
    cfg.write_text(text + extra)
    result = fetch(tmp_path, cfg)
    assert result.returncode == 2, result.stderr
    assert problem in result.stderr and "Traceback" not in result.stderr
