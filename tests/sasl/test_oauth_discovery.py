"""OAuth2 against servers that lie or misbehave, and the parts of the sign-in that only show
outside the happy path: discovery whose ``issuer`` is not the configured one (RFC 8414 §3.3),
responses too long or too slow (a bounded read), tokens with control characters, the
``auth status`` of an account without a client ID, a real file-backed keyring across
processes and a locked one, and the httpx fallback that Python 3.9/3.10 use."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
import types
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

pytest.importorskip("authlib", reason="the oauth and testing extras are part of the test extra")
pytest.importorskip("flask", reason="the testing extra")

from fastpoplib.oauth2 import (  # noqa: E402
    OAuth2ConfigError,
    OAuth2Error,
    Settings,
    TokenSource,
    TokenStore,
    record_from,
    settings_for,
)
from fastpoplib.oauth2 import _grants  # noqa: E402
from fastpoplib.testing import POP3TestServer  # noqa: E402
from fastpoplib.testing.oauth_server import OAuth2TestServer  # noqa: E402

pytestmark = pytest.mark.timeout(120)

BIG = 50 << 20  # bytes a lying server offers: far over the bound
OAUTH2_KEYS = ["oauth2_client_secret", "oauth2_tenant", "oauth2_token_endpoint", "oauth2_device_endpoint", "oauth2_authorization_endpoint"]


class Lying:
    """A loopback HTTP server whose every answer is ``respond(handler)``, set by the test.
    Records each request's path and headers, and the body bytes it managed to send."""

    def __init__(self, respond: Callable[[Any], None]) -> None:
        outer = self
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.sent = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                self.serve()

            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self.serve()

            def serve(self) -> None:
                outer.requests.append((self.path, dict(self.headers)))
                try:
                    respond(self)
                except OSError:
                    pass  # the client hung up: what these tests want

            def send(self, chunk: bytes) -> None:
                self.wfile.write(chunk)
                outer.sent += len(chunk)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"

    def __enter__(self) -> "Lying":
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def json_answer(data: Any, status: int = 200) -> Callable[[Any], None]:
    body = json.dumps(data).encode()

    def respond(h: Any) -> None:
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.send(body)

    return respond


