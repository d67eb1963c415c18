"""What `fastpoplib fetch` prints: on failure the error and its exit code, never a
success-looking summary (with or without -q); the library's log records only when logging is
configured (the CLI: -v)."""

from __future__ import annotations

import socket
import subprocess
import sys

from fastpoplib.testing import Fault, POP3TestServer
from support.cli import ENV, _message, account, cli, spawn, wait_for


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_failed_run_prints_its_error_and_exit_code_and_no_summary(tmp_path):
    args = ["--host", "127.0.0.1", "--port", str(_closed_port()), "--user", "u", "--tls", "none", "--insecure",
            "--password-env", "POP_PW", "--maildir", str(tmp_path / "md")]  # fmt: skip
    for quiet in ([], ["-q"]):
        r = cli("fetch", *args, *quiet)
        assert r.returncode == 4
        assert "FAILED: connection failed while connecting" in r.stderr
        assert "fastpoplib: exit code 4: connection or TLS failure" in r.stderr
        assert "new message(s)" not in r.stdout and "done in" not in r.stdout
        assert r.stdout == ""


def test_a_store_error_names_the_path_and_prints_no_summary(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    with POP3TestServer(mailbox=[_message(1, 300)]) as srv:
        r = cli("fetch", *account(srv), "--maildir", str(blocker / "md"))
    assert r.returncode == 2
    assert f"cannot create the Maildir {blocker / 'md'}" in r.stderr
    assert "fastpoplib: exit code 2" in r.stderr
    assert r.stdout == ""


def test_a_good_run_prints_its_summary_and_no_exit_code(tmp_path):
    with POP3TestServer(mailbox=[_message(1, 300)]) as srv:
        r = cli("fetch", *account(srv), "--maildir", str(tmp_path / "md"))
    assert r.returncode == 0
    assert "1 new message(s)" in r.stdout and "done in" in r.stdout
    assert "exit code" not in r.stderr and r.stderr == ""


def _refuse_first_auth() -> Fault:
    return Fault.reply(b"-ERR [AUTH] mechanism refused\r\n", on="AUTH")


def test_the_library_logs_nothing_when_logging_is_not_configured(tmp_path):
    with POP3TestServer(mailbox=[_message(1, 300)], sasl=["CRAM-MD5", "PLAIN"], faults=[_refuse_first_auth()]) as srv:
        script = f"import fastpoplib\np = fastpoplib.POP3({srv.host!r}, {srv.port})\np.login('user', 'password', allow_insecure=True)\np.quit()\n"
        r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
        assert r.returncode == 0, r.stderr
        assert r.stderr == ""
        assert any(c.startswith(b"AUTH") for c in srv.sessions[0].commands)  # the refusal did happen


def test_the_cli_shows_warnings_only_with_v(tmp_path):
    md = str(tmp_path / "md")
    with POP3TestServer(mailbox=[_message(1, 300)], sasl=["CRAM-MD5", "PLAIN"]) as srv:
        for extra in ([], ["-q"]):
            srv.add_fault(_refuse_first_auth())
            r = cli("fetch", *account(srv), "--maildir", md, *extra)
            assert r.returncode == 0, r.stderr
            assert r.stderr == ""
        srv.add_fault(_refuse_first_auth())
        r = subprocess.run([sys.executable, "-m", "fastpoplib", "-v", "fetch", *account(srv), "--maildir", md],
                           capture_output=True, text=True, env=ENV, timeout=60, check=False)  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert "refused; trying the next method" in r.stderr


def test_a_configuration_error_and_a_failed_ls_print_their_exit_code(tmp_path):
    r = cli("fetch", "--host", "127.0.0.1")
    assert r.returncode == 2
    assert "give --host and --user" in r.stderr and "fastpoplib: exit code 2: usage or configuration error" in r.stderr
    r = cli("ls", "--host", "127.0.0.1", "--port", str(_closed_port()), "--user", "u", "--tls", "none", "--insecure",
            "--password-env", "POP_PW")  # fmt: skip
    assert r.returncode == 4
    assert "fastpoplib: exit code 4: connection or TLS failure" in r.stderr


def test_a_store_failing_mid_run_names_its_path(tmp_path):
    md = tmp_path / "md"
    # The first RETR is answered late: meanwhile tmp/ stops being a directory.
    with POP3TestServer(mailbox=[_message(1, 300)], faults=[Fault.stall(3, on="RETR")]) as srv:
        proc = spawn("fetch", *account(srv), "--maildir", str(md), "--delete")
        wait_for(lambda: any(c.startswith(b"RETR") for s in srv.sessions for c in s.commands), "the RETR")
        (md / "tmp").rmdir()
        (md / "tmp").write_bytes(b"")
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 1, err
        assert f"cannot write to {md}: Not a directory; message 1 (UID" in err
        assert "fastpoplib: exit code 1" in err
        assert len(srv.mailbox_for("user")) == 1
