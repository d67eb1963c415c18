"""`fastpoplib watch`, `status` and `fetch --concurrency`, run for real in
subprocesses against the shipped test server. Every wait is for something observable (a
message stored, a session opened), bounded by a deadline."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import fastpoplib
import pytest
from fastpoplib import _watch
from fastpoplib.testing import Fault, POP3TestServer
from support.cli import ENV, cli, maildir_messages, no_traceback, spawn, wait_for

STALL = 30.0  # the test server's longest stall: "forever" for these tests


def message(tag: str, i: int) -> bytes:
    return f"Subject: {tag} {i}\r\nMessage-ID: <{tag}.{i}@test>\r\n\r\nbody of {tag} {i}\r\n".encode()


def server(tag: str, n: int, **kw: Any) -> POP3TestServer:
    return POP3TestServer([message(tag, i) for i in range(n)], stls=False, **kw)


def entry(name: str, srv: POP3TestServer, maildir: Path, user: str = "user", **extra: Any) -> str:
    lines = [
        "[[account]]",
        f"name = '{name}'",
        f"host = '{srv.host}'",
        f"port = {srv.port}",
        f"user = '{user}'",
        "tls = 'none'",
        "insecure = true",
        "password_env = 'POP_PW'",
        f"maildir = '{maildir}'",
    ]
    lines += [f"{k} = {v!r}".replace("True", "true").replace("False", "false") for k, v in extra.items()]
    return "\n".join(lines) + "\n"


def write_config(tmp_path: Path, *entries: str) -> str:
    path = tmp_path / "accounts.toml"
    path.write_text("\n".join(entries))
    return str(path)


def record(maildir: Path) -> dict[str, Any]:
    """The account's status record (empty before the first poll ends)."""
    found = list((maildir / ".fastpoplib").glob("*.status"))
    return json.loads(found[0].read_text()) if found else {}


def stop(proc: subprocess.Popen, signum: int = signal.SIGTERM) -> tuple[str, str]:
    """SIGTERM, as systemd stops a service (or Ctrl-C's SIGINT); watch must exit 0 promptly."""
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    no_traceback(out, err)
    return out, err


def test_a_stalled_server_does_not_delay_the_other_accounts(tmp_path: Path) -> None:
    interval = 2.0
    with server("a", 2) as a, server("b", 2) as b, server("s", 2) as stalled:
        stalled.add_fault(Fault.stall(STALL, on="greeting", times=None))
        config = write_config(
            tmp_path,
            entry("a", a, tmp_path / "a", interval=interval),
            entry("b", b, tmp_path / "b", interval=interval),
            entry("stalled", stalled, tmp_path / "s", interval=interval, timeout=120.0),
        )
        proc = spawn("watch", "--config", config)
        try:
            for name in "ab":
                wait_for(lambda name=name: len(maildir_messages(tmp_path / name)) == 2, f"account {name}'s mail")
            assert len(stalled.sessions) == 1 and not stalled.sessions[0].closed.is_set()
            a.mailbox.add(message("a", 2))
            b.mailbox.add(message("b", 2))
            # New mail arrives within one interval (plus the poll itself), the stall notwithstanding.
            for name in "ab":
                wait_for(
                    lambda name=name: len(maildir_messages(tmp_path / name)) == 3,
                    f"account {name}'s new mail",
                    deadline=interval + 5,
                )
                wait_for(lambda name=name: record(tmp_path / name).get("total") == 3, f"account {name}'s poll to end")
            assert len(stalled.sessions) == 1, "the stalled account was polled again before its poll ended"
        finally:
            _, err = stop(proc)
        assert stalled.sessions[0].wait_closed(10), "the stalled connection was left open"
    assert maildir_messages(tmp_path / "a") == sorted(message("a", i) for i in range(3))
    for name in "ab":
        assert f"INFO {name}: 2 new message(s)" in err and f"INFO {name}: 1 new message(s)" in err, err
    # One line per account and poll: the connections' own INFO records only with -v.
    assert "connected" not in err and "logged in" not in err, err


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_during_a_delivery_loses_and_doubles_nothing(tmp_path: Path, signum: int) -> None:
    md = tmp_path / "md"
    with server("m", 20) as srv:
        # Message 6 is "in hand" when the signal comes: its RETR reply never arrives.
        srv.add_fault(Fault.stall(STALL, on="RETR", skip=5))
        config = write_config(tmp_path, entry("m", srv, md, delete=True, interval=600.0))
        proc = spawn("watch", "--config", config)
        try:
            wait_for(lambda: srv.sessions and len([c for c in srv.sessions[0].commands if c.startswith(b"RETR")]) >= 6, "RETR 6")
            wait_for(lambda: len(maildir_messages(md)) == 5, "the 5 messages before it to be stored")
        finally:
            stop(proc, signum)
        assert not list((md / "tmp").iterdir()), "a half-stored message was left in tmp/"
        assert len(srv.mailbox) == 20, "a message was deleted although the session never reached QUIT"
        srv.clear_faults()
        proc = spawn("watch", "--config", config)
        try:
            wait_for(lambda: len(srv.mailbox) == 0, "the rest to be fetched and deleted")
        finally:
            stop(proc)
    assert maildir_messages(md) == sorted(message("m", i) for i in range(20))