def endless(h: Any) -> None:
    """50 MiB of a JSON string, announced and sent in 64 KiB pieces."""
    h.send_response(200)
    h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", str(BIG))
    h.end_headers()
    piece = b" " * (64 << 10)
    for _ in range(BIG // len(piece)):
        h.send(piece)


def settings_at(**kw: Any) -> Settings:
    return Settings(name="work", provider="custom", client_id="mail-client", client_secret=None, scope="mail", **kw)


def account(issuer: str, **kw: Any) -> Any:
    keys = {**dict.fromkeys(OAUTH2_KEYS), **kw}
    return types.SimpleNamespace(
        name="work", oauth2_provider="custom", oauth2_client_id="mail-client", oauth2_scope="mail", oauth2_issuer=issuer, **keys
    )


@pytest.fixture
def oauth() -> Iterator[OAuth2TestServer]:
    with OAuth2TestServer() as srv:
        srv.add_client("mail-client")
        yield srv


def signed_in(oauth: OAuth2TestServer, store: TokenStore) -> Settings:
    settings = _grants.discover(settings_for(account(oauth.issuer)))
    response = _grants.device_login(settings, lambda text: oauth.approve(text.rsplit(" ", 1)[1], user="user"), sleep=lambda s: None)
    store.save("work", record_from(settings, response))
    return settings


# -- 1. discovery: the issuer must be the configured one ------------------------------------


def test_metadata_naming_another_issuer_is_refused_and_nothing_of_it_used() -> None:
    """The configured issuer's metadata (a mix-up, or an attacker between) names another
    issuer and sends the grants to another server: refused, that server is never asked."""
    with Lying(json_answer({"access_token": "x"})) as attacker:
        metadata = {
            "issuer": "https://login.attacker.example",
            "token_endpoint": f"{attacker.url}/token",
            "device_authorization_endpoint": f"{attacker.url}/device",
        }
        with Lying(json_answer(metadata)) as mixup:
            with pytest.raises(OAuth2ConfigError) as caught:
                _grants.discover(settings_for(account(mixup.url)))
        assert [path for path, _ in mixup.requests] == ["/.well-known/oauth-authorization-server"]
        assert not attacker.requests
    text = str(caught.value)
    assert f"the metadata at {mixup.url}/.well-known/oauth-authorization-server names 'https://login.attacker.example' as its issuer" in text
    assert f"not {mixup.url!r} (oauth2_issuer)" in text and "RFC 8414 §3.3" in text and "mix-up or an attack" in text


def test_metadata_without_an_issuer_is_refused() -> None:
    with Lying(json_answer({"token_endpoint": "http://127.0.0.1:1/token"})) as srv:
        with pytest.raises(OAuth2ConfigError, match="names no issuer as its issuer"):
            _grants.discover(settings_for(account(srv.url)))


def test_issuer_differing_by_a_trailing_slash_stops_auth_login_before_the_user_is_asked(oauth: OAuth2TestServer, tmp_path: Path) -> None:
    config = tmp_path / "fetch.toml"
    config.write_text(
        textwrap.dedent(
            f"""\
            [[account]]
            name = "work"
            host = "127.0.0.1"
            user = "user"
            auth = "oauth2"
            oauth2_provider = "custom"
            oauth2_client_id = "mail-client"
            oauth2_scope = "mail"
            oauth2_issuer = "{oauth.issuer}/"
            """
        )
    )
    run = cli(tmp_path, "auth", "login", "--config", str(config), "--account", "work")
    assert run.returncode == 2, run.stdout + run.stderr
    assert "To sign in" not in run.stdout
    assert f"names '{oauth.issuer}' as its issuer, not '{oauth.issuer}/' (oauth2_issuer)" in run.stderr
    assert "Traceback" not in run.stderr
    assert oauth.token_requests == 0


def test_an_issuer_with_a_path_is_discovered_where_rfc_8414_puts_its_metadata() -> None:
    """RFC 8414 §3.1: ``https://host/tenant`` has its metadata at
    ``https://host/.well-known/oauth-authorization-server/tenant``."""
    holder: dict[str, Any] = {}

    def respond(h: Any) -> None:
        if h.path == "/.well-known/oauth-authorization-server/tenant1":
            json_answer(holder["metadata"])(h)
        else:
            json_answer({"error": "not here"}, status=404)(h)

    with Lying(respond) as srv:
        issuer = f"{srv.url}/tenant1"
        holder["metadata"] = {"issuer": issuer, "token_endpoint": f"{issuer}/token", "device_authorization_endpoint": f"{issuer}/device"}
        settings = _grants.discover(settings_for(account(issuer)))
    assert settings.token_endpoint == f"{issuer}/token" and settings.device_endpoint == f"{issuer}/device"
    assert srv.requests[0][0] == "/.well-known/oauth-authorization-server/tenant1"


# -- 2. bounded responses and timeouts --------------------------------------------------------


def test_a_50_mib_token_response_is_refused_at_the_bound() -> None:
    with Lying(endless) as srv:
        started = time.monotonic()
        with pytest.raises(OAuth2Error) as caught:
            _grants.refresh(settings_at(token_endpoint=f"{srv.url}/token"), "rt")
        elapsed = time.monotonic() - started
    assert str(caught.value) == f"127.0.0.1:{srv.httpd.server_port} sent a response over the 1 MiB limit; check the endpoint"
    assert srv.sent < 16 << 20, srv.sent  # read stopped: the rest was never taken
    assert elapsed < 20
    assert srv.requests[0][1].get("Accept-Encoding") == "identity"


def test_a_compressed_bomb_is_refused_at_the_bound_once_inflated() -> None:
    """A server that compresses although asked not to: 50 MiB of zeros in about 50 KiB."""
    bomb = gzip.compress(b"0" * BIG, compresslevel=9)

    def respond(h: Any) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Encoding", "gzip")
        h.send_header("Content-Length", str(len(bomb)))
        h.end_headers()
        h.send(bomb)

    with Lying(respond) as srv:
        with pytest.raises(OAuth2Error, match="over the 1 MiB limit"):
            _grants.refresh(settings_at(token_endpoint=f"{srv.url}/token"), "rt")


def test_a_50_mib_discovery_document_is_refused_naming_the_limit() -> None:
    with Lying(endless) as srv:
        with pytest.raises(OAuth2ConfigError) as caught:
            _grants.discover(settings_for(account(srv.url)))
    assert f"discovery at {srv.url} failed (127.0.0.1:{srv.httpd.server_port} sent a response over the 1 MiB limit" in str(caught.value)
    assert srv.sent < 32 << 20, srv.sent  # two URLs tried, each stopped at the bound


def test_a_response_trickling_in_is_given_up_after_the_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """A byte every 0.2 s never trips a per-read timeout: the whole response has a deadline."""
    monkeypatch.setattr(_grants, "HTTP_TIMEOUT", 1.0)

    def trickle(h: Any) -> None:
        h.send_response(200)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", "1000")
        h.end_headers()
        for _ in range(1000):
            h.send(b" ")
            h.wfile.flush()
            time.sleep(0.2)

    with Lying(trickle) as srv:
        started = time.monotonic()
        with pytest.raises(OAuth2Error, match=r"did not finish its response within 1 s; try again later"):
            _grants.refresh(settings_at(token_endpoint=f"{srv.url}/token"), "rt")
        assert time.monotonic() - started < 10


def test_a_server_that_never_answers_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_grants, "HTTP_TIMEOUT", 0.5)
    release = threading.Event()
    with Lying(lambda h: release.wait(20)) as srv:
        try:
            with pytest.raises(OAuth2Error, match=r"no answer from 127.0.0.1:\d+ within 0.5 s; try again later"):
                _grants.refresh(settings_at(token_endpoint=f"{srv.url}/token"), "rt")
            with pytest.raises(OAuth2Error, match="no answer from"):
                _grants.discover(settings_for(account(srv.url)))
        finally:
            release.set()


