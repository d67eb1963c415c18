"""`fastpoplib fetch` on the first try, run as a person runs it (in a subprocess, on a
pseudo-terminal where a terminal matters): the password prompt, certificate errors and
pinning, SSL_CERT_FILE/SSL_CERT_DIR, TLS on the wrong port, the progress line, and one
failed login for a wrong password over TLS."""

from __future__ import annotations

import hashlib
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

import fastpoplib
import pytest
from fastpoplib import _progress
from fastpoplib.testing import Fault, POP3TestServer, sample_mailbox
from fastpoplib.testing.certs import TLSCertificates
from support.cli import ENV, account, cli, maildir_messages, screen

pexpect = pytest.importorskip("pexpect", reason="the terminal tests drive the CLI through pexpect")

SUBJECT = "fastpoplib self-signed test"


def fetch_on_terminal(*args: str, env: dict[str, str] | None = None) -> Any:
    """`fastpoplib fetch ...` with stdin, stdout and stderr on a pseudo-terminal (its
    controlling terminal: getpass reads /dev/tty)."""
    child = pexpect.spawn(
        sys.executable,
        ["-m", "fastpoplib", "fetch", *args],
        env=env or ENV,
        encoding="utf-8",
        timeout=60,
        dimensions=(24, 200),
    )
    return child


def cli_with(env: dict[str, str], *args: str, **kw: Any) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fastpoplib", *args], capture_output=True, text=True, env=env, timeout=120, check=False, **kw
    )


def without_password(srv: Any) -> list[str]:
    """account() without its --password-env."""
    args = account(srv)
    i = args.index("--password-env")
    return args[:i] + args[i + 2 :]


@pytest.fixture
def home(tmp_path: Path) -> dict[str, str]:
    """An environment whose HOME has no ~/.netrc."""
    (tmp_path / "home").mkdir()
    return dict(ENV, HOME=str(tmp_path / "home"))


# -- 11: typing the password ---------------------------------------------------------------------


def test_password_is_asked_on_a_terminal_without_echo(tmp_path: Path, home: dict[str, str]) -> None:
    md = tmp_path / "md"
    with POP3TestServer(mailbox=sample_mailbox(3), users={"user": "typed-Secret-42"}, stls=False) as srv:
        child = fetch_on_terminal(*without_password(srv), "--maildir", str(md), env=home)
        child.expect(r"Password for user@127\.0\.0\.1:\d+: ")
        child.sendline("typed-Secret-42")
        child.expect(pexpect.EOF)
        after_prompt = child.before
        child.close()
        assert child.exitstatus == 0, after_prompt
        assert "typed-Secret-42" not in after_prompt  # not echoed
        assert len(maildir_messages(md)) == 3


def test_a_wrong_typed_password_is_a_login_failure(tmp_path: Path, home: dict[str, str]) -> None:
    with POP3TestServer(mailbox=sample_mailbox(1), stls=False) as srv:
        child = fetch_on_terminal(*without_password(srv), "--maildir", str(tmp_path / "md"), env=home)
        child.expect("Password for ")
        child.sendline("not-it")
        child.expect(pexpect.EOF)
        output = child.before
        child.close()
    assert child.exitstatus == 3, output
    assert "not-it" not in output


def test_without_a_terminal_the_error_names_the_password_sources(tmp_path: Path, home: dict[str, str]) -> None:
    with POP3TestServer(mailbox=sample_mailbox(1), stls=False) as srv:
        run = cli_with(home, "fetch", *without_password(srv), "--maildir", str(tmp_path / "md"), stdin=subprocess.DEVNULL)
    assert run.returncode == 2, run.stderr
    for option in ("--password-env", "--password-command", "netrc", "terminal"):
        assert option in run.stderr
    assert "Traceback" not in run.stderr


def test_a_password_option_is_explained_and_not_echoed(tmp_path: Path) -> None:
    run = cli("fetch", "--host", "127.0.0.1", "--user", "u", "--password", "s3cret-value")
    assert run.returncode == 2
    assert "there is no --password option" in run.stderr and "--password-env" in run.stderr
    assert "s3cret-value" not in run.stderr + run.stdout