def test_backoff_pause_and_login_delay(tmp_path: Path) -> None:
    interval = 0.1
    with (
        server("ok", 1) as ok,
        server("t", 1, faults=[Fault.reply(b"-ERR [SYS/TEMP] down for maintenance\r\n", on="greeting", times=None)]) as temp,
        server("r", 1, users={"user": "another password"}) as refused,
        server("d", 1, login_delay=1) as delayed,
    ):
        config = write_config(
            tmp_path,
            entry("ok", ok, tmp_path / "ok", interval=interval),
            entry("temp", temp, tmp_path / "temp", interval=interval),
            entry("refused", refused, tmp_path / "refused", interval=interval),
            entry("delayed", delayed, tmp_path / "delayed", interval=interval),
        )
        proc = spawn("watch", "--config", config)
        try:
            wait_for(lambda: len(ok.sessions) >= 20 and len(delayed.sessions) >= 3, "20 polls of a healthy account")
            assert len(refused.sessions) == 1, "a refused login was tried again"
            # Without backoff the failing server would have seen as many attempts as the healthy
            # one. With it, the waits are 0.1-0.2, 0.2-0.4, 0.4-0.8 s...: the 7th attempt comes
            # after >= 6.3 s, the 8th after >= 12.7 s, while 20 polls take 2 s on an idle machine.
            assert 2 <= len(temp.sessions) <= 7, temp.sessions
            status = cli("status", "--config", config)
        finally:
            _, err = stop(proc)
    assert "refused: login refused" in err and "paused" in err, err
    assert "[LOGIN-DELAY]" not in err, "LOGIN-DELAY from CAPA was not honoured"
    assert "[SYS/TEMP]" in err and "next try in" in err, err
    assert status.returncode == 0, status.stderr
    names = [line for line in status.stdout.splitlines() if line and not line.startswith(" ")]
    assert names == ["ok", "temp", "refused", "delayed"], status.stdout
    text = status.stdout
    assert text.count("(1 in all)") == 2, text  # ok and delayed: one message each, fetched once
    assert "paused: fix the error above" in text and "[SYS/TEMP] down for maintenance" in text, text


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    lows = [_watch.backoff(300, n, rand=lambda: 0.0) for n in range(1, 12)]
    highs = [_watch.backoff(300, n, rand=lambda: 1.0) for n in range(1, 12)]
    assert lows[0] == 300 and highs[0] == 600  # the first retry: one to two intervals
    assert all(x <= y for x, y in zip(highs, highs[1:])) and highs[-1] == _watch.BACKOFF_CAP
    assert lows[-1] == _watch.BACKOFF_CAP / 2
    assert _watch.backoff(7200, 3, rand=lambda: 1.0) == 7200  # an interval above the cap is kept


