"""OAuth2 tokens in the library: the store (0600 file in a 0700 directory, atomic, never a
token in a repr), TokenSource (refresh 5 minutes before expiry, rotation saved before use,
one refresh for concurrent callers, invalid_grant as SignInRequired), ``login(user,
oauth2=source)`` (XOAUTH2/OAUTHBEARER from CAPA, long tokens after ``+``, a refused token
refreshed once), all against the shipped authorization server. And ``import fastpoplib``
loads neither authlib nor httpx."""

from __future__ import annotations

import stat
import subprocess
import sys
import threading
import types
from pathlib import Path
from typing import Any, Iterator

import pytest

pytest.importorskip("authlib", reason="the oauth and testing extras are part of the test extra")
pytest.importorskip("flask", reason="the testing extra")

import fastpoplib  # noqa: E402
from fastpoplib.oauth2 import (  # noqa: E402
    REFRESH_MARGIN,
    Secret,
    SignInRequired,
    TokenSource,
    TokenStore,
    record_from,
    settings_for,
    state_line,
)
from fastpoplib.oauth2 import _grants  # noqa: E402
from fastpoplib.testing import POP3TestServer  # noqa: E402
from fastpoplib.testing.oauth_server import OAuth2TestServer  # noqa: E402


@pytest.fixture
def oauth() -> Iterator[OAuth2TestServer]:
    with OAuth2TestServer() as srv:
        srv.add_client("mail-client")
        yield srv


def account(srv: OAuth2TestServer, name: str = "work") -> Any:
    keys = dict.fromkeys(
        ["oauth2_client_secret", "oauth2_tenant", "oauth2_token_endpoint", "oauth2_device_endpoint", "oauth2_authorization_endpoint"]
    )
    return types.SimpleNamespace(
        name=name, oauth2_provider="custom", oauth2_client_id="mail-client", oauth2_scope="mail", oauth2_issuer=srv.issuer, **keys
    )


def signed_in(srv: OAuth2TestServer, tmp_path: Path, name: str = "work") -> TokenSource:
    """A source whose account signed in with the device grant (approved at once)."""
    settings = _grants.discover(settings_for(account(srv, name)))

    def user_approves(text: str) -> None:
        srv.approve(text.rsplit(" ", 1)[1], user="user")

    store = TokenStore(tmp_path / "state", backend="file")
    store.save(name, record_from(settings, _grants.device_login(settings, user_approves, sleep=lambda s: None)))
    return TokenSource(settings, store)