# -- 12: self-signed servers ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path, str]]:
    """``openssl req -x509`` (CA:TRUE, the usual way to make one) for 127.0.0.1: (cert, key,
    SHA-256 fingerprint as ``SHA256:AB:...``)."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    d = tmp_path_factory.mktemp("selfsigned")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={SUBJECT}",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-addext", "basicConstraints=critical,CA:TRUE",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    der = ssl.PEM_cert_to_DER_cert(cert.read_text())
    digest = hashlib.sha256(der).hexdigest().upper()
    yield cert, key, "SHA256:" + ":".join(digest[i : i + 2] for i in range(0, 64, 2))


def self_signed_server(self_signed: tuple[Path, Path, str], **kw: Any) -> POP3TestServer:
    cert, key, _ = self_signed
    kw.setdefault("tls", "implicit")
    certificates = TLSCertificates.from_files(cert, key, ca_pem=cert.read_bytes())
    return POP3TestServer(mailbox=sample_mailbox(2), certificates=certificates, **kw)


def tls_account(srv: Any, tls: str = "implicit") -> list[str]:
    args = account(srv)
    args[args.index("--tls") + 1] = tls
    args.remove("--insecure")
    return args


def test_certificate_error_shows_the_fingerprint_and_pinning_it_works(
    tmp_path: Path, self_signed: tuple[Path, Path, str]
) -> None:
    fingerprint = self_signed[2]
    with self_signed_server(self_signed) as srv:
        refused = cli("fetch", *tls_account(srv), "--maildir", str(tmp_path / "md"))
        assert refused.returncode == 4, refused.stderr
        assert fingerprint in refused.stderr and f"CN={SUBJECT}" in refused.stderr
        assert "--fingerprint" in refused.stderr and "--cafile" in refused.stderr
        pinned = cli("fetch", *tls_account(srv), "--fingerprint", fingerprint, "--maildir", str(tmp_path / "md"))
        assert pinned.returncode == 0, pinned.stderr
        assert len(maildir_messages(tmp_path / "md")) == 2
        other = "SHA256:" + "00:" * 31 + "00"
        wrong = cli("fetch", *tls_account(srv), "--fingerprint", other, "--maildir", str(tmp_path / "md2"))
        assert wrong.returncode == 4
        assert "not the pinned certificate" in wrong.stderr and fingerprint in wrong.stderr


def test_fingerprint_pins_the_stls_certificate_too(tmp_path: Path, self_signed: tuple[Path, Path, str]) -> None:
    with self_signed_server(self_signed, tls="none", stls=True) as srv:
        run = cli("fetch", *tls_account(srv, "starttls"), "--fingerprint", self_signed[2].lower(), "--maildir", str(tmp_path / "md"))
    assert run.returncode == 0, run.stderr
    assert len(maildir_messages(tmp_path / "md")) == 2


def test_a_malformed_fingerprint_is_a_usage_error(tmp_path: Path) -> None:
    run = cli("fetch", "--host", "127.0.0.1", "--user", "u", "--fingerprint", "AB:CD", "--password-env", "POP_PW")
    assert run.returncode == 2 and "64 hex digits" in run.stderr, run.stderr


def test_library_fingerprint_keyword(self_signed: tuple[Path, Path, str]) -> None:
    with self_signed_server(self_signed) as srv:
        with pytest.raises(fastpoplib.CertificateVerificationError) as info:
            fastpoplib.POP3_SSL(srv.host, srv.port, timeout=10)
        text = str(info.value)
        assert self_signed[2] in text and "fingerprint=" in text and "--" not in text
        p = fastpoplib.POP3_SSL(srv.host, srv.port, timeout=10, fingerprint=self_signed[2])
        p.login("user", "password")
        assert p.stat()[0] == 2
        p.quit()
        with pytest.raises(ValueError):
            fastpoplib.POP3_SSL(srv.host, srv.port, timeout=10, fingerprint="SHA256:12")
        with pytest.raises(ValueError):
            fastpoplib.POP3_SSL(srv.host, srv.port, context=ssl.create_default_context(), fingerprint=self_signed[2])


CHECK_TRUST = """
import poplib, ssl, sys
import fastpoplib
host, port = sys.argv[1], int(sys.argv[2])
stdlib = poplib.POP3_SSL(host, port, timeout=10, context=ssl.create_default_context())
ours = fastpoplib.POP3_SSL(host, port, timeout=10)  # unchanged poplib code: no cafile=
for pop in (stdlib, ours):
    pop.user("user"); pop.pass_("password")