# -- 3. auth status of an account without oauth2_client_id ------------------------------------


def cli(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    base = dict(os.environ, XDG_STATE_HOME=str(tmp_path / "state"), FASTPOPLIB_TOKEN_STORE="file")
    return subprocess.run(
        [sys.executable, "-m", "fastpoplib", *args], capture_output=True, text=True, env=env or base, timeout=90, check=False
    )


def test_auth_status_of_an_account_without_client_id_says_the_config_error_of_login_and_fetch(tmp_path: Path) -> None:
    config = tmp_path / "fetch.toml"
    config.write_text(
        '[[account]]\nname = "work"\nhost = "127.0.0.1"\nport = 1\nuser = "u"\nauth = "oauth2"\noauth2_provider = "google"\n'
        '\n[[account]]\nname = "other"\nhost = "127.0.0.1"\nuser = "u"\npassword_env = "X"\n'
    )
    sentence = "account 'work' has auth = \"oauth2\" but no oauth2_client_id; register a client (see the OAuth2 docs page)"
    status = cli(tmp_path, "auth", "status", "--config", str(config))
    login = cli(tmp_path, "auth", "login", "--config", str(config), "--account", "work")
    fetch = cli(tmp_path, "fetch", "--config", str(config), "--account", "work")
    overview = cli(tmp_path, "status", "--config", str(config))
    assert status.returncode == login.returncode == fetch.returncode == 2, (status, login, fetch)
    assert f"fastpoplib: {config}: account 'work': {sentence}" in status.stderr
    assert f"fastpoplib: {config}: account 'work': {sentence}" in login.stderr
    assert sentence in fetch.stderr
    assert "not signed in" not in status.stdout + status.stderr
    assert "other: signs in with a password" in status.stdout  # the other accounts are still shown
    assert f"sign-in     {sentence}" in overview.stdout


# -- 4. tokens with control characters --------------------------------------------------------


@pytest.mark.parametrize(
    "field, value",
    [
        ("access_token", "at-1\r\nDELE 1"),
        ("refresh_token", "rt-1\nQUIT"),
        ("access_token", "at\x00x"),
        ("refresh_token", "rt\x1b[2J"),
        ("access_token", "at-é"),
    ],
)
def test_a_token_with_control_characters_is_refused_and_never_stored(tmp_path: Path, field: str, value: str) -> None:
    response = {"access_token": "at-good", "refresh_token": "rt-good", "expires_in": 3600, "token_type": "Bearer", field: value}
    store = TokenStore(tmp_path, backend="file")
    with Lying(json_answer(response)) as srv:
        settings = settings_at(token_endpoint=f"{srv.url}/token")
        old = record_from(settings, {"access_token": "at-old", "refresh_token": "rt-old", "expires_in": 10})
        store.save("work", old)
        with pytest.raises(OAuth2Error) as caught:
            TokenSource(settings, store)()
    assert str(caught.value) == (
        f"the token response's {field} holds characters no token may have (RFC 6749 Appendix A: printable ASCII only);"
        " nothing was stored; check the token endpoint"
    )
    assert value not in str(caught.value)
    assert store.load("work") == old  # the old record stays, untouched
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("*.json"))
    assert json.dumps(value).encode()[1:-1] not in raw


