"""``fastpoplib auth login|status|logout`` as a user runs them, against the shipped OAuth2
authorization server: the device grant (approve, slow_down, access_denied, expiry), the
browser sign-in (authorization code + PKCE through a loopback redirect, the "browser" being a
program named by $BROWSER), status and logout, and the message when the oauth extra is
missing. No token is ever printed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import time
import types
from pathlib import Path
from typing import Any, Iterator

import pytest

pytest.importorskip("authlib", reason="the oauth and testing extras are part of the test extra")
pytest.importorskip("flask", reason="the testing extra")

from fastpoplib.testing.oauth_server import OAuth2TestServer  # noqa: E402

CODE_LINE = re.compile(r"To sign in, open (\S+) and enter the code (\S+)")


@pytest.fixture
def oauth() -> Iterator[OAuth2TestServer]:
    with OAuth2TestServer() as srv:
        srv.add_client("mail-client")
        yield srv


def write_config(tmp_path: Path, oauth: OAuth2TestServer, port: int = 1, **extra: str) -> Path:
    """Account "work" (OAuth2 at ``oauth``; ``extra`` keys replace or add settings) and
    account "other" (a password)."""
    keys = {
        "auth": "oauth2",
        "oauth2_provider": "custom",
        "oauth2_client_id": "mail-client",
        "oauth2_scope": "mail",
        "oauth2_issuer": oauth.issuer,
        **extra,
    }
    config = tmp_path / "fetch.toml"
    config.write_text(
        textwrap.dedent(
            f"""\
            [[account]]
            name = "work"
            host = "127.0.0.1"
            port = {port}
            user = "user"
            tls = "none"
            insecure = true
            """
        )
        + "".join(f'{k} = "{v}"\n' for k, v in keys.items())
        + '\n[[account]]\nname = "other"\nhost = "127.0.0.1"\nuser = "u"\npassword_env = "X"\n'
    )
    return config


def env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return dict(os.environ, XDG_STATE_HOME=str(tmp_path / "state"), FASTPOPLIB_TOKEN_STORE="file", **extra)


def cli(tmp_path: Path, *args: str, **kw: Any) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fastpoplib", *args], capture_output=True, text=True, env=kw.pop("env", env(tmp_path)), timeout=120, check=False, **kw
    )


def device_login(tmp_path: Path, config: Path) -> tuple[subprocess.Popen, str]:
    """Starts ``auth login``; returns the process and the user code it printed."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "fastpoplib", "auth", "login", "--config", str(config), "--account", "work"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env(tmp_path),
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = CODE_LINE.search(line)
    assert match, line + proc.stderr.read() if proc.stderr else line
    return proc, match.group(2)


def finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out, err


def no_token_in(oauth: OAuth2TestServer, *texts: str) -> None:
    for token in oauth.issued_tokens():
        for text in texts:
            assert token not in text


def test_device_login_then_status_then_logout(oauth: OAuth2TestServer, tmp_path: Path) -> None:
    config = write_config(tmp_path, oauth)
    proc, code = device_login(tmp_path, config)
    oauth.approve(code, user="user")
    rc, out, err = finish(proc)
    assert rc == 0, out + err
    assert "work: signed in; tokens stored in the file in" in out
    status = cli(tmp_path, "auth", "status", "--config", str(config))
    assert status.returncode == 0, status.stdout + status.stderr
    assert "work: signed in; access token valid for 60 min" in status.stdout
    assert "other: signs in with a password" in status.stdout
    no_token_in(oauth, out, err, status.stdout, status.stderr)
    assert oauth.active_refresh_tokens()
    logout = cli(tmp_path, "auth", "logout", "--config", str(config), "--account", "work")
    assert logout.returncode == 0 and "signed out" in logout.stdout
    assert "work: the provider revoked the sign-in" in logout.stdout  # RFC 7009, found by discovery
    assert oauth.active_refresh_tokens() == []
    status = cli(tmp_path, "auth", "status", "--config", str(config), "--account", "work")
    assert status.returncode == 3
    assert "work: not signed in (fastpoplib auth login --account work)" in status.stdout
    assert not list((tmp_path / "state" / "fastpoplib" / "oauth2").glob("*.json"))