def test_import_fastpoplib_loads_no_oauth_library() -> None:
    code = (
        "import sys, fastpoplib, fastpoplib.cli, fastpoplib.oauth2;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('authlib', 'httpx', 'httpx2', 'flask', 'keyring')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


def test_store_file_is_private_and_holds_no_token_in_reprs(oauth: OAuth2TestServer, tmp_path: Path) -> None:
    source = signed_in(oauth, tmp_path)
    directory = tmp_path / "state"
    files = list(directory.glob("*.json"))
    assert len(files) == 1
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600
    assert not list(directory.glob(".*.tmp"))  # written through a temporary file, renamed
    record = source.store.load("work")
    assert record is not None
    token = record.access_token.reveal()
    for shown in (repr(record), str(record), repr(source), repr(record.access_token), repr(source.settings)):
        assert token not in shown and record.refresh_token.reveal() not in shown  # type: ignore[union-attr]
    with pytest.raises(TypeError):
        import pickle

        pickle.dumps(Secret("x"))


def test_store_dir_with_wide_mode_is_narrowed(tmp_path: Path) -> None:
    directory = tmp_path / "state"
    directory.mkdir(mode=0o755)
    directory.chmod(0o755)
    store = TokenStore(directory, backend="file")
    settings = types.SimpleNamespace(client_id="c", token_endpoint="http://127.0.0.1/t", scope="s", refresh_lifetime=None)
    store.save("a", record_from(settings, {"access_token": "at", "refresh_token": "rt", "expires_in": 3600}))  # type: ignore[arg-type]
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700


def test_a_token_file_made_readable_by_others_is_made_private_again_when_read(tmp_path: Path) -> None:
    directory = tmp_path / "state"
    store = TokenStore(directory, backend="file")
    settings = types.SimpleNamespace(client_id="c", token_endpoint="http://127.0.0.1/t", scope="s", refresh_lifetime=None)
    store.save("a", record_from(settings, {"access_token": "at", "refresh_token": "rt", "expires_in": 3600}))  # type: ignore[arg-type]
    (token_file,) = directory.glob("*.json")
    token_file.chmod(0o644)
    directory.chmod(0o755)
    assert store.load("a") is not None
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700


def test_damaged_store_file_says_sign_in_again_without_its_content(tmp_path: Path) -> None:
    store = TokenStore(tmp_path, backend="file")
    store._path("a").write_text('{"format": 1, "access_token": "SECRETVALUE"')
    with pytest.raises(Exception) as info:
        store.load("a")
    assert "sign in again" in str(info.value) and "SECRETVALUE" not in str(info.value)


def test_fresh_token_is_used_without_refresh(oauth: OAuth2TestServer, tmp_path: Path) -> None:
    source = signed_in(oauth, tmp_path)
    assert source() == source()
    assert oauth.refresh_count == 0


def test_token_expiring_within_five_minutes_is_refreshed_and_rotation_saved_first(oauth: OAuth2TestServer, tmp_path: Path) -> None:
    oauth.access_token_lifetime = int(REFRESH_MARGIN) - 10  # stale as soon as issued
    source = signed_in(oauth, tmp_path)
    first = source.store.load("work")
    assert first is not None and first.refresh_token is not None
    oauth.access_token_lifetime = 3600
    token = source()
    assert oauth.refresh_count == 1
    saved = source.store.load("work")
    assert saved is not None and saved.access_token.reveal() == token
    # rotated: the stored refresh token is the new one, the old one no longer works
    assert saved.refresh_token is not None and saved.refresh_token != first.refresh_token
    assert oauth.active_refresh_tokens() == [saved.refresh_token.reveal()]
    with pytest.raises(_grants.InvalidGrant):
        _grants.refresh(source.settings, first.refresh_token.reveal())
    assert source() == token and oauth.refresh_count == 1


def test_concurrent_callers_refresh_once(oauth: OAuth2TestServer, tmp_path: Path) -> None:
    oauth.access_token_lifetime = 60
    source = signed_in(oauth, tmp_path)
    oauth.access_token_lifetime = 3600
    # Separate sources (as separate runs would have), one shared store directory.
    sources = [TokenSource(source.settings, TokenStore(tmp_path / "state", backend="file")) for _ in range(6)]
    barrier = threading.Barrier(len(sources))
    results: list[str] = []
    errors: list[BaseException] = []

    def run(src: TokenSource) -> None:
        try:
            barrier.wait(10)
            results.append(src())
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(s,)) for s in sources]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert len(set(results)) == 1 and len(results) == len(sources)
    assert oauth.refresh_count == 1


def test_refused_refresh_token_asks_to_sign_in_again_and_is_remembered(oauth: OAuth2TestServer, tmp_path: Path) -> None:
    oauth.access_token_lifetime = 60
    source = signed_in(oauth, tmp_path)
    oauth.revoke_all()
    with pytest.raises(SignInRequired, match="sign in again: fastpoplib auth login --account work"):
        source()
    record = source.store.load("work")
    assert record is not None and record.failed and "invalid_grant" in record.failed
    assert "refresh refused" in state_line("work", record)
    requests = oauth.token_requests
    with pytest.raises(SignInRequired):  # no new request to the server: it already said no
        source()
    assert oauth.token_requests == requests


def test_no_tokens_stored_asks_to_sign_in(oauth: OAuth2TestServer, tmp_path: Path) -> None:
    source = TokenSource(settings_for(account(oauth)), TokenStore(tmp_path, backend="file"))
    with pytest.raises(SignInRequired, match="has no stored OAuth2 tokens; sign in again: fastpoplib auth login --account work"):
        source()


def test_http_to_a_remote_host_is_refused() -> None:
    acct = types.SimpleNamespace(
        name="x",
        oauth2_provider="custom",
        oauth2_client_id="c",
        oauth2_scope="s",
        oauth2_issuer="http://login.example.com",
        oauth2_client_secret=None,
        oauth2_tenant=None,
        oauth2_token_endpoint=None,
        oauth2_device_endpoint=None,
        oauth2_authorization_endpoint=None,
    )
    with pytest.raises(ValueError, match="must be an https:// URL"):
        settings_for(acct)