print(stdlib.stat()[0], ours.stat()[0])
stdlib.quit(); ours.quit()
"""


@pytest.mark.parametrize("variable", ["SSL_CERT_FILE", "SSL_CERT_DIR"])
def test_ssl_cert_file_and_dir_are_honoured_like_the_stdlib(
    tmp_path: Path, self_signed: tuple[Path, Path, str], variable: str
) -> None:
    cert = self_signed[0]
    if variable == "SSL_CERT_FILE":
        where = str(cert)
    else:
        certs = tmp_path / "certs"
        certs.mkdir()
        shutil.copy(cert, certs / "server.pem")
        subprocess.run(["openssl", "rehash", str(certs)], check=True, capture_output=True, timeout=60)
        where = str(certs)
    env = {k: v for k, v in ENV.items() if k not in ("SSL_CERT_FILE", "SSL_CERT_DIR")}
    with self_signed_server(self_signed, allow_concurrent=True) as srv:
        run = subprocess.run(
            [sys.executable, "-c", CHECK_TRUST, srv.host, str(srv.port)],
            env={**env, variable: where}, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
        assert run.stdout.split() == ["2", "2"]
        fetched = cli_with({**env, variable: where}, "fetch", *tls_account(srv), "--maildir", str(tmp_path / "md"))
        assert fetched.returncode == 0, fetched.stderr
        # Without the variable, the same certificate is refused by both.
        refused = subprocess.run(
            [sys.executable, "-c", CHECK_TRUST, srv.host, str(srv.port)],
            env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert refused.returncode != 0 and "CERTIFICATE_VERIFY_FAILED" in refused.stderr


READ_ONCE = """
import os, sys
import fastpoplib
host, port, cert = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def connect(**kw):
    try:
        fastpoplib.POP3_SSL(host, port, timeout=10, **kw).close()
        return "ok"
    except fastpoplib.CertificateVerificationError:
        return "refused"
first = connect()
os.environ["SSL_CERT_FILE"] = cert  # too late: the default trust is loaded
print(first, connect())
"""

PIN_BEATS_TRUST = """
import sys
import fastpoplib
host, port = sys.argv[1], int(sys.argv[2])
fastpoplib.POP3_SSL(host, port, timeout=10).close()  # trusted through SSL_CERT_FILE
try:
    fastpoplib.POP3_SSL(host, port, timeout=10, fingerprint="SHA256:" + "AB" * 32)
except fastpoplib.CertificateVerificationError as exc:
    print("refused:", exc)