@pytest.mark.parametrize(("command", "concurrency"), [("fetch", 1), ("fetch", 3), ("ls", 3)])
def test_concurrency_bound_is_never_exceeded(tmp_path: Path, command: str, concurrency: int) -> None:
    users = {f"u{i}": "password" for i in range(9)}
    boxes = {u: [message(u, j) for j in range(2)] for u in users}
    with POP3TestServer(users=users, mailboxes=boxes, stls=False) as srv:
        # Each session lasts a while, so that unbounded connections would overlap.
        srv.add_fault(Fault.stall(0.2, on="greeting", times=None))
        config = write_config(tmp_path, *(entry(u, srv, tmp_path / u, user=u) for u in users))
        out = cli(command, "--config", config, "--concurrency", str(concurrency))
        assert out.returncode == 0, out.stderr
        assert srv.peak_sessions == concurrency, f"{srv.peak_sessions} connections open at once"
    if command == "ls":
        assert all(f"== {u}" in out.stdout for u in users), out.stdout
        return
    for u in users:
        assert maildir_messages(tmp_path / u) == sorted(boxes[u])


def test_bad_concurrency_and_interval_are_usage_errors(tmp_path: Path) -> None:
    with server("x", 1) as srv:
        config = write_config(tmp_path, entry("x", srv, tmp_path / "x"))
        for args in (["fetch", "--concurrency", "0"], ["watch", "--concurrency", "-3"], ["watch", "--interval", "0"]):
            out = cli(*args, "--config", config)
            assert out.returncode == 2, out
            assert ("--concurrency must be" in out.stderr) or ("interval (--interval) must be greater than 0" in out.stderr)
        # The bound is on accounts at once: one account needs one slot, however high the bound.
        out = cli("fetch", "--config", config, "--concurrency", "100000000")
        assert out.returncode == 0, out.stderr


def test_status_of_a_config_never_polled_and_after_fetch(tmp_path: Path) -> None:
    with server("x", 2) as srv:
        config = write_config(tmp_path, entry("x", srv, tmp_path / "x"))
        before = cli("status", "--config", config)
        assert before.returncode == 0 and "last poll   never" in before.stdout, before
        started = time.time()
        assert cli("fetch", "--config", config).returncode == 0
        after = cli("status", "--config", config)
    assert "fetched     2 message(s) (2 in all)" in after.stdout, after.stdout
    assert "last error  -" in after.stdout and "next poll   - (no watch running)" in after.stdout
    stamp = time.strftime("%Y-%m-%d %H:%M", time.gmtime(started))
    assert stamp in after.stdout or time.strftime("%Y-%m-%d %H:%M", time.gmtime()) in after.stdout
    (record,) = (tmp_path / "x" / ".fastpoplib").glob("*.status")
    assert record.stat().st_mode & 0o077 == 0, "the status record is readable by others"


# --- Dovecot: the maildrop lock that makes a double poll harmless -----------------------------