def test_presets_give_the_provider_endpoints_and_scopes() -> None:
    base = dict.fromkeys(
        ["oauth2_client_secret", "oauth2_scope", "oauth2_issuer", "oauth2_token_endpoint", "oauth2_device_endpoint", "oauth2_authorization_endpoint"]
    )
    ms = settings_for(types.SimpleNamespace(name="m", oauth2_provider="microsoft", oauth2_client_id="id", oauth2_tenant="consumers", **base))
    assert ms.token_endpoint == "https://login.microsoftonline.com/consumers/oauth2/v2.0/token"
    assert ms.device_endpoint == "https://login.microsoftonline.com/consumers/oauth2/v2.0/devicecode"
    assert "https://outlook.office.com/POP.AccessAsUser.All" in ms.scope.split() and "offline_access" in ms.scope.split()
    assert "https://outlook.office.com/IMAP.AccessAsUser.All" in ms.scope.split()
    google = settings_for(types.SimpleNamespace(name="g", oauth2_provider="google", oauth2_client_id="id", oauth2_tenant=None, **base))
    assert google.scope == "https://mail.google.com/" and google.token_endpoint == "https://oauth2.googleapis.com/token"


@pytest.mark.parametrize("mechanism", ["XOAUTH2", "OAUTHBEARER"])
def test_login_with_a_source_uses_what_capa_offers(oauth: OAuth2TestServer, tmp_path: Path, mechanism: str) -> None:
    source = signed_in(oauth, tmp_path)
    with POP3TestServer(sasl=[mechanism], oauth2_tokens={"user": source()}) as pop_server:
        with fastpoplib.POP3(pop_server.host, pop_server.port) as pop:
            pop.login("user", oauth2=source, allow_insecure=True)
            assert pop.auth_mechanism == mechanism


def test_long_token_goes_after_the_continuation(oauth: OAuth2TestServer, tmp_path: Path) -> None:
    oauth.access_token_length = 5000  # Microsoft's exceed 4,096 characters
    source = signed_in(oauth, tmp_path)
    token = source()
    assert len(token) == 5000
    with POP3TestServer(sasl=["XOAUTH2"], oauth2_tokens={"user": token}) as pop_server:
        with fastpoplib.POP3(pop_server.host, pop_server.port) as pop:
            pop.login("user", oauth2=source, allow_insecure=True)
        lines = pop_server.sessions[0].commands
    assert lines[lines.index(b"AUTH XOAUTH2") + 1].startswith(b"dXNlcj")  # "user=" in base64, on its own line


def test_token_refused_before_its_announced_expiry_is_refreshed_once(oauth: OAuth2TestServer, tmp_path: Path) -> None:
    source = signed_in(oauth, tmp_path)
    stale = source()
    oauth.expire_access_tokens()
    with POP3TestServer(sasl=["XOAUTH2"], oauth2_tokens={"user": "not-yet-known"}) as pop_server:
        refresh = _grants.refresh

        def refresh_and_tell_pop_server(settings: Any, refresh_token: str) -> Any:
            response = refresh(settings, refresh_token)
            pop_server.oauth2_tokens = {"user": response["access_token"]}  # the resource server learns it
            return response

        _grants.refresh = refresh_and_tell_pop_server  # type: ignore[assignment]
        try:
            with fastpoplib.POP3(pop_server.host, pop_server.port) as pop:
                pop.login("user", oauth2=source, allow_insecure=True)
        finally:
            _grants.refresh = refresh  # type: ignore[assignment]
    assert oauth.refresh_count == 1 and source() != stale


def test_plain_callable_source_and_errors(tmp_path: Path) -> None:
    with POP3TestServer(sasl=["XOAUTH2"], oauth2_tokens={"user": "tok"}) as pop_server:
        with fastpoplib.POP3(pop_server.host, pop_server.port) as pop:
            pop.login("user", oauth2=lambda: "tok", allow_insecure=True)
        with fastpoplib.POP3(pop_server.host, pop_server.port) as pop:
            with pytest.raises(fastpoplib.AuthenticationError):
                pop.login("user", oauth2=lambda: "wrong", allow_insecure=True)
        with fastpoplib.POP3(pop_server.host, pop_server.port) as pop:
            with pytest.raises(ValueError, match="exactly one"):
                pop.login("user", "pw", oauth2=lambda: "tok")
            with pytest.raises(TypeError, match="not a non-empty str"):
                pop.login("user", oauth2=lambda: None, allow_insecure=True)  # type: ignore[arg-type,return-value]


@pytest.mark.asyncio
async def test_async_login_runs_the_source_off_the_event_loop() -> None:
    loop_threads: list[int] = []

    def source() -> str:
        loop_threads.append(threading.get_ident())
        return "tok"

    with POP3TestServer(sasl=["OAUTHBEARER"], oauth2_tokens={"user": "tok"}) as pop_server:
        async with fastpoplib.AsyncPOP3.connect(pop_server.host, pop_server.port) as pop:
            await pop.login("user", oauth2=source, allow_insecure=True)
            assert pop.auth_mechanism == "OAUTHBEARER"
    assert loop_threads and loop_threads[0] != threading.get_ident()