# -- 5. a real file-backed keyring, across processes; a locked one -----------------------------


def keyring_env(tmp_path: Path, backend: str, pythonpath: str = "") -> dict[str, str]:
    env = dict(os.environ, XDG_STATE_HOME=str(tmp_path / "state"), XDG_DATA_HOME=str(tmp_path / "data"), PYTHON_KEYRING_BACKEND=backend)
    env.pop("FASTPOPLIB_TOKEN_STORE", None)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath + os.pathsep + env.get("PYTHONPATH", "")
    return env


def oauth_config(tmp_path: Path, oauth: OAuth2TestServer, port: int = 1) -> Path:
    config = tmp_path / "fetch.toml"
    config.write_text(
        f'[[account]]\nname = "work"\nhost = "127.0.0.1"\nport = {port}\nmaildir = "{tmp_path / "Maildir"}"\nuser = "u"\n'
        'tls = "none"\ninsecure = true\nauth = "oauth2"\n'
        f'oauth2_provider = "custom"\noauth2_client_id = "mail-client"\noauth2_scope = "mail"\noauth2_issuer = "{oauth.issuer}"\n'
    )
    return config


def stored_in(keyring_file: Path) -> dict[str, Any] | None:
    """The account's record as the keyring file holds it (read with the backend itself)."""
    from keyrings.alt.file import PlaintextKeyring

    ring = PlaintextKeyring()
    ring.file_path = str(keyring_file)  # type: ignore[misc]
    text = ring.get_password("fastpoplib-oauth2", "work")
    return None if text is None else dict(json.loads(text))


USE_TOKEN = """
import hashlib, sys, types
from fastpoplib.oauth2 import token_source
keys = dict.fromkeys({keys!r})
acct = types.SimpleNamespace(name="work", oauth2_provider="custom", oauth2_client_id="mail-client", oauth2_scope="mail", oauth2_issuer=sys.argv[1], **keys)
source = token_source(acct)
print(source.store.kind, hashlib.sha256(source().encode()).hexdigest())
"""