@pytest.fixture
def locking_dovecot() -> Any:
    """A private Dovecot that lets one POP3 session per user in (``pop3_lock_session``)."""
    from support.dovecot import InteropDovecot, _require_dovecot

    _require_dovecot()
    root = Path(tempfile.mkdtemp(prefix="fastpoplib-dovecot-"))
    try:
        dove = InteropDovecot(root)
        with open(dove.conf, "a") as conf:
            conf.write("pop3_lock_session = yes\n")
        dove.add_user("shared", [message("shared", i) for i in range(30)])
        with dove:
            yield dove
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_two_hosts_polling_one_account_store_each_message_once(tmp_path: Path, locking_dovecot: Any) -> None:
    dove = locking_dovecot
    left = dove.root / "mail" / "shared" / "Maildir" / "cur"

    def account(name: str) -> str:
        return "\n".join(
            [
                "[[account]]",
                f"name = '{name}'",
                f"host = '{dove.host}'",
                f"port = {dove.plain_port}",
                "user = 'shared'",
                "tls = 'starttls'",
                f"cafile = '{dove.cafile}'",
                "password_env = 'DOVE_PW'",
                f"maildir = '{tmp_path / name}'",
                "delete = true",
                "interval = 0.3",
            ]
        )

    env = dict(ENV, DOVE_PW=dove.password)

    def watch(name: str) -> subprocess.Popen:  # a host: its own config and store
        config = tmp_path / f"{name}.toml"
        config.write_text(account(name) + "\n")
        return subprocess.Popen(
            [sys.executable, "-m", "fastpoplib", "watch", "--config", str(config)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    with fastpoplib.POP3(dove.host, dove.plain_port, timeout=10) as holder:
        holder.stls(cafile=dove.cafile)
        holder.login("shared", dove.password)  # another client holds the maildrop lock
        first = watch("host-a")
        wait_for(lambda: "[IN-USE]" in (record(tmp_path / "host-a").get("last_error") or ""), "host a's [IN-USE]")
    second = watch("host-b")  # from now on both hosts poll the account every 0.3 s
    try:
        wait_for(lambda: not list(left.iterdir()), "every message to be fetched and deleted")
    finally:
        _, err_a = stop(first)
        _, err_b = stop(second)
    assert "next try in" in err_a and "paused" not in err_a + err_b, err_a
    a, b = maildir_messages(tmp_path / "host-a"), maildir_messages(tmp_path / "host-b")
    assert not set(a) & set(b), "a message was stored by both hosts"
    assert sorted(a + b) == sorted(message("shared", i) for i in range(30))


def test_status_says_when_the_planned_poll_will_not_happen(tmp_path: Path) -> None:
    with server("x", 1) as srv:
        config = write_config(tmp_path, entry("x", srv, tmp_path / "x"))
        assert cli("fetch", "--config", config).returncode == 0
        (path,) = (tmp_path / "x" / ".fastpoplib").glob("*.status")
        gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
        planned = json.loads(path.read_text())
        planned.update(next_poll=planned["last_poll"] + 300, pid=int(gone.stdout))
        path.write_text(json.dumps(planned))
        out = cli("status", "--config", config)
    assert f"the watch process {int(gone.stdout)} that planned the next poll is gone" in out.stdout, out.stdout
    (as_json,) = json.loads(cli("status", "--config", config, "--json").stdout)
    assert as_json["account"] == "x" and as_json["total"] == 1 and as_json["next_poll"] is None


def test_accounts_blocking_worker_threads_do_not_hold_up_the_others(tmp_path: Path) -> None:
    # 33 password commands that hang (more than asyncio's default pool of at most 32 threads)
    # and one healthy account, polled together: the healthy one must not wait for them.
    with server("h", 3) as healthy:
        hanging = [entry(f"hang{i}", healthy, tmp_path / f"hang{i}", password_command="sleep 30") for i in range(33)]
        config = write_config(tmp_path, *hanging, entry("healthy", healthy, tmp_path / "healthy"))
        proc = spawn("fetch", "--config", config, "--concurrency", "34", start_new_session=True)
        try:
            wait_for(lambda: len(maildir_messages(tmp_path / "healthy")) == 3, "the healthy account", deadline=20)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)  # and the sleeping commands
            proc.communicate()


def test_every_account_paused_keeps_watch_waiting_not_retrying(tmp_path: Path) -> None:
    with server("r", 1, users={"user": "another password"}) as refused:
        config = write_config(tmp_path, entry("refused", refused, tmp_path / "r", interval=0.1))
        proc = spawn("watch", "--config", config)
        try:
            wait_for(lambda: record(tmp_path / "r").get("paused") is True, "the account to be paused")
            assert proc.poll() is None, "watch exited: a service manager would restart it into the same refusal"
        finally:
            _, err = stop(proc)
        assert len(refused.sessions) == 1
    assert "paused: not polled again until watch is restarted" in err, err
