"""The examples in examples/ (referenced from README.md) run against the shipped server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ENV = dict(os.environ, POP_PASSWORD="password")


def run(name: str, *args: Any) -> str:
    result = subprocess.run([sys.executable, str(EXAMPLES / name), *map(str, args)], capture_output=True, text=True, env=ENV, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_fetch_new(pop3_server: Any) -> None:
    out = run("fetch_new.py", pop3_server.host, pop3_server.port, "user", pop3_server.cafile)
    assert "logged in with PLAIN" in out  # over TLS PLAIN comes before CRAM-MD5
    assert len(out.strip().splitlines()) == 1 + len(pop3_server.mailbox)


def test_async_many_accounts(pop3_server_factory: Any) -> None:
    srv = pop3_server_factory(users={"a": "password", "b": "password"}, allow_concurrent=True)
    assert run("async_many_accounts.py", srv.host, srv.port, "a", "b").splitlines() == ["a: 12 messages", "b: 12 messages"]


def test_stream_to_disk(pop3_server: Any, tmp_path: Path) -> None:
    out = run("stream_to_disk.py", pop3_server.host, pop3_server.port, "user", 2, tmp_path / "m.eml")
    assert (tmp_path / "m.eml").read_bytes() == pop3_server.mailbox.messages[1]
    assert f"wrote {pop3_server.mailbox[1].size} bytes" in out