def test_keyring_is_used_when_a_backend_works_else_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    keyring = pytest.importorskip("keyring")
    from keyring.backend import KeyringBackend
    from keyring.backends import fail

    class Memory(KeyringBackend):
        priority = 1  # type: ignore[assignment]

        def __init__(self) -> None:
            super().__init__()
            self.data: dict[tuple[str, str], str] = {}

        def get_password(self, service: str, username: str) -> Any:
            return self.data.get((service, username))

        def set_password(self, service: str, username: str, password: str) -> None:
            self.data[(service, username)] = password

        def delete_password(self, service: str, username: str) -> None:
            del self.data[(service, username)]

    monkeypatch.delenv("FASTPOPLIB_TOKEN_STORE", raising=False)
    settings = types.SimpleNamespace(client_id="c", token_endpoint="http://127.0.0.1/t", scope="s", refresh_lifetime=None)
    record = record_from(settings, {"access_token": "at-secret", "refresh_token": "rt-secret", "expires_in": 3600})  # type: ignore[arg-type]
    previous = keyring.get_keyring()
    memory = Memory()
    try:
        keyring.set_keyring(memory)
        store = TokenStore(tmp_path / "state")
        assert store.kind == "keyring"
        store.save("a", record)
        assert store.load("a") == record
        assert not (tmp_path / "state").exists() or not list((tmp_path / "state").glob("*.json"))
        assert list(memory.data) == [("fastpoplib-oauth2", "a")]
        assert store.delete("a") and store.load("a") is None and not store.delete("a")
        keyring.set_keyring(fail.Keyring())
        store = TokenStore(tmp_path / "state")
        assert store.kind.startswith("file in ")
        store.save("a", record)
        assert store.load("a") == record and not memory.data
    finally:
        keyring.set_keyring(previous)


def test_account_state_for_the_status_command(oauth: OAuth2TestServer, tmp_path: Path) -> None:
    from fastpoplib.oauth2 import account_state

    empty = TokenStore(tmp_path / "empty", backend="file")
    assert account_state(account(oauth), empty) == "not signed in (fastpoplib auth login --account work)"
    source = signed_in(oauth, tmp_path)
    line = account_state(account(oauth), source.store)
    assert line.startswith("signed in; access token valid for 60 min; refresh token stored")
    assert source() not in line


def test_browser_redirect_with_another_state_is_ignored(oauth: OAuth2TestServer) -> None:
    """A request to the loopback receiver that does not carry our state (another local
    program guessing the port) gets 400 and does not end the sign-in."""
    import urllib.error
    import urllib.parse
    import urllib.request

    oauth.browser_user = "user"
    settings = _grants.discover(settings_for(account(oauth)))
    forged: list[int] = []

    def browser(url: str) -> None:
        redirect = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["redirect_uri"][0]
        try:
            urllib.request.urlopen(redirect + "?code=forged&state=wrong", timeout=10)
        except urllib.error.HTTPError as exc:
            forged.append(exc.code)
        urllib.request.urlopen(url, timeout=10).read()

    response = _grants.browser_login(settings, lambda text: None, open_browser=browser)
    assert forged == [400]
    assert response["access_token"] in oauth.issued_tokens()


def test_refused_device_request_hints_at_the_browser_for_google(oauth: OAuth2TestServer) -> None:
    from fastpoplib.oauth2 import OAuth2Error, Settings

    settings = Settings(
        name="g",
        provider="google",
        client_id="unknown-client",
        client_secret=None,
        scope="https://mail.google.com/",
        token_endpoint=f"{oauth.issuer}/token",
        device_endpoint=f"{oauth.issuer}/device_authorization",
    )
    with pytest.raises(OAuth2Error, match="refused: invalid_client; Google allows its mail scope only with --browser"):
        _grants.device_login(settings, lambda text: None, sleep=lambda s: None)


def test_server_echoing_the_refresh_token_in_its_error_does_not_leak_it() -> None:
    error = _grants.OAuthError("invalid_grant", "refresh token rt-SECRET-123 was revoked\x1b[2J")
    exc = _grants._what(error, "https://user:pw@login.example.com/token", "rt-SECRET-123")
    assert isinstance(exc, _grants.InvalidGrant)
    assert str(exc) == "login.example.com refused the grant: invalid_grant (refresh token **** was revoked?[2J)"


