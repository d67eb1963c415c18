"""dele_many() when the server refuses a DELE: the exception says exactly which messages are
marked deleted, rset() undoes them, and QUIT removes only those."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest

import fastpoplib
from support.clients import logged_in
from fastpoplib.testing import Fault, POP3TestServer, sample_mailbox


@pytest.mark.parametrize("pipelining", [True, False])
def test_refused_dele_names_what_is_marked(kind: str, pipelining: bool, pop3_server_factory: Any) -> None:
    srv = pop3_server_factory(pipelining=pipelining)
    p = logged_in(kind, srv.host, srv.port)
    p.capa()
    p.dele(3)  # DELE 3 again is refused: "already deleted"
    with pytest.raises(fastpoplib.DeleteError) as info:
        p.dele_many([1, 2, 3, 4, 5, 99, 6])
    err = info.value
    assert isinstance(err, fastpoplib.ServerError)
    assert err.deleted == [1, 2, 4, 5, 6]
    assert [n for n, _ in err.refused] == [3, 99]
    assert all(isinstance(e, fastpoplib.ServerError) for _, e in err.refused)
    assert err.response.startswith(b"-ERR")
    assert "marked deleted: 1, 2, 4, 5, 6" in str(err) and "rset()" in str(err)
    count = p.stat()[0]
    assert count == 12 - 6  # 3 earlier, then 1, 2, 4, 5, 6: the session is in step
    p.quit()
    assert len(srv.mailbox_for("user")) == 12 - 6


def test_rset_undoes_the_deletions_the_error_lists(kind: str, pop3_server: Any) -> None:
    p = logged_in(kind, pop3_server.host, pop3_server.port)
    with pytest.raises(fastpoplib.DeleteError) as info:
        p.dele_many([1, 99, 2])
    assert info.value.deleted == [1, 2]
    p.rset()
    assert p.stat()[0] == 12
    p.quit()
    assert len(pop3_server.mailbox_for("user")) == 12


def test_all_accepted_returns_the_replies(kind: str, pop3_server: Any) -> None:
    p = logged_in(kind, pop3_server.host, pop3_server.port)
    assert p.dele_many([1, 2]) == [b"+OK message 1 deleted", b"+OK message 2 deleted"]
    p.quit()


def test_fetch_delete_counts_and_forgets_only_what_was_deleted(tmp_path: Any) -> None:
    """`fastpoplib fetch --delete` where the server refuses one DELE: the others count as
    deleted at once, the refused one stays on the server and goes on the next run."""
    md = tmp_path / "md"
    fault = Fault.reply(b"-ERR [SYS/TEMP] message 2 is locked\r\n", on="DELE", skip=1)
    env = dict(os.environ, POP_PW="password")
    with POP3TestServer(mailbox=sample_mailbox(5), stls=False, faults=[fault]) as srv:
        args = [sys.executable, "-m", "fastpoplib", "fetch", "--host", srv.host, "--port", str(srv.port), "--user", "user",
                "--tls", "none", "--insecure", "--password-env", "POP_PW", "--maildir", str(md), "--delete"]
        first = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120, check=False)
        assert "5 new message(s)" in first.stdout and "4 deleted" in first.stdout, first.stdout + first.stderr
        assert "refused DELE for message(s) 2" in first.stderr
        assert len(srv.mailbox) == 1
        second = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120, check=False)
        assert second.returncode == 0, second.stderr
        assert "0 new message(s)" in second.stdout and "1 deleted" in second.stdout, second.stdout
        assert len(srv.mailbox) == 0
    assert len(list((md / "new").iterdir())) == 5