"""


def test_ssl_cert_variables_are_read_once_per_process(self_signed: tuple[Path, Path, str]) -> None:
    env = {k: v for k, v in ENV.items() if k not in ("SSL_CERT_FILE", "SSL_CERT_DIR")}
    with self_signed_server(self_signed, allow_concurrent=True) as srv:
        late = subprocess.run(
            [sys.executable, "-c", READ_ONCE, srv.host, str(srv.port), str(self_signed[0])],
            env=env, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert late.stdout.split() == ["refused", "refused"], late.stderr
        # A pin is the only certificate accepted, even where the default trust accepts another.
        pinned = subprocess.run(
            [sys.executable, "-c", PIN_BEATS_TRUST, srv.host, str(srv.port)],
            env={**env, "SSL_CERT_FILE": str(self_signed[0])}, capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert pinned.returncode == 0, pinned.stderr
        assert "refused:" in pinned.stdout and "not the pinned certificate" in pinned.stdout


# -- 15: TLS on a plain-text port ----------------------------------------------------------------


def test_tls_on_a_plain_port_says_what_to_try(tmp_path: Path) -> None:
    with POP3TestServer(mailbox=sample_mailbox(1), stls=False) as srv:
        run = cli("fetch", *tls_account(srv), "--maildir", str(tmp_path / "md"))
        assert run.returncode == 4, run.stderr
        assert "answered in plain text" in run.stderr and "--tls starttls" in run.stderr
        assert "InvalidContentType" not in run.stderr
        for context in (None, ssl.create_default_context()):
            with pytest.raises(fastpoplib.TLSError) as info:
                fastpoplib.POP3_SSL(srv.host, srv.port, timeout=10, context=context)
            assert "answered in plain text" in str(info.value) and "--tls" not in str(info.value), info.value


# -- 14: progress without an optional dependency -------------------------------------------------


def test_progress_is_shown_on_a_terminal_and_erased(tmp_path: Path) -> None:
    slow = Fault.stall(0.05, on="RETR", times=None)
    with POP3TestServer(mailbox=sample_mailbox(20), stls=False, faults=[slow]) as srv:
        child = fetch_on_terminal(*account(srv), "--maildir", str(tmp_path / "md"))
        child.expect(pexpect.EOF)
        output = child.before
        child.close()
    assert child.exitstatus == 0, output
    assert re.search(r"fetching: \d+/20 messages, [\d.]+ (B|kB) of [\d.]+ kB", output), output
    assert "\x1b[K" in output
    shown = [line for line in screen(output.replace("\x1b[K", "\x1b")) if line]
    assert not any("fetching:" in line for line in shown), shown  # erased before the summary
    assert any("20 new message(s)" in line for line in shown), shown


def test_no_progress_when_quiet_or_not_a_terminal(tmp_path: Path) -> None:
    slow = Fault.stall(0.02, on="RETR", times=None)
    with POP3TestServer(mailbox=sample_mailbox(5), stls=False, faults=[slow]) as srv:
        child = fetch_on_terminal(*account(srv), "-q", "--maildir", str(tmp_path / "md"))
        child.expect(pexpect.EOF)
        quiet = child.before
        child.close()
        assert child.exitstatus == 0 and quiet.strip() == "", quiet
        piped = cli("fetch", *account(srv), "--maildir", str(tmp_path / "md2"))
    assert piped.returncode == 0 and "fetching" not in piped.stderr and "\x1b" not in piped.stderr


class FakeTerminal:
    def __init__(self) -> None:
        self.text = ""

    def write(self, text: str) -> None:
        self.text += text

    def flush(self) -> None:
        pass

    def fileno(self) -> int:
        raise ValueError("not a real terminal")


def test_time_estimate_is_sane_or_absent() -> None:
    clock = [100.0]
    bar = _progress.TerminalProgress(FakeTerminal())  # type: ignore[arg-type]
    bar.now = lambda: clock[0]
    bar.expect(1000 * 4096, 1000)
    bar.advance(4096)  # the first message arrives quickly after a slow login: no wild guess
    clock[0] += 0.01
    assert "left" not in bar.line()
    for _ in range(149):
        clock[0] += 0.02  # then 50 messages a second
        bar.advance(4096)
    line = bar.line()
    assert "150/1000 messages" in line
    seconds = re.search(r"about (\d+) s left", line)
    assert seconds and 16 <= int(seconds.group(1)) <= 18, line  # 850 messages at ~50/s


# -- 13: one failed login for a wrong password -----------------------------------------------------


@pytest.fixture
def dovecot_hashed() -> Iterator[Any]:
    """Dovecot as commonly configured: PLAIN, LOGIN and CRAM-MD5 offered, passwords stored
    hashed (SHA512-CRYPT), so CRAM-MD5 cannot work. Not under tmp_path: Dovecot's unprivileged
    processes must reach the files."""
    from support.dovecot import InteropDovecot, _require_dovecot
    from fastpoplib.testing.dovecot import DOVEADM

    _require_dovecot()
    root = Path(tempfile.mkdtemp(prefix="fastpoplib-dovecot-"))
    server = InteropDovecot(root)
    with open(server.conf, "a") as conf:
        conf.write("auth_mechanisms = plain login cram-md5\n")
    server.start()
    try:
        server.add_user("basic", [b"Subject: one\r\n\r\nbody\r\n"])
        hashed = subprocess.run(
            [DOVEADM, "pw", "-s", "SHA512-CRYPT", "-p", "pw-Right-1"], capture_output=True, text=True, check=True, timeout=60
        ).stdout.strip()
        users = server.root / "users.passwd"
        users.write_text(users.read_text().replace("{PLAIN}" + server.password, hashed))
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def test_over_tls_a_wrong_password_costs_one_failed_login_on_dovecot(tmp_path: Path, dovecot_hashed: Any) -> None:
    server = dovecot_hashed
    args = ["--host", server.host, "--port", str(server.plain_port), "--tls", "starttls", "--cafile", server.cafile,
            "--user", "basic", "--password-env", "PW", "--maildir", str(tmp_path / "md")]  # fmt: skip
    mark = server.log_mark()
    ok = cli_with(dict(ENV, PW="pw-Right-1"), "fetch", *args)
    assert ok.returncode == 0, ok.stderr
    log = server.wait_for_log("Login: user=<basic>, method=PLAIN", mark)
    assert "auth failed" not in log  # PLAIN first: no CRAM-MD5 refusal before it
    mark = server.log_mark()
    wrong = cli_with(dict(ENV, PW="wrong-pw"), "fetch", *args)
    assert wrong.returncode == 3, wrong.stderr
    assert "wrong-pw" not in wrong.stderr
    assert "(auth failed, 1 attempts" in server.wait_for_log("auth failed", mark)


def test_a_certificate_option_without_tls_is_a_usage_error(tmp_path: Path, self_signed: tuple[Path, Path, str]) -> None:
    """--fingerprint or --cafile with --tls none would check nothing: refused, not ignored."""
    for option in (["--fingerprint", self_signed[2]], ["--cafile", str(self_signed[0])]):
        out = cli("fetch", "--host", "127.0.0.1", "--port", "1", "--user", "u", "--tls", "none", "--insecure", "--password-env", "PW",
                  *option, "--maildir", str(tmp_path / "md"))  # fmt: skip
        assert out.returncode == 2, out.stderr
        assert f"{option[0]} checks the server's TLS certificate, but tls = none uses no TLS" in out.stderr


def test_starttls_against_a_pop3s_port_says_to_use_implicit_tls(tmp_path: Path, self_signed: tuple[Path, Path, str]) -> None:
    with self_signed_server(self_signed) as srv:
        out = cli("fetch", *tls_account(srv, "starttls"), "--timeout", "1", "--maildir", str(tmp_path / "md"))
    assert out.returncode == 4, out.stderr
    assert "no greeting from the server within 1 s" in out.stderr and "use --tls implicit" in out.stderr


def test_watch_stopped_before_its_first_poll_exits_0(tmp_path: Path, home: dict[str, str]) -> None:
    """SIGTERM while watch still asks for a password (a service manager's stop right after
    its start): nothing has begun, so the same clean exit 0 as later, not death by signal."""
    with POP3TestServer(mailbox=sample_mailbox(1), stls=False) as srv:
        config = tmp_path / "accounts.toml"
        config.write_text(
            f"[[account]]\nhost = '{srv.host}'\nport = {srv.port}\nuser = 'user'\ntls = 'none'\n"
            f"insecure = true\nmaildir = '{tmp_path / 'md'}'\n"
        )
        child = pexpect.spawn(sys.executable, ["-m", "fastpoplib", "watch", "--config", str(config)], env=home, encoding="utf-8", timeout=60)
        child.expect("Password for ")
        child.kill(signal.SIGTERM)
        child.expect(pexpect.EOF)
        child.close()
    assert child.exitstatus == 0 and child.signalstatus is None