def test_slow_down_adds_five_seconds_to_the_interval(oauth: OAuth2TestServer, tmp_path: Path) -> None:
    oauth.slow_downs = 1
    proc, code = device_login(tmp_path, write_config(tmp_path, oauth))
    deadline = time.monotonic() + 30
    while not oauth.poll_times:  # the first poll is answered slow_down
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    oauth.approve(code, user="user")
    rc, out, err = finish(proc)
    assert rc == 0, out + err
    assert len(oauth.poll_times) == 2
    assert oauth.poll_times[1] - oauth.poll_times[0] >= 5.9  # RFC 8628 §3.5: the 1 s interval, plus 5 s


def test_user_denies(oauth: OAuth2TestServer, tmp_path: Path) -> None:
    proc, code = device_login(tmp_path, write_config(tmp_path, oauth))
    oauth.deny(code)
    rc, out, err = finish(proc)
    assert rc == 3
    assert "sign-in failed: the sign-in was refused at the authorization server" in err
    assert "Traceback" not in err


def test_code_expires_before_approval(oauth: OAuth2TestServer, tmp_path: Path) -> None:
    oauth.device_lifetime = 2
    proc, _ = device_login(tmp_path, write_config(tmp_path, oauth))
    rc, out, err = finish(proc)
    assert rc == 3
    assert "the code expired before you approved it; run fastpoplib auth login again" in err
    assert "Traceback" not in err


BROWSER = """\
import sys, urllib.request
urllib.request.urlopen(sys.argv[1], timeout=30).read()  # follows the redirect to the loopback
"""


def test_browser_login_with_pkce_and_loopback_redirect(oauth: OAuth2TestServer, tmp_path: Path) -> None:
    oauth.browser_user = "user"
    script = tmp_path / "browser.py"
    script.write_text(BROWSER)
    config = write_config(tmp_path, oauth)
    browser = env(tmp_path, BROWSER=f"{sys.executable} {script} %s")
    result = cli(tmp_path, "auth", "login", "--config", str(config), "--account", "work", "--browser", env=browser)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "code_challenge_method=S256" in result.stdout and "redirect_uri=http%3A%2F%2F127.0.0.1%3A" in result.stdout
    assert "work: signed in" in result.stdout
    no_token_in(oauth, result.stdout, result.stderr)
    assert len(oauth.issued_tokens()) == 2  # an access and a refresh token


def test_browser_login_refused(oauth: OAuth2TestServer, tmp_path: Path) -> None:
    oauth.browser_user = None
    script = tmp_path / "browser.py"
    script.write_text(BROWSER)
    config = write_config(tmp_path, oauth)
    browser = env(tmp_path, BROWSER=f"{sys.executable} {script} %s")
    result = cli(tmp_path, "auth", "login", "--config", str(config), "--account", "work", "--browser", env=browser)
    assert result.returncode == 3
    assert "sign-in failed: the sign-in was refused: access_denied" in result.stderr


