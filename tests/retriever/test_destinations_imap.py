"""`fastpoplib fetch --imap`: Dovecot's POP3 as the source, another Dovecot user's IMAP
mailbox as the destination, the CLI run for real in subprocesses."""

from __future__ import annotations

import email.utils
import os
import poplib
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from support.dovecot import PASSWORD, InteropDovecot, add_users, edge_messages
from fastpoplib._destinations import ImapDestination, ImapURL, Journal
from fastpoplib._store import Receipt, Refusal
from fastpoplib.testing import Mailbox, POP3TestServer, sample_mailbox

imapclient = pytest.importorskip("imapclient")

pytestmark = pytest.mark.timeout(180)


def run(*args: str, env: dict[str, str], timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fastpoplib", *args], capture_output=True, text=True, env=env, timeout=timeout, check=False)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return dict(os.environ, POP_PW=PASSWORD, IMAP_PW=PASSWORD, XDG_STATE_HOME=str(tmp_path / "state"))


def source_args(dove: InteropDovecot, user: str) -> list[str]:
    return ["--host", dove.host, "--port", str(dove.tls_port), "--cafile", dove.cafile, "--user", user, "--password-env", "POP_PW"]


def imap_args(dove: InteropDovecot, user: str, folder: str = "INBOX", starttls: bool = False) -> list[str]:
    url = f"imap://{user}@{dove.host}:{dove.imap_port}/{folder}" if starttls else f"imaps://{user}@{dove.host}:{dove.imaps_port}/{folder}"
    return ["--imap", url, "--imap-password-env", "IMAP_PW", "--imap-cafile", dove.cafile]


def retr_all(dove: InteropDovecot, user: str) -> list[bytes]:
    """The source's messages as RETR gives them, read with the stdlib's poplib."""
    pop = poplib.POP3(dove.host, dove.plain_port, timeout=10)
    try:
        pop.user(user)
        pop.pass_(PASSWORD)
        return [b"".join(line + b"\r\n" for line in pop.retr(n)[1]) for n in range(1, pop.stat()[0] + 1)]
    finally:
        pop.quit()


def folder(dove: InteropDovecot, user: str, name: str = "INBOX") -> list[dict[bytes, Any]]:
    """Every message of an IMAP folder: BODY[] and INTERNALDATE."""
    with imapclient.IMAPClient(dove.host, port=dove.imaps_port, ssl_context=dove.ssl_context(), timeout=10) as client:
        client.login(user, PASSWORD)
        client.select_folder(name, readonly=True)
        uids = client.search(["ALL"])
        return list(client.fetch(uids, ["BODY.PEEK[]", "INTERNALDATE"]).values()) if uids else []


def bodies(dove: InteropDovecot, user: str, name: str = "INBOX") -> Counter[bytes]:
    return Counter(item[b"BODY[]"] for item in folder(dove, user, name))


def with_received(i: int) -> bytes:
    return (
        b"Received: from relay.example.net by mx.example.org; Tue, 02 Jan 2024 10:0%d:00 +0100\r\n"
        b"Received: from laptop by relay.example.net; Mon, 01 Jan 2024 08:00:00 +0000\r\n"
        b"Date: Sun, 31 Dec 2023 23:00:00 +0000\r\nMessage-ID: <received%d@example.org>\r\nSubject: received\r\n\r\nbody\r\n"
    ) % (i, i)


def four_kb(n: int, tag: str) -> list[bytes]:
    """``n`` messages of about 4 KB, in 78-byte lines."""
    head = b"Subject: %s %d\r\nMessage-ID: <%s.%d@example.org>\r\n\r\n"
    return [head % (tag.encode(), i, tag.encode(), i) + (b"x" * 76 + b"\r\n") * 51 for i in range(n)]


def test_delivery_is_byte_identical_into_a_created_folder_dated_by_received_else_date(dovecot_mail: InteropDovecot, env: dict[str, str]) -> None:
    edge = [m for m in edge_messages() if len(m) < 50_000]  # the stdlib poplib that checks reads lines up to 2 KB
    users = add_users(dovecot_mail, src=[*edge, *sample_mailbox(6, seed=3).messages, with_received(1)], dest=[])
    expected = retr_all(dovecot_mail, users["src"])
    out = run("fetch", *source_args(dovecot_mail, users["src"]), *imap_args(dovecot_mail, users["dest"], "Fetched/POP%20mail"), env=env)
    assert out.returncode == 0, out.stderr
    assert f"{len(expected)} new message(s)" in out.stdout
    stored = folder(dovecot_mail, users["dest"], "Fetched.POP mail")  # Dovecot separates levels with "."
    assert Counter(item[b"BODY[]"] for item in stored) == Counter(expected)
    for item in stored:
        data = item[b"BODY[]"]
        internal = item[b"INTERNALDATE"].replace(tzinfo=None)  # imapclient: local wall time, no zone
        if b"Received:" in data:  # the first (topmost) Received header, not Date, not the second
            want = email.utils.parsedate_to_datetime("Tue, 02 Jan 2024 10:01:00 +0100")
        elif b"\nDate:" in data or data.startswith(b"Date:"):
            date = [line for line in data.split(b"\r\n") if line.startswith(b"Date:")][0][5:].decode()
            want = email.utils.parsedate_to_datetime(date.strip())
        else:
            continue
        assert internal == want.astimezone().replace(tzinfo=None), data[:200]


def test_a_rerun_from_the_config_file_appends_nothing(dovecot_mail: InteropDovecot, env: dict[str, str], tmp_path: Path) -> None:
    users = add_users(dovecot_mail, src=sample_mailbox(8, seed=4).messages, dest=[])
    config = tmp_path / "fetch.toml"
    config.write_text(
        f"""[[account]]
host = "{dovecot_mail.host}"
port = {dovecot_mail.tls_port}
cafile = "{dovecot_mail.cafile}"
user = "{users["src"]}"
password_env = "POP_PW"
imap = "imap://{users["dest"]}@{dovecot_mail.host}:{dovecot_mail.imap_port}/INBOX"
imap_password_env = "IMAP_PW"
imap_cafile = "{dovecot_mail.cafile}"
"""
    )
    first = run("fetch", "--config", str(config), env=env)
    assert first.returncode == 0, first.stderr
    assert "8 new message(s)" in first.stdout
    second = run("fetch", "--config", str(config), env=env)
    assert second.returncode == 0, second.stderr
    assert "0 new message(s)" in second.stdout
    assert sum(bodies(dovecot_mail, users["dest"]).values()) == 8


def test_delete_empties_the_source_once_appended(dovecot_mail: InteropDovecot, env: dict[str, str]) -> None:
    users = add_users(dovecot_mail, src=four_kb(60, "del"), dest=[])
    expected = retr_all(dovecot_mail, users["src"])
    out = run("fetch", "--delete", *source_args(dovecot_mail, users["src"]), *imap_args(dovecot_mail, users["dest"]), env=env)
    assert out.returncode == 0, out.stderr
    assert "60 deleted on server" in out.stdout
    assert retr_all(dovecot_mail, users["src"]) == []
    assert bodies(dovecot_mail, users["dest"]) == Counter(expected)
    [journal] = Path(env["XDG_STATE_HOME"]).rglob("*.journal.json")
    assert Journal(journal).stored == {} and Journal(journal).intents == {}  # deleted: nothing left to remember


def test_a_damaged_state_is_rebuilt_from_the_journal_and_a_rerun_appends_nothing(dovecot_mail: InteropDovecot, env: dict[str, str]) -> None:
    users = add_users(dovecot_mail, src=sample_mailbox(7, seed=11).messages, dest=[])
    args = ["fetch", *source_args(dovecot_mail, users["src"]), *imap_args(dovecot_mail, users["dest"])]
    assert run(*args, env=env).returncode == 0
    [journal] = Path(env["XDG_STATE_HOME"]).rglob("*.journal.json")
    assert len(Journal(journal).stored) == 7 and all(detail.startswith("UID ") for detail in Journal(journal).stored.values())
    [state] = [p for p in journal.parent.glob("*.json") if p != journal]
    state.write_text("{ not json")
    again = run(*args, env=env)
    assert again.returncode == 0, again.stderr
    assert "was damaged; rebuilt it" in again.stderr and "0 new message(s)" in again.stdout
    assert sum(bodies(dovecot_mail, users["dest"]).values()) == 7


def test_append_refused_for_quota_deletes_nothing(dovecot_mail: InteropDovecot, env: dict[str, str]) -> None:
    users = add_users(dovecot_mail, src=four_kb(10, "quota"), quota_dest=[])
    expected = retr_all(dovecot_mail, users["src"])
    out = run("fetch", "--delete", *source_args(dovecot_mail, users["src"]), *imap_args(dovecot_mail, users["quota_dest"]), env=env)
    assert out.returncode == 1, out.stderr
    assert "OVERQUOTA" in out.stderr and "stays on the POP server" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
    assert retr_all(dovecot_mail, users["src"]) == expected  # nothing deleted
    assert sum(bodies(dovecot_mail, users["quota_dest"]).values()) == 0  # MULTIAPPEND: all or nothing


def holds_its_lock(proc: subprocess.Popen, state: Path, deadline: float = 30.0) -> bool:
    """Wait until the run holds its account lock under ``state`` (it is past start-up and at
    work); False if it ended first."""
    end = time.monotonic() + deadline
    while proc.poll() is None:
        try:
            paths = [os.readlink(f"/proc/{proc.pid}/fd/{fd}") for fd in os.listdir(f"/proc/{proc.pid}/fd")]
        except OSError:  # a descriptor closed meanwhile
            paths = []
        if any(p.startswith(str(state)) and p.endswith(".lock") for p in paths):
            return True
        assert time.monotonic() < end, "the run never took its lock"
        time.sleep(0.005)
    return False


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["kill-9", "ctrl-c"])
def test_kill_at_random_points_of_a_delete_run_then_rerun(dovecot_mail: InteropDovecot, env: dict[str, str], sig: signal.Signals) -> None:
    """Every message exactly once in the folder, none left on the source, however the runs
    were killed (a kill after an APPEND's OK and before the state save is the case that
    needs the journal's intents; Ctrl-C must end a run cleanly, exit 130)."""
    users = add_users(dovecot_mail, src=[*four_kb(400, "kill"), *sample_mailbox(30, seed=9).messages], dest=[])
    expected = retr_all(dovecot_mail, users["src"])
    seed = random.randrange(1 << 30)
    rnd = random.Random(seed)
    args = ["fetch", "--delete", "-q", *source_args(dovecot_mail, users["src"]), *imap_args(dovecot_mail, users["dest"])]
    mid_run = 0  # kills that left messages on the source and some already in the folder
    for attempt in range(30):
        proc = subprocess.Popen([sys.executable, "-m", "fastpoplib", *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            if holds_its_lock(proc, Path(env["XDG_STATE_HOME"])):
                # A random point of the run, a little later each time, in small steps so that
                # some kill lands between the first APPEND and the end however fast the machine
                # is: the fault being injected, not a synchronisation.
                proc.wait(timeout=rnd.uniform(0.0, 0.03) + 0.03 * attempt)
        except subprocess.TimeoutExpired:
            proc.send_signal(sig)
        code = proc.wait(timeout=30)
        errors = proc.stderr.read().decode()  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]
        if sig == signal.SIGINT:
            # -SIGINT: the signal came as the interpreter was exiting, the run's work done.
            assert code in (0, 130) or (code == -signal.SIGINT and not errors.strip()), (code, errors)
            assert "Traceback" not in errors, errors
        left = len(retr_all(dovecot_mail, users["src"]))
        if not left:
            break
        mid_run += 0 < sum(bodies(dovecot_mail, users["dest"]).values())
    for _ in range(3):
        done = run(*args, env=env)
        if done.returncode == 0 and not retr_all(dovecot_mail, users["src"]):
            break
    assert done.returncode == 0, f"seed {seed}: {done.stderr}"
    assert retr_all(dovecot_mail, users["src"]) == [], f"seed {seed}"
    assert bodies(dovecot_mail, users["dest"]) == Counter(expected), f"seed {seed}"
    assert mid_run >= 1, f"seed {seed}: no kill landed in the middle of a run"


def open_destination(dove: InteropDovecot, user: str, name: str, state: Path) -> ImapDestination:
    url = ImapURL(f"imaps://{user}@{dove.host}:{dove.imaps_port}/{name}")
    return ImapDestination(url, lambda: {"password": PASSWORD}, "acct", cafile=dove.cafile, timeout=10)


def deliver(dest: ImapDestination, key: str, data: bytes) -> list[Any]:
    delivery = dest.begin()
    delivery.write(data)
    return delivery.commit(key) + dest.flush()


def test_a_run_killed_after_the_ok_finds_the_message_instead_of_appending_it_again(
    dovecot_mail: InteropDovecot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    users = add_users(dovecot_mail, dest=[])
    with_id, without_id = four_kb(1, "found")[0], b"Subject: no id\r\n\r\n" + (b"y" * 70 + b"\r\n") * 40
    first = open_destination(dovecot_mail, users["dest"], "INBOX", tmp_path)
    # The process dies after the server's OK, before the receipts reach the journal.
    monkeypatch.setattr(first, "_confirm", lambda outcomes: outcomes)
    for key, data in (("u1-1", with_id), ("u2-2", without_id)):
        delivery = first.begin()
        delivery.write(data)
        assert delivery.commit(key) == []  # waits for the batch (Dovecot offers MULTIAPPEND)
    assert [type(o) for o in first.flush()] == [Receipt, Receipt]
    journal = Journal(first.journal.path)
    assert journal.stored == {}
    journal.intents["u3-3"] = {"sha256": "0" * 64, "size": 10, "msgid": None, "since": 1, "uidvalidity": first.uidvalidity}
    journal.save()
    assert set(journal.intents) == {"u1-1", "u2-2", "u3-3"}
    first.close()
    again = open_destination(dovecot_mail, users["dest"], "INBOX", tmp_path)
    try:
        assert again.stored_keys() == {"u1-1", "u2-2"}  # found byte for byte; u3 was never appended
        assert Journal(again.journal.path).intents == {}
    finally:
        again.close()
    assert sum(bodies(dovecot_mail, users["dest"]).values()) == 2


def test_a_folder_removed_during_the_run_is_a_trycreate_refusal(dovecot_mail: InteropDovecot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    users = add_users(dovecot_mail, dest=[])
    dest = open_destination(dovecot_mail, users["dest"], "Gone", tmp_path)
    try:
        with imapclient.IMAPClient(dovecot_mail.host, port=dovecot_mail.imaps_port, ssl_context=dovecot_mail.ssl_context(), timeout=10) as other:
            other.login(users["dest"], PASSWORD)
            other.delete_folder("Gone")
        [outcome] = deliver(dest, "u1-1", four_kb(1, "gone")[0])
        assert isinstance(outcome, Refusal) and outcome.stop
        assert "TRYCREATE" in outcome.reason and "stays on the POP server" in outcome.reason
    finally:
        dest.close()


def test_a_refused_imap_login_is_a_sentence_and_touches_nothing(dovecot_mail: InteropDovecot, env: dict[str, str]) -> None:
    users = add_users(dovecot_mail, src=sample_mailbox(2).messages, dest=[])
    out = run("fetch", "--delete", *source_args(dovecot_mail, users["src"]), *imap_args(dovecot_mail, users["dest"]), env=dict(env, IMAP_PW="wrong"))
    assert out.returncode == 3, out.stderr
    assert "refused the login" in out.stderr and "wrong" not in out.stderr
    assert "[AUTHENTICATIONFAILED]" in out.stderr and "b'[" not in out.stderr  # the words, not a bytes repr
    assert len(retr_all(dovecot_mail, users["src"])) == 2


def test_import_fastpoplib_does_not_need_imapclient_and_the_cli_names_the_extra(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['imapclient'] = None\n"
        "import fastpoplib, fastpoplib.cli\n"
        "sys.exit(fastpoplib.cli.main(['fetch', '--host', '127.0.0.1', '--port', '1', '--user', 'u', '--password-env', 'X',"
        " '--imap', 'imaps://me@127.0.0.1:1/INBOX', '--imap-password-env', 'X']))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=dict(os.environ, XDG_STATE_HOME=str(tmp_path)))
    assert out.returncode == 2, out.stderr
    assert "pip install 'fastpoplib[imap]'" in out.stderr


@pytest.mark.parametrize(
    "url, problem",
    [
        ("http://me@host/INBOX", "must start with imaps://"),
        ("imaps://host/INBOX", "needs a user and a host"),
        ("imaps://me:secret@host/INBOX", "holds a password"),
        ("imaps://me@host:99999/INBOX", "is not valid"),
    ],
)
def test_bad_imap_urls_are_usage_errors(url: str, problem: str, tmp_path: Path) -> None:
    out = run(
        "fetch",
        "--host",
        "127.0.0.1",
        "--user",
        "u",
        "--password-env",
        "X",
        "--imap",
        url,
        "--imap-password-env",
        "X",
        env=dict(os.environ, XDG_STATE_HOME=str(tmp_path)),
    )
    assert out.returncode == 2, out.stderr
    assert problem in out.stderr and "secret" not in out.stderr


@pytest.fixture(scope="module")
def dovecot_plain_imap() -> Any:
    """An IMAP server without MULTIAPPEND or LITERAL+, as Gmail's and Outlook's are, that
    takes XOAUTH2 but not OAUTHBEARER, as Outlook's does (Dovecot 2.3 checks the token as the
    user's password)."""
    from support.dovecot import _instance

    with _instance(strict=False, protocols=("pop3", "imap")) as dove:
        with open(dove.conf, "a") as conf:
            conf.write("protocol imap {\n  imap_capability = IMAP4rev1 UIDPLUS IDLE\n}\n")
            conf.write("auth_mechanisms = plain login xoauth2\n")
        with dove:
            yield dove


def test_without_multiappend_each_message_is_appended_and_a_bare_cr_is_not_rewritten(dovecot_plain_imap: InteropDovecot, env: dict[str, str]) -> None:
    users = add_users(dovecot_plain_imap, dest=[])
    bare_cr = b"Subject: bare CR\r\nMessage-ID: <cr@example.org>\r\n\r\nbefore\rafter\r\n"
    box = Mailbox([*sample_mailbox(5, seed=6).messages, bare_cr])
    with POP3TestServer(mailbox=box, users={"user": PASSWORD}, stls=False) as srv:
        expected = list(srv.mailbox.messages)
        pop = ["--host", srv.host, "--port", str(srv.port), "--user", "user", "--tls", "none", "--insecure", "--password-env", "POP_PW"]
        out = run("fetch", "--delete", *pop, *imap_args(dovecot_plain_imap, users["dest"]), env=env)
        assert out.returncode == 1, out.stderr
        assert "bare CR or LF" in out.stderr and "(UID" in out.stderr
        assert srv.mailbox.messages == [bare_cr]  # the only one kept on the server
    assert bodies(dovecot_plain_imap, users["dest"]) == Counter(m for m in expected if m != bare_cr)


def test_oauth2_token_command_logs_in_with_xoauth2(dovecot_plain_imap: InteropDovecot, env: dict[str, str]) -> None:
    users = add_users(dovecot_plain_imap, src=sample_mailbox(2).messages, dest=[])
    url = f"imaps://{users['dest']}@{dovecot_plain_imap.host}:{dovecot_plain_imap.imaps_port}/INBOX"
    token = ["--imap-oauth2-token-command", f"printf '%s\\n' {PASSWORD}", "--imap-cafile", dovecot_plain_imap.cafile]
    mark = dovecot_plain_imap.log_mark()
    out = run("-vv", "fetch", *source_args(dovecot_plain_imap, users["src"]), "--imap", url, *token, env=env)
    assert out.returncode == 0, out.stderr
    assert "AUTHENTICATE" in out.stderr and PASSWORD not in out.stderr  # -vv logs the IMAP commands, never the token
    assert f"user=<{users['dest']}>, method=XOAUTH2" in dovecot_plain_imap.wait_for_log("method=XOAUTH2", mark)
    assert sum(bodies(dovecot_plain_imap, users["dest"]).values()) == 2
    refused = run(
        "fetch",
        *source_args(dovecot_plain_imap, users["src"]),
        "--imap",
        url,
        "--imap-oauth2-token-command",
        "echo expired-token",
        "--imap-cafile",
        dovecot_plain_imap.cafile,
        env=env,
    )
    assert refused.returncode == 3 and "refused the login" in refused.stderr and "expired-token" not in refused.stderr


def kick(dove: InteropDovecot, user: str) -> None:
    """The server drops the user's connections (``doveadm kick``), and we wait until it says so."""
    from fastpoplib.testing.dovecot import DOVEADM

    mark = dove.log_mark()
    subprocess.run([DOVEADM, "-c", str(dove.conf), "kick", user], check=True, capture_output=True, timeout=30)
    dove.wait_for_log("Disconnected: Server shutting down", mark)


def test_a_connection_dropped_during_append_keeps_the_message_and_one_dropped_while_idle_is_reopened(
    dovecot_mail: InteropDovecot, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    users = add_users(dovecot_mail, dest=[])
    message = four_kb(1, "dropped")[0]
    dest = open_destination(dovecot_mail, users["dest"], "INBOX", tmp_path)
    dest.idle_check = float("inf")  # no NOOP first: the drop shows during the APPEND
    kick(dovecot_mail, users["dest"])
    [outcome] = deliver(dest, "u1-1", message)
    assert isinstance(outcome, Refusal) and outcome.stop
    assert "connection to the IMAP server was lost during APPEND" in outcome.reason and "stays on the POP server" in outcome.reason
    assert "u1-1" in Journal(dest.journal.path).intents  # its outcome is unknown: the next run looks
    dest.close()
    again = open_destination(dovecot_mail, users["dest"], "INBOX", tmp_path)
    try:
        assert again.stored_keys() == set()  # not in the folder: it will be appended
        again.idle_check = 0.0
        kick(dovecot_mail, users["dest"])
        [outcome] = deliver(again, "u1-1", message)
        assert isinstance(outcome, Receipt), outcome
    finally:
        again.close()
    assert list(bodies(dovecot_mail, users["dest"])) == [message]


def test_imap_url_forms() -> None:
    url = ImapURL("imaps://me%40example.org@imap.example.org/Archive%2F2026")
    assert (url.tls, url.user, url.host, url.port, url.folder) == (True, "me@example.org", "imap.example.org", 993, "Archive/2026")
    url = ImapURL("imap://me@[::1]:1143")
    assert (url.tls, url.host, url.port, url.folder) == (False, "::1", 1143, "INBOX")


@pytest.mark.parametrize(
    "headers, expected",
    [
        (
            b"Received: by a; Tue, 02 Jan 2024 10:00:00 +0100\r\nReceived: by b; Mon, 01 Jan 2024 08:00:00 +0000\r\nDate: Sun, 31 Dec 2023 23:00:00 +0000\r\n",
            "2024-01-02T10:00:00+01:00",
        ),
        (b"Received: from a by b\r\nDate: Sun, 31 Dec 2023 23:00:00 -0500\r\n", "2023-12-31T23:00:00-05:00"),  # no date in Received
        (b"Received: by a; yesterday\r\nDate: Sun, 31 Dec 2023 23:00:00 -0000\r\n", "2023-12-31T23:00:00+00:00"),  # unparsable, zone unknown
        (b"Subject: nothing to go by\r\n", None),
        (b"Date: Tue, 31 Dec 1850 23:00:00 +0000\r\n", None),  # before 1900: not a date a client would sort by
    ],
)
def test_internal_date_is_the_first_received_else_date(headers: bytes, expected: str | None) -> None:
    from fastpoplib._destinations import internal_date

    when = internal_date(headers + b"\r\nbody\r\nReceived: in the body; Tue, 02 Jan 2024 10:00:00 +0100\r\n")
    assert (when.isoformat() if when else None) == expected


def test_an_untrusted_imap_certificate_is_a_sentence_naming_the_option(dovecot_mail: InteropDovecot, env: dict[str, str]) -> None:
    users = add_users(dovecot_mail, src=sample_mailbox(1).messages, dest=[])
    url = f"imaps://{users['dest']}@{dovecot_mail.host}:{dovecot_mail.imaps_port}/INBOX"
    out = run("fetch", *source_args(dovecot_mail, users["src"]), "--imap", url, "--imap-password-env", "IMAP_PW", env=env)
    assert out.returncode == 4, out.stderr
    assert "certificate is not trusted" in out.stderr and "--imap-cafile" in out.stderr
    assert "Traceback" not in out.stderr


def test_oauthbearer_is_preferred_when_offered(dovecot_mail: InteropDovecot, env: dict[str, str]) -> None:
    users = add_users(dovecot_mail, src=sample_mailbox(1).messages, dest=[])
    url = f"imaps://{users['dest']}@{dovecot_mail.host}:{dovecot_mail.imaps_port}/INBOX"
    mark = dovecot_mail.log_mark()
    out = run(
        "fetch", *source_args(dovecot_mail, users["src"]), "--imap", url, "--imap-cafile", dovecot_mail.cafile,
        "--imap-oauth2-token-command", f"printf '%s\\n' {PASSWORD}", env=env,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert f"user=<{users['dest']}>, method=OAUTHBEARER" in dovecot_mail.wait_for_log("method=OAUTHBEARER", mark)


def test_a_message_the_imap_server_will_not_take_does_not_hold_up_its_batch(dovecot_mail: InteropDovecot, env: dict[str, str]) -> None:
    """Dovecot refuses a message over its size limit (NO [LIMIT]): MULTIAPPEND refuses the
    whole batch, so each message is then appended alone, and only that one stays behind."""
    users = add_users(dovecot_mail, dest=[])
    huge = b"Subject: too big\r\nMessage-ID: <big@example.org>\r\n\r\n" + (b"z" * 76 + b"\r\n") * 14_000  # 1.1 MB
    good = sample_mailbox(6, seed=12).messages
    with POP3TestServer(mailbox=Mailbox([*good[:3], huge, *good[3:]]), users={"user": PASSWORD}, stls=False) as srv:
        expected = [m for m in srv.mailbox.messages if b"too big" not in m]
        pop = ["--host", srv.host, "--port", str(srv.port), "--user", "user", "--tls", "none", "--insecure", "--password-env", "POP_PW"]
        out = run("fetch", "--delete", *pop, *imap_args(dovecot_mail, users["dest"]), env=env)
        assert out.returncode == 1, out.stderr
        assert "message 4" in out.stderr and "refused APPEND: NO [LIMIT]" in out.stderr, out.stderr
        assert len(srv.mailbox) == 1 and b"too big" in srv.mailbox.messages[0]  # only it is left
    assert bodies(dovecot_mail, users["dest"]) == Counter(expected)
