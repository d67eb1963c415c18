"""CLI basics: --version, help texts, exit codes in --help,
-v/--verbose, serve --tls, demo --seed, a busy port."""

from __future__ import annotations

import argparse
import base64
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import fastpoplib
from fastpoplib.cli import build_parser
from fastpoplib.testing import POP3TestServer, sample_mailbox
from support.cli import account, cli, maildir_messages, no_traceback


def test_version() -> None:
    out = cli("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"fastpoplib {fastpoplib.__version__}"


def test_help_lists_the_exit_codes() -> None:
    for args in (["--help"], ["fetch", "--help"], ["ls", "--help"]):
        out = cli(*args)
        assert out.returncode == 0
        for code in ("0", "1", "2", "3", "4", "5", "130"):
            assert re.search(rf"^\s+{code}\s+\w", out.stdout, re.MULTILINE), (args, code)


def test_every_option_has_help_with_units_and_defaults() -> None:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in subparsers.choices.items():
        for action in sub._actions:
            assert action.help, f"{name} {action.option_strings} has no help text"
        helps = {opt: a.help for a in sub._actions for opt in a.option_strings}
        if "--timeout" in helps:
            assert "seconds" in helps["--timeout"] and "default 60" in helps["--timeout"]
            assert "default 995" in helps["--port"] and "110" in helps["--port"]
        if "--port" in helps and name in ("serve",):
            assert "default 1110" in helps["--port"]


def test_verbose_logs_without_secrets(tmp_path: Path) -> None:
    secret = "s3cret-pw"
    env = dict(os.environ, POP_PW=secret)
    with POP3TestServer(mailbox=sample_mailbox(2), users={"user": secret}, stls=False) as srv:
        base = ["fetch", *account(srv)]
        argvs = {"-v": ["-v", *base], "-vv": ["-vv", *base], "fetch -v": [*base, "-v"]}
        runs = {
            name: subprocess.run(
                [sys.executable, "-m", "fastpoplib", *argv, "--maildir", str(tmp_path / name.replace(" ", ""))],
                capture_output=True,
                text=True,
                env=env,
                timeout=60,
                check=False,
            )
            for name, argv in argvs.items()
        }
    assert all(r.returncode == 0 for r in runs.values()), runs
    for name in ("-v", "fetch -v"):
        assert "INFO" in runs[name].stderr and "DEBUG" not in runs[name].stderr
        assert "2 to fetch" in runs[name].stderr
    assert "DEBUG" in runs["-vv"].stderr
    leaks = (secret, base64.b64encode(f"\0user\0{secret}".encode()).decode())
    for r in runs.values():
        assert not any(leak in r.stderr + r.stdout for leak in leaks)


def test_serve_with_tls_is_fetched_with_its_cafile(tmp_path: Path) -> None:
    serve = subprocess.Popen(
        [sys.executable, "-m", "fastpoplib", "serve", "--port", "0", "--tls", "implicit", "--messages", "4"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert serve.stdout is not None
        first = serve.stdout.readline()
        port = re.search(r"on 127\.0\.0\.1:(\d+)", first)
        cafile = re.search(r"--cafile (\S+)", serve.stdout.readline())
        assert port and cafile, first
        env = dict(os.environ, POP_PW="password")
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "fastpoplib",
                "fetch",
                "--host",
                "127.0.0.1",
                "--port",
                port.group(1),
                "--user",
                "user",
                "--password-env",
                "POP_PW",
                "--cafile",
                cafile.group(1),
                "--maildir",
                str(tmp_path / "md"),
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
        assert out.returncode == 0 and "4 new message(s)" in out.stdout, out.stderr
    finally:
        serve.send_signal(signal.SIGINT)
        _, err = serve.communicate(timeout=30)
    assert serve.returncode == 0 and "Traceback" not in err
    assert len(maildir_messages(tmp_path / "md")) == 4


def test_demo_honours_the_seed() -> None:
    def listing(seed: str) -> list[str]:
        out = cli("demo", "--messages", "4", "--seed", seed)
        assert out.returncode == 0, out.stderr
        return [line for line in out.stdout.splitlines() if re.match(r"^\s+\d+\s+\d+\s", line)]

    one, again, two = listing("1"), listing("1"), listing("2")
    assert len(one) == 4 and one == again and one != two


def test_serve_on_a_busy_port_is_a_clear_error() -> None:
    with socket.create_server(("127.0.0.1", 0)) as busy:
        out = cli("serve", "--port", str(busy.getsockname()[1]), "--seconds", "1")
    assert out.returncode == 2 and "cannot listen" in out.stderr and "--port" in out.stderr
    no_traceback(out.stderr)
