"""UTF8 (RFC 6856) in `fastpoplib fetch`: enabled when CAPA advertises it, so a server that
shows a placeholder to other clients (Courier) sends the real message; never sent otherwise
(Gmail answers an unadvertised UTF8 with -ERR and hangs up)."""

from __future__ import annotations

from fastpoplib.testing import POP3TestServer
from support.cli import account, cli, crlf, maildir_messages

UNICODE = "From: Zoë <zoe@example.org>\nSubject: Grüße aus Köln\n\nÄpfel und Birnen\n".encode()
ASCII = b"From: a@example.org\nSubject: plain\n\nplain text\n"


def test_utf8_is_enabled_when_advertised_and_the_real_message_is_stored(tmp_path):
    md = tmp_path / "md"
    with POP3TestServer(mailbox=[ASCII, UNICODE], utf8=True, utf8_placeholder=True) as srv:
        r = cli("fetch", *account(srv), "--maildir", str(md))
        assert r.returncode == 0, r.stderr
        assert maildir_messages(md) == sorted([crlf(ASCII), crlf(UNICODE)])
        commands = srv.sessions[0].commands
        # RFC 6856 §2: in the AUTHORIZATION state, before the login.
        assert commands.index(b"UTF8") < min(i for i, c in enumerate(commands) if c.startswith((b"AUTH", b"USER", b"APOP")))


def test_utf8_is_never_sent_when_not_advertised(tmp_path):
    md = tmp_path / "md"
    with POP3TestServer(mailbox=[ASCII, UNICODE], utf8=False) as srv:
        r = cli("fetch", *account(srv), "--maildir", str(md))
        assert r.returncode == 0, r.stderr
        assert maildir_messages(md) == sorted([crlf(ASCII), crlf(UNICODE)])
        assert all(not c.upper().startswith(b"UTF8") for s in srv.sessions for c in s.commands)