def test_server_echoing_the_refresh_token_in_its_error_code_does_not_leak_it() -> None:
    error = _grants.OAuthError("bad_rt-SECRET-123", "")
    exc = _grants._what(error, "https://login.example.com/token", "rt-SECRET-123")
    assert str(exc) == "login.example.com answered bad_****"


def test_an_http_error_without_an_oauth2_body_says_the_server_answered() -> None:
    request = _grants.httpx2.Request("POST", "https://login.example.com/token")
    response = _grants.httpx2.Response(500, request=request, text="<html>oops</html>")
    error = _grants.httpx2.HTTPStatusError("500", request=request, response=response)
    exc = _grants._what(error, "https://login.example.com/token")
    assert str(exc) == "login.example.com answered HTTP 500, not an OAuth2 response; check the endpoint, or try again later"


def test_account_repr_hides_the_client_secret() -> None:
    from fastpoplib._retriever import Account

    acct = Account(host="h", user="u", auth="oauth2", oauth2_provider="google", oauth2_client_id="id", oauth2_client_secret="GOCSPX-secret")
    assert "GOCSPX-secret" not in repr(acct)
    assert "GOCSPX-secret" not in repr(settings_for(acct))


def test_token_lock_held_too_long_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fastpoplib._store import LockBusy
    from fastpoplib.oauth2 import _tokens

    monkeypatch.setattr(_tokens, "LOCK_WAIT", 0.3)
    holder, waiter = TokenStore(tmp_path, backend="file"), TokenStore(tmp_path, backend="file")
    with holder.locked("work"):
        with pytest.raises(LockBusy, match="another run held the OAuth2 token lock of account 'work' for over 0.3 s; try again"):
            with waiter.locked("work"):
                pass
    with waiter.locked("work"):  # released: free again
        pass


@pytest.mark.parametrize(("expires_in", "kept"), [("3600", 3600), (-5, 0), (10**12, 86400), (float("nan"), 3600), ("soon", 3600), (None, 3600)])
def test_lying_expires_in_is_bounded(expires_in: Any, kept: float) -> None:
    settings = types.SimpleNamespace(client_id="c", token_endpoint="http://127.0.0.1/t", scope="s", refresh_lifetime=None)
    response = {"access_token": "at", "refresh_token": "rt", "refresh_token_expires_in": float("inf")}
    if expires_in is not None:
        response["expires_in"] = expires_in
    record = record_from(settings, response, now=1000.0)  # type: ignore[arg-type]
    assert record.expires_at == 1000.0 + kept
    assert record.refresh_expires_at is None


def test_source_offering_the_same_token_again_is_not_retried() -> None:
    class Stubborn:
        def __init__(self) -> None:
            self.invalidated: list[str] = []

        def __call__(self) -> str:
            return "wrong"

        def invalidate(self, token: str) -> None:
            self.invalidated.append(token)

    source = Stubborn()
    with POP3TestServer(sasl=["XOAUTH2"], oauth2_tokens={"user": "right"}) as pop_server:
        with fastpoplib.POP3(pop_server.host, pop_server.port) as pop:
            with pytest.raises(fastpoplib.AuthenticationError):
                pop.login("user", oauth2=source, allow_insecure=True)
        auth_lines = [line for line in pop_server.sessions[0].commands if line.startswith(b"AUTH")]
    assert source.invalidated == ["wrong"] and len(auth_lines) == 1


@pytest.mark.parametrize("writable", ["fastpoplib"])
def test_a_token_directory_below_a_directory_others_may_write_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, writable: str
) -> None:
    """Another user who may write ``$XDG_STATE_HOME/fastpoplib`` could swap the token
    directory, and the refresh tokens in it, for their own: loading and saving refuse."""
    from fastpoplib.oauth2._tokens import TokenRecord, TokenStoreError, state_dir

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    store = TokenStore(backend="file")
    assert store.directory == state_dir() == tmp_path / "fastpoplib" / "oauth2"
    record = TokenRecord("client", "https://idp.test/token", Secret("access"), Secret("refresh"), expires_at=1.0)
    store.save("work", record)
    assert store.load("work") is not None
    (tmp_path / writable).chmod(0o777)
    with pytest.raises(TokenStoreError, match=r"writable by other users \(mode 0777\)"):
        store.load("work")
    with pytest.raises(TokenStoreError, match="writable by other users"):
        store.save("work", record)
    (tmp_path / writable).chmod(0o700)
    assert store.load("work") is not None