def test_keyring_backend_on_file_save_load_rotate_logout_across_processes(oauth: OAuth2TestServer, tmp_path: Path) -> None:
    pytest.importorskip("keyrings.alt")
    env = keyring_env(tmp_path, "keyrings.alt.file.PlaintextKeyring")
    config = oauth_config(tmp_path, oauth)
    oauth.access_token_lifetime = 60  # under the 5-minute margin: each use refreshes (and rotates)
    login = subprocess.Popen(
        [sys.executable, "-m", "fastpoplib", "auth", "login", "--config", str(config), "--account", "work"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    assert login.stdout is not None
    line = login.stdout.readline()
    assert "enter the code" in line, line
    oauth.approve(line.split()[-1], user="user")
    out, err = login.communicate(timeout=60)
    assert login.returncode == 0, out + err
    assert "work: signed in; tokens stored in the keyring" in out
    keyring_file = tmp_path / "data" / "python_keyring" / "keyring_pass.cfg"
    assert stored_in(keyring_file) is not None
    assert not list((tmp_path / "state").rglob("*.json"))  # not in a file of ours
    # Two more processes, each refreshing with the refresh token the previous one rotated and
    # saved in the keyring: the test server revokes a used one, so a lost rotation fails here.
    script = USE_TOKEN.format(keys=OAUTH2_KEYS)
    for n in (1, 2):
        use = subprocess.run([sys.executable, "-c", script, oauth.issuer], capture_output=True, text=True, env=env, timeout=60, check=False)
        assert use.returncode == 0, use.stderr
        kind, digest = use.stdout.split()
        assert kind == "keyring" and oauth.refresh_count == n
        assert digest == hashlib.sha256(oauth.tokens[-1].access_token.encode()).hexdigest()
    assert oauth.active_refresh_tokens() == [stored_in(keyring_file)["refresh_token"]]  # type: ignore[index]
    status = cli(tmp_path, "auth", "status", "--config", str(config), env=env)
    assert status.returncode == 0 and "work: signed in" in status.stdout, status.stdout + status.stderr
    logout = cli(tmp_path, "auth", "logout", "--config", str(config), "--account", "work", env=env)
    assert logout.returncode == 0, logout.stderr
    assert "work: the provider revoked the sign-in" in logout.stdout and "signed out" in logout.stdout
    assert oauth.active_refresh_tokens() == []
    assert stored_in(keyring_file) is None
    status = cli(tmp_path, "auth", "status", "--config", str(config), env=env)
    assert status.returncode == 3 and "work: not signed in" in status.stdout


LOCKED_BACKEND = '''
from keyring.backend import KeyringBackend
from keyring.errors import KeyringLocked


class Locked(KeyringBackend):
    """A keyring whose collection is locked (GNOME Keyring after login without a password)."""

    priority = 1

    def get_password(self, service, username):
        raise KeyringLocked("Failed to unlock the collection!")

    def set_password(self, service, username, password):
        raise KeyringLocked("Failed to unlock the collection!")

    def delete_password(self, service, username):
        raise KeyringLocked("Failed to unlock the collection!")
'''


def test_a_locked_keyring_is_a_sentence_for_every_command(oauth: OAuth2TestServer, tmp_path: Path) -> None:
    (tmp_path / "lockedring.py").write_text(LOCKED_BACKEND)
    env = keyring_env(tmp_path, "lockedring.Locked", pythonpath=str(tmp_path))
    config = oauth_config(tmp_path, oauth)
    advice = "the keyring could not be read (KeyringLocked: is it locked?); unlock it, or set FASTPOPLIB_TOKEN_STORE=file to use a file"
    login = cli(tmp_path, "auth", "login", "--config", str(config), "--account", "work", env=env)
    assert login.returncode == 2 and advice in login.stderr, login.stdout + login.stderr
    assert "To sign in" not in login.stdout  # refused before the user approves for nothing
    status = cli(tmp_path, "auth", "status", "--config", str(config), env=env)
    assert status.returncode == 3 and f"work: {advice}" in status.stdout, status.stdout + status.stderr
    logout = cli(tmp_path, "auth", "logout", "--config", str(config), "--account", "work", env=env)
    assert logout.returncode == 2 and advice in logout.stderr, logout.stdout + logout.stderr
    with POP3TestServer(sasl=["XOAUTH2"], oauth2_tokens={"u": "never-given"}) as pop_server:
        fetch = cli(tmp_path, "fetch", "--config", str(oauth_config(tmp_path, oauth, pop_server.port)), env=env)
    assert fetch.returncode == 2 and advice in fetch.stderr, fetch.stdout + fetch.stderr
    for run in (login, status, logout, fetch):
        assert "Traceback" not in run.stdout + run.stderr


def test_a_keyring_backend_that_cannot_be_loaded_is_a_sentence(oauth: OAuth2TestServer, tmp_path: Path) -> None:
    env = keyring_env(tmp_path, "no_such_module.Keyring")
    status = cli(tmp_path, "auth", "status", "--config", str(oauth_config(tmp_path, oauth)), env=env)
    assert status.returncode == 2, status.stdout + status.stderr
    assert "the keyring backend could not be loaded (ModuleNotFoundError); fix the keyring configuration" in status.stderr
    assert "Traceback" not in status.stderr


def test_a_failing_keyring_raises_token_store_error_from_the_library(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    keyring = pytest.importorskip("keyring")
    from keyring.backend import KeyringBackend
    from keyring.errors import KeyringLocked

    from fastpoplib.oauth2 import TokenStoreError

    class Locked(KeyringBackend):
        priority = 1  # type: ignore[assignment]

        def get_password(self, service: str, username: str) -> Any:
            raise KeyringLocked("locked")

        def set_password(self, service: str, username: str, password: str) -> None:
            raise KeyringLocked("locked")

        def delete_password(self, service: str, username: str) -> None:
            raise KeyringLocked("locked")

    monkeypatch.delenv("FASTPOPLIB_TOKEN_STORE", raising=False)
    previous = keyring.get_keyring()
    keyring.set_keyring(Locked())
    try:
        store = TokenStore(tmp_path)
        assert store.kind == "keyring"
        record = record_from(settings_at(), {"access_token": "at", "refresh_token": "rt"})
        for call in (store.check_writable, lambda: store.load("w"), lambda: store.save("w", record), lambda: store.delete("w")):
            with pytest.raises(TokenStoreError, match=r"^the keyring could not be (read|written) \(KeyringLocked: is it locked\?\)"):
                call()
        with pytest.raises(TokenStoreError):
            TokenSource(settings_at(token_endpoint="http://127.0.0.1:1/t"), store)()
    finally:
        keyring.set_keyring(previous)


# -- 6. the httpx fallback of Python 3.9 and 3.10 ---------------------------------------------

FALLBACK = """
import dataclasses, json, sys, types, warnings
sys.modules["httpx2"] = None  # as on Python < 3.11, where httpx2 cannot be installed
warnings.simplefilter("ignore", DeprecationWarning)  # authlib deprecates its httpx fallback
from fastpoplib.oauth2 import _grants, TokenSource, TokenStore, OAuth2Error, settings_for
from pathlib import Path
issuer, store_dir, big_url = sys.argv[1:4]
keys = dict.fromkeys({keys!r})
acct = types.SimpleNamespace(name="work", oauth2_provider="custom", oauth2_client_id="mail-client", oauth2_scope="mail", oauth2_issuer=issuer, **keys)
out = {{"module": _grants.httpx2.__name__, "client_base": [c.__module__.split(".")[0] for c in _grants._OAuth2Client.__mro__]}}
out["token_endpoint"] = _grants.discover(settings_for(acct)).token_endpoint
source = TokenSource(settings_for(acct), TokenStore(Path(store_dir), backend="file"))
out["refreshed"] = bool(source())
try:
    _grants.refresh(dataclasses.replace(settings_for(acct), token_endpoint=big_url), "rt")
except OAuth2Error as exc:
    out["big"] = str(exc)
print(json.dumps(out))
"""


def test_the_httpx_fallback_signs_in_refreshes_and_bounds_responses(oauth: OAuth2TestServer, tmp_path: Path) -> None:
    """What Python 3.9 and 3.10 run: httpx (authlib's fallback) instead of httpx2."""
    pytest.importorskip("httpx", reason="httpx is in the test extra on every Python")
    store = TokenStore(tmp_path, backend="file")
    oauth.access_token_lifetime = 60  # the subprocess refreshes
    signed_in(oauth, store)
    with Lying(endless) as big:
        script = FALLBACK.format(keys=OAUTH2_KEYS)
        run = subprocess.run(
            [sys.executable, "-c", script, oauth.issuer, str(tmp_path), f"{big.url}/token"],
            capture_output=True, text=True, timeout=60, check=False,
        )
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["module"] == "httpx" and "httpx" in out["client_base"] and "httpx2" not in out["client_base"]
    assert out["token_endpoint"] == f"{oauth.issuer}/token"
    assert out["refreshed"] and oauth.refresh_count == 1
    assert out["big"].endswith("sent a response over the 1 MiB limit; check the endpoint")
