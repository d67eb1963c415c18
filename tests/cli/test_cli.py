"""The `fastpoplib` console script, run for real in subprocesses against the shipped server."""

from __future__ import annotations

import hashlib
import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from fastpoplib.testing import Fault, POP3TestServer, sample_mailbox
from support.cli import ENV, account, cli


def stored(maildir: Path) -> list[bytes]:
    return [p.read_bytes() for sub in ("new", "cur") for p in sorted((maildir / sub).iterdir())]


def digests(messages: list[bytes]) -> list[str]:
    return sorted(hashlib.sha256(m.replace(b"\r\n", b"\n")).hexdigest() for m in messages)


def test_fetch_is_incremental_and_delete_is_safe(tmp_path: Path) -> None:
    box = sample_mailbox(8)
    originals = list(box.messages)
    with POP3TestServer(mailbox=box, stls=False) as srv:
        first = cli("fetch", *account(srv), "--maildir", str(tmp_path / "md"))
        assert first.returncode == 0, first.stderr
        assert "8 new message(s)" in first.stdout
        again = cli("fetch", *account(srv), "--maildir", str(tmp_path / "md"))
        assert again.returncode == 0 and "0 new message(s)" in again.stdout
        assert digests(stored(tmp_path / "md")) == digests(originals)
        gone = cli("fetch", *account(srv), "--maildir", str(tmp_path / "md"), "--delete", "-q")
        assert gone.returncode == 0, gone.stderr
        assert len(srv.mailbox) == 0
    assert digests(stored(tmp_path / "md")) == digests(originals)


def test_limits_mbox_and_exit_codes(tmp_path: Path) -> None:
    with POP3TestServer(mailbox=sample_mailbox(6), stls=False) as srv:
        sizes = sorted(m.size for m in srv.mailbox)
        limited = cli(
            "fetch",
            *account(srv),
            "--mbox",
            str(tmp_path / "box.mbox"),
            "--max-size",
            str(sizes[2]),
            "--max-messages",
            "2",
        )
        assert limited.returncode == 0, limited.stderr
        assert "2 new message(s)" in limited.stdout and "skipped" in limited.stdout
        assert (tmp_path / "box.mbox").read_bytes().count(b"\nFrom fpl-") + 1 == 2
        bad = cli("fetch", *account(srv)[:-2], "--password-command", "echo wrong", "--maildir", str(tmp_path / "x"))
        assert bad.returncode == 3 and "login refused" in bad.stderr
        assert "wrong" not in bad.stderr + bad.stdout
    refused = cli(
        "fetch",
        "--host",
        "127.0.0.1",
        "--port",
        "1",
        "--user",
        "u",
        "--tls",
        "none",
        "--insecure",
        "--password-env",
        "POP_PW",
        "--maildir",
        str(tmp_path / "y"),
    )
    assert refused.returncode == 4 and "connection failed" in refused.stderr
    insecure = cli("fetch", "--host", "127.0.0.1", "--user", "u", "--tls", "none", "--password-env", "POP_PW")
    assert insecure.returncode == 2 and "--insecure" in insecure.stderr


def test_password_command_output_that_is_not_utf8_leaks_nothing(tmp_path: Path) -> None:
    printed = "Kennwört-geheim\n".encode("latin-1")
    script = tmp_path / "pw.py"
    script.write_text(f"import sys\nsys.stdout.buffer.write({printed!r})\n")
    with POP3TestServer(stls=False) as srv:
        out = cli("fetch", *account(srv)[:-2], "--password-command", f"{sys.executable} {script}", "--maildir", str(tmp_path / "md"))
        assert not srv.sessions  # refused before connecting
    assert out.returncode == 2 and "not UTF-8" in out.stderr
    for leak in ("geheim", "Kennw", "xf6", "0xf6", "246", "position", "Traceback"):
        assert leak not in out.stdout + out.stderr


def test_config_file_with_several_accounts(tmp_path: Path) -> None:
    with (
        POP3TestServer(mailbox=sample_mailbox(3), stls=False) as a,
        POP3TestServer(mailbox=sample_mailbox(4, seed=9), stls=False) as b,
    ):
        config = tmp_path / "accounts.toml"
        config.write_text(
            "[defaults]\ntls = 'none'\ninsecure = true\nuser = 'user'\npassword_env = 'POP_PW'\n"
            f"[[account]]\nname = 'a'\nhost = '{a.host}'\nport = {a.port}\nmaildir = '{tmp_path / 'A'}'\n"
            f"[[account]]\nname = 'b'\nhost = '{b.host}'\nport = {b.port}\nmaildir = '{tmp_path / 'B'}'\n"
        )
        out = cli("fetch", "--config", str(config))
        assert out.returncode == 0, out.stderr
        assert len(stored(tmp_path / "A")) == 3 and len(stored(tmp_path / "B")) == 4


def test_ls_json(tmp_path: Path) -> None:
    with POP3TestServer(mailbox=sample_mailbox(5), stls=False) as srv:
        out = cli("ls", *account(srv), "--json")
        assert out.returncode == 0, out.stderr
        rows = json.loads(out.stdout)
        assert [r["number"] for r in rows] == [1, 2, 3, 4, 5]
        assert all(r["subject"] and r["from"] and r["uid"] for r in rows)


def test_demo_runs() -> None:
    out = cli("demo", "--messages", "5")
    assert out.returncode == 0, out.stderr
    assert "5 new message(s)" in out.stdout and "0 new message(s)" in out.stdout


def test_sigkill_at_random_points_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    """Kill `fetch --delete` with SIGKILL at random moments, re-run to completion, and check:
    every original message is stored exactly once, and the server lost only stored ones."""
    rng = random.Random(1234)
    box = sample_mailbox(30, seed=3)
    originals = digests(list(box.messages))
    maildir = tmp_path / "md"
    # Every RETR and DELE is slowed down so that kills land in the middle of the transfer.
    with POP3TestServer(
        mailbox=box,
        stls=False,
        faults=[Fault.stall(0.02, on="RETR", times=None), Fault.stall(0.02, on="DELE", times=None)],
    ) as srv:
        args = [sys.executable, "-m", "fastpoplib", "fetch", *account(srv), "--maildir", str(maildir), "--delete", "-q"]
        for _ in range(8):
            proc = subprocess.Popen(args, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(rng.uniform(0.2, 1.2))
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            have = digests(stored(maildir)) if maildir.exists() else []
            assert len(have) == len(set(have)), "a message was stored twice"
            on_server = digests(list(srv.mailbox.messages))
            assert set(originals) <= set(have) | set(on_server), "a message was lost"
            assert set(originals) - set(on_server) <= set(have), "a message was deleted before it was stored"
        final = subprocess.run(args, env=ENV, capture_output=True, text=True, timeout=60, check=False)
        assert final.returncode == 0, final.stderr
        assert len(srv.mailbox) == 0
    assert digests(stored(maildir)) == originals