def test_missing_oauth_extra_names_it(oauth: OAuth2TestServer, tmp_path: Path) -> None:
    config = write_config(tmp_path, oauth)
    code = "import sys; sys.modules['authlib'] = None; from fastpoplib.cli import main; sys.exit(main(sys.argv[1:]))"
    result = subprocess.run(
        [sys.executable, "-c", code, "auth", "login", "--config", str(config), "--account", "work"],
        capture_output=True,
        text=True,
        env=env(tmp_path),
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "OAuth2 sign-in needs the oauth extra: pip install 'fastpoplib[oauth]'" in result.stderr


def test_login_of_a_password_account_or_bad_settings_is_a_usage_error(oauth: OAuth2TestServer, tmp_path: Path) -> None:
    config = write_config(tmp_path, oauth)
    result = cli(tmp_path, "auth", "login", "--config", str(config), "--account", "other")
    assert result.returncode == 2 and "has no auth = \"oauth2\"" in result.stderr
    bad = write_config(tmp_path, oauth, oauth2_token_endpoint="http://login.example.com/token")
    result = cli(tmp_path, "auth", "login", "--config", str(bad), "--account", "work")
    assert result.returncode == 2 and "must be an https:// URL" in result.stderr


def test_fetch_without_the_extra_when_a_refresh_is_due_names_it(oauth: OAuth2TestServer, tmp_path: Path) -> None:
    from fastpoplib.oauth2 import TokenStore, record_from, settings_for
    from fastpoplib.testing import POP3TestServer

    with POP3TestServer(sasl=["XOAUTH2"], stls=False) as pop_server:
        config = write_config(tmp_path, oauth, port=pop_server.port)
        acct = types.SimpleNamespace(
            name="work", oauth2_provider="custom", oauth2_client_id="mail-client", oauth2_scope="mail", oauth2_issuer=oauth.issuer,
            **dict.fromkeys(["oauth2_client_secret", "oauth2_tenant", "oauth2_token_endpoint", "oauth2_device_endpoint", "oauth2_authorization_endpoint"]),
        )
        stale = {"access_token": "old", "refresh_token": "r", "expires_in": 10}  # refresh due
        TokenStore(tmp_path / "state" / "fastpoplib" / "oauth2", backend="file").save("work", record_from(settings_for(acct), stale))
        code = "import sys; sys.modules['authlib'] = None; from fastpoplib.cli import main; sys.exit(main(sys.argv[1:]))"
        result = subprocess.run(
            [sys.executable, "-c", code, "fetch", "--config", str(config), "--account", "work", "--maildir", str(tmp_path / "Maildir")],
            capture_output=True,
            text=True,
            env=env(tmp_path),
            timeout=60,
            check=False,
        )
    assert result.returncode == 2, result.stderr
    assert "work: FAILED: OAuth2 needs the oauth extra: pip install 'fastpoplib[oauth]'" in result.stderr


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"auth": "token"}, "auth must be password or oauth2, not 'token'"),
        ({"oauth2_token_command": "echo x"}, 'choose auth = "oauth2" or oauth2_token_command, not both'),
        ({"oauth2_provider": "yahoo"}, "oauth2_provider must be one of microsoft, google, custom, not 'yahoo'"),
    ],
)
def test_bad_oauth2_settings_are_usage_errors(oauth: OAuth2TestServer, tmp_path: Path, extra: dict[str, str], message: str) -> None:
    config = write_config(tmp_path, oauth, **extra)
    result = cli(tmp_path, "fetch", "--config", str(config), "--account", "work", "--maildir", str(tmp_path / "Maildir"))
    assert result.returncode == 2, result.stderr
    assert message in result.stderr


def test_logout_while_another_run_holds_the_token_lock_exits_5(
    oauth: OAuth2TestServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from fastpoplib.cli import main
    from fastpoplib.oauth2 import TokenStore, _tokens

    monkeypatch.setattr(_tokens, "LOCK_WAIT", 0.2)
    for key, value in env(tmp_path).items():
        monkeypatch.setenv(key, value)
    config = write_config(tmp_path, oauth)
    with TokenStore().locked("work"):
        code = main(["auth", "logout", "--config", str(config), "--account", "work"])
    assert code == 5
    assert "another run held the OAuth2 token lock of account 'work'" in capsys.readouterr().err


def test_status_command_shows_the_sign_in_state(oauth: OAuth2TestServer, tmp_path: Path) -> None:
    config = write_config(tmp_path, oauth)
    result = cli(tmp_path, "status", "--config", str(config), "--maildir", str(tmp_path / "Maildir"))
    assert result.returncode == 0, result.stderr
    assert "  sign-in     not signed in (fastpoplib auth login --account work)" in result.stdout
    assert result.stdout.count("sign-in") == 1  # the password account has none
    as_json = cli(tmp_path, "status", "--config", str(config), "--maildir", str(tmp_path / "Maildir"), "--json")
    assert '"sign_in": "not signed in (fastpoplib auth login --account work)"' in as_json.stdout


def test_an_unusable_token_directory_is_a_sentence_before_the_user_is_sent_to_approve(oauth: OAuth2TestServer, tmp_path: Path) -> None:
    """The state directory cannot be made (a file is in the way): said before any sign-in
    the user would approve for nothing, and for logout, without a traceback."""
    config = write_config(tmp_path, oauth)
    blocked = tmp_path / "blocked"
    (blocked / "fastpoplib").parent.mkdir()
    (blocked / "fastpoplib").write_text("a file, not a directory")
    environment = dict(env(tmp_path), XDG_STATE_HOME=str(blocked))
    for command in (["auth", "login"], ["auth", "logout"]):
        out = cli(tmp_path, *command, "--config", str(config), "--account", "work", env=environment)
        assert out.returncode == 2, out.stdout + out.stderr
        assert f"{blocked / 'fastpoplib'} is not a directory; move it away" in out.stderr, out.stderr
        assert "Traceback" not in out.stderr
        assert "enter the code" not in out.stdout
