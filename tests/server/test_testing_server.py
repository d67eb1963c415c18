"""Tests of the shipped test server (fastpoplib.testing), with stdlib poplib and raw sockets as
clients, so that the server is checked independently of fastpoplib's own client."""

from __future__ import annotations

import base64
import hashlib
import hmac
import poplib
import socket
import ssl
import threading
import time
from typing import Any, Callable, List

import pytest

from fastpoplib.testing import Fault, Mailbox, POP3TestServer, SASLQuirks, sample_mailbox

USER, PASSWORD = "user", "password"
TIMEOUT = 5.0


class Raw:
    """A line-oriented raw client, to see exactly what the server sends."""

    def __init__(self, address: Any, greeting: bool = True) -> None:
        self.sock = socket.create_connection(address, timeout=TIMEOUT)
        self.file = self.sock.makefile("rb")
        self.greeting = self.line() if greeting else b""

    def line(self) -> bytes:
        return self.file.readline()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def cmd(self, line: str) -> bytes:
        self.send(line.encode() + b"\r\n")
        return self.line()

    def lines(self) -> List[bytes]:
        """The rest of a multi-line response, terminator excluded, still dot-stuffed."""
        out = []
        while (line := self.line()) != b".\r\n":
            assert line.endswith(b"\r\n"), line
            out.append(line[:-2])
        return out

    def login(self, user: str = USER, password: str = PASSWORD) -> None:
        assert self.cmd(f"USER {user}").startswith(b"+OK")
        assert self.cmd(f"PASS {password}").startswith(b"+OK")

    def close(self) -> None:
        self.file.close()
        self.sock.close()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture
def raw(pop3_server: POP3TestServer) -> Any:
    clients: List[Raw] = []

    def connect(server: POP3TestServer = pop3_server, **kw: Any) -> Raw:
        clients.append(Raw(server.address, **kw))
        return clients[-1]

    yield connect
    for client in clients:
        client.close()


def logged_in(server: POP3TestServer) -> poplib.POP3:
    p = poplib.POP3(server.host, server.port, timeout=TIMEOUT)
    p.user(USER)
    p.pass_(PASSWORD)
    return p


# --- mailbox -----------------------------------------------------------------------------------


def test_sample_mailbox_is_deterministic_and_covers_the_hard_cases() -> None:
    box = sample_mailbox()
    assert len(box) == 12 and box.messages == sample_mailbox().messages
    assert box.messages != sample_mailbox(seed=1).messages
    assert box.uids == [f"uid-{i:04d}" for i in range(1, 13)]
    lines = [line for m in box for line in m.lines]
    assert b"." in lines and any(line.startswith(b"..") for line in lines)
    assert max(len(line) for line in lines) == 998
    assert any(b"multipart/mixed" in m.data and b"base64" in m.data for m in box)
    assert any(b"charset=utf-8" in m.data and m.data.decode("utf-8") != m.data.decode("latin-1") for m in box)
    for m in box:
        for header in (b"From:", b"To:", b"Subject:", b"Date:", b"Message-ID:", b"MIME-Version:"):
            assert header in m.data
        assert m.data.endswith(b"\r\n") and b"\r\n" not in m.data.replace(b"\r\n", b"")


def test_mailbox_sizes_count_crlf_whatever_the_input_line_ends() -> None:
    box = Mailbox([b"Subject: a\n\nbody\n", b"Subject: a\r\n\r\nbody\r\n", b"Subject: a\n\nbody"])
    assert [m.size for m in box] == [20, 20, 20]
    assert box[0].data == b"Subject: a\r\n\r\nbody\r\n"
    assert box[0].top(0) == [b"Subject: a", b""]


def test_mailbox_uids_are_validated_and_unique() -> None:
    assert Mailbox([b"a", b"b"], uids=["x", "y"]).uids == ["x", "y"]
    with pytest.raises(ValueError):
        Mailbox([b"a", b"b"], uids=["x", "x"])
    with pytest.raises(ValueError):
        Mailbox([b"a"], uids=["has space"])
    box = Mailbox([b"a"], uids=["uid-0002"])
    assert box.add(b"b").uid == "uid-0001" and box.add(b"c").uid == "uid-0003"


# --- POP3 commands -----------------------------------------------------------------------------


def test_greeting_has_an_apop_timestamp(pop3_server: POP3TestServer) -> None:
    p = poplib.POP3(pop3_server.host, pop3_server.port, timeout=TIMEOUT)
    assert p.getwelcome().startswith(b"+OK fastpoplib test server ready <") and p.getwelcome().endswith(b"@fastpoplib.test>")
    p.quit()


def test_user_pass_and_wrong_password(pop3_server: POP3TestServer) -> None:
    p = poplib.POP3(pop3_server.host, pop3_server.port, timeout=TIMEOUT)
    p.user(USER)
    with pytest.raises(poplib.error_proto, match=r"-ERR \[AUTH\] Authentication failed\."):
        p.pass_("wrong")
    with pytest.raises(poplib.error_proto):
        p.pass_(PASSWORD)  # USER must come again after a failure
    p.user(USER)
    assert p.pass_(PASSWORD).startswith(b"+OK")
    assert p.stat() == (12, pop3_server.mailbox.total_size)
    p.quit()


def test_apop(pop3_server: POP3TestServer) -> None:
    p = poplib.POP3(pop3_server.host, pop3_server.port, timeout=TIMEOUT)
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
        p.apop(USER, "wrong")
    assert p.apop(USER, PASSWORD).startswith(b"+OK")
    p.quit()


def test_apop_off(pop3_server_factory: Callable[..., POP3TestServer], raw: Any) -> None:
    client = raw(pop3_server_factory(apop=False))
    assert client.greeting == b"+OK fastpoplib test server ready\r\n"
    assert client.cmd("APOP user 0123456789abcdef0123456789abcdef") == b"-ERR Unknown command\r\n"


def test_apop_rfc1939_vector(pop3_server_factory: Callable[..., POP3TestServer], raw: Any) -> None:
    srv = pop3_server_factory(users={"mrose": "tanstaaf"}, greeting=b"+OK POP3 server ready <1896.697170952@dbc.mtview.ca.us>")
    client = raw(srv)
    assert client.greeting == b"+OK POP3 server ready <1896.697170952@dbc.mtview.ca.us>\r\n"
    assert client.cmd("APOP mrose dïgest").startswith(b"-ERR [AUTH]")  # non-ASCII: refused, no crash
    assert client.cmd("APOP mrose c4c9334bac560ecc979e58001b3e22fb").startswith(b"+OK")


def test_list_uidl_retr_top_match_the_mailbox(pop3_server: POP3TestServer) -> None:
    box = pop3_server.mailbox
    p = logged_in(pop3_server)
    resp, listing, _ = p.list()
    assert listing == [f"{n} {m.size}".encode() for n, m in enumerate(box, 1)]
    assert p.uidl()[1] == [f"{n} {m.uid}".encode() for n, m in enumerate(box, 1)]
    assert p.list(3) == f"+OK 3 {box[2].size}".encode() and p.uidl(3) == f"+OK 3 {box[2].uid}".encode()
    for n, m in enumerate(box, 1):
        resp, lines, octets = p.retr(n)
        assert lines == m.lines and octets == m.size  # poplib unstuffs and counts CRLFs
    header = box[0].lines[: box[0].lines.index(b"") + 1]
    assert p.top(1, 0)[1] == header and p.top(1, 2)[1] == box[0].lines[: len(header) + 2]
    p.quit()


def test_multiline_responses_are_dot_stuffed(pop3_server: POP3TestServer, raw: Any) -> None:
    client = raw()
    client.login()
    assert client.cmd("RETR 3").startswith(b"+OK")
    sent = client.lines()
    assert b".." in sent and b"...hidden line" not in sent and b"..hidden line" in sent
    assert [line[1:] if line.startswith(b".") else line for line in sent] == pop3_server.mailbox[2].lines


def test_deletions_apply_only_at_quit(pop3_server: POP3TestServer, raw: Any) -> None:
    p = logged_in(pop3_server)
    p.dele(1)
    with pytest.raises(poplib.error_proto, match="message 1 already deleted"):
        p.retr(1)
    with pytest.raises(poplib.error_proto, match="already deleted"):
        p.list(1)
    assert p.stat()[0] == 11 and len(p.list()[1]) == 11
    p.close()  # dropped without QUIT: nothing is deleted
    assert pop3_server.wait_for_sessions_closed(TIMEOUT)
    assert len(pop3_server.mailbox) == 12

    p = logged_in(pop3_server)
    p.dele(1)
    p.rset()
    p.dele(2)
    assert p.quit() == b"+OK fastpoplib test server signing off (11 messages left)"
    assert pop3_server.mailbox.uids[:2] == ["uid-0001", "uid-0003"]


def test_capa_depends_on_state_and_tls(pop3_server: POP3TestServer) -> None:
    p = poplib.POP3(pop3_server.host, pop3_server.port, timeout=TIMEOUT)
    before = p.capa()
    assert list(before) == ["TOP", "UIDL", "RESP-CODES", "PIPELINING", "AUTH-RESP-CODE", "USER", "SASL", "STLS", "UTF8"]
    assert before["SASL"] == ["PLAIN", "LOGIN", "CRAM-MD5", "XOAUTH2"]
    p.user(USER)
    p.pass_(PASSWORD)
    assert list(p.capa()) == ["TOP", "UIDL", "RESP-CODES", "PIPELINING", "AUTH-RESP-CODE", "UTF8"]
    p.quit()


def test_capabilities_override_and_options(pop3_server_factory: Callable[..., POP3TestServer]) -> None:
    srv = pop3_server_factory(capabilities=["TOP", "X-FOO bar"])
    p = poplib.POP3(srv.host, srv.port, timeout=TIMEOUT)
    assert p.capa() == {"TOP": [], "X-FOO": ["bar"]}
    p.quit()
    srv = pop3_server_factory(stls=False, utf8=False, pipelining=False, sasl=(), expire="NEVER", login_delay=60)
    p = poplib.POP3(srv.host, srv.port, timeout=TIMEOUT)
    assert list(p.capa()) == ["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "LOGIN-DELAY", "EXPIRE", "USER"]
    for command in ("STLS", "UTF8", "AUTH PLAIN"):
        with pytest.raises(poplib.error_proto, match="Unknown command"):
            p._shortcmd(command)
    p.quit()


def test_errors_and_case_insensitivity(pop3_server: POP3TestServer, raw: Any) -> None:
    client = raw()
    assert client.cmd("STAT") == b"-ERR Command not valid in this state\r\n"
    assert client.cmd("XYZZY") == b"-ERR Unknown command\r\n"
    assert client.cmd("user user").startswith(b"+OK") and client.cmd("pass password").startswith(b"+OK")
    assert client.cmd("stat") == f"+OK 12 {pop3_server.mailbox.total_size}\r\n".encode()
    for bad in ("RETR", "RETR x", "RETR 0", "RETR 13", "RETR -1", "TOP 1", "TOP 1 x", "LIST 1 2", "DELE", "STAT 1", "USER x"):
        assert client.cmd(bad).startswith(b"-ERR"), bad
    assert client.cmd("NOOP") == b"+OK\r\n"
    assert client.cmd("QUIT").startswith(b"+OK")


def test_line_length_limits(pop3_server: POP3TestServer, raw: Any) -> None:
    client = raw()
    assert client.cmd("NOOP " + "x" * 250) == b"-ERR line too long\r\n"
    assert client.cmd("USER " + "x" * 100_000) == b"-ERR line too long\r\n"
    assert client.cmd("CAPA").startswith(b"+OK")  # the session goes on
    client.lines()
    # An XOAUTH2 token over 4 KiB is fine, in an initial response or a continuation line.
    token = "t" * 5000
    pop3_server.oauth2_tokens = {USER: token}
    response = b64(f"user={USER}\x01auth=Bearer {token}\x01\x01".encode())
    assert client.cmd(f"AUTH XOAUTH2 {response}").startswith(b"+OK")


def test_utf8_only_before_login(pop3_server: POP3TestServer, raw: Any) -> None:
    client = raw()
    assert client.cmd("UTF8") == b"+OK UTF8 enabled\r\n"
    client.login()
    assert client.cmd("UTF8").startswith(b"-ERR")
    assert pop3_server.wait_for_sessions()[0].utf8


def test_unicode_user_name(pop3_server_factory: Callable[..., POP3TestServer], raw: Any) -> None:
    srv = pop3_server_factory(users={"jörg": "pässword"})
    client = raw(srv)
    client.cmd("UTF8")
    client.send("USER jörg\r\nPASS pässword\r\n".encode())
    assert client.line().startswith(b"+OK") and client.line().startswith(b"+OK")


def test_pipelined_commands_are_answered_in_order(pop3_server: POP3TestServer, raw: Any) -> None:
    client = raw()
    client.login()
    client.send(b"".join(f"LIST {n % 12 + 1}\r\n".encode() for n in range(100)) + b"UIDL\r\nNOOP\r\n")
    sizes = [m.size for m in pop3_server.mailbox]
    for n in range(100):
        assert client.line() == f"+OK {n % 12 + 1} {sizes[n % 12]}\r\n".encode()
    assert client.line().startswith(b"+OK") and len(client.lines()) == 12
    assert client.line() == b"+OK\r\n"


def test_maildrop_in_use(pop3_server: POP3TestServer, pop3_server_factory: Callable[..., POP3TestServer]) -> None:
    first = logged_in(pop3_server)
    second = poplib.POP3(pop3_server.host, pop3_server.port, timeout=TIMEOUT)
    second.user(USER)
    with pytest.raises(poplib.error_proto, match=r"-ERR \[IN-USE\]"):
        second.pass_(PASSWORD)
    first.quit()
    second.user(USER)
    assert second.pass_(PASSWORD).startswith(b"+OK")
    second.quit()

    shared = pop3_server_factory(allow_concurrent=True)
    a, b = logged_in(shared), logged_in(shared)
    a.quit()
    b.quit()


def test_login_delay(pop3_server_factory: Callable[..., POP3TestServer]) -> None:
    srv = pop3_server_factory(login_delay=60)
    logged_in(srv).quit()
    p = poplib.POP3(srv.host, srv.port, timeout=TIMEOUT)
    p.user(USER)
    with pytest.raises(poplib.error_proto, match=r"\[LOGIN-DELAY\]"):
        p.pass_(PASSWORD)
    p.quit()


def test_per_user_mailboxes(pop3_server_factory: Callable[..., POP3TestServer]) -> None:
    srv = pop3_server_factory(users={"a": "1", "b": "2"}, mailbox=[b"Subject: a\n\nx\n"], mailboxes={"b": []})
    for user, password, count in (("a", "1", 1), ("b", "2", 0)):
        p = poplib.POP3(srv.host, srv.port, timeout=TIMEOUT)
        p.user(user)
        p.pass_(password)
        assert p.stat()[0] == count
        p.quit()


# --- TLS -----------------------------------------------------------------------------------------


def test_stls(pop3_server: POP3TestServer) -> None:
    p = poplib.POP3(pop3_server.host, pop3_server.port, timeout=TIMEOUT)
    assert p.stls(context=pop3_server.client_context()) == b"+OK Begin TLS negotiation"
    with pytest.raises(poplib.error_proto, match="TLS already active"):
        p._shortcmd("STLS")
    assert "STLS" not in p.capa()
    p.user(USER)
    p.pass_(PASSWORD)
    assert p.retr(1)[1] == pop3_server.mailbox[0].lines
    p.quit()
    assert pop3_server.sessions[0].tls and pop3_server.sessions[0].quit_received


def test_stls_not_after_login(pop3_server: POP3TestServer) -> None:
    p = logged_in(pop3_server)
    with pytest.raises(poplib.error_proto, match="not valid in this state"):
        p._shortcmd("STLS")
    p.quit()


def test_stls_discards_plaintext_pipelined_after_it(pop3_server: POP3TestServer, raw: Any) -> None:
    client = raw()
    client.send(b"STLS\r\nUSER injected\r\n")
    assert client.line() == b"+OK Begin TLS negotiation\r\n"
    tls = pop3_server.client_context().wrap_socket(client.sock, server_hostname="127.0.0.1")
    tls.sendall(b"CAPA\r\n")
    reply = b""
    while not reply.endswith(b".\r\n"):
        reply += tls.recv(4096)
    assert reply.startswith(b"+OK")
    assert pop3_server.sessions[0].commands == [b"STLS", b"CAPA"]
    tls.close()


def test_implicit_tls_and_certificate(pop3_tls_server: POP3TestServer) -> None:
    assert pop3_tls_server.ca_pem.startswith(b"-----BEGIN CERTIFICATE-----")
    with open(pop3_tls_server.cafile, "rb") as f:
        assert f.read() == pop3_tls_server.ca_pem
    p = poplib.POP3_SSL(pop3_tls_server.host, pop3_tls_server.port, timeout=TIMEOUT, context=pop3_tls_server.client_context())
    assert "STLS" not in p.capa()
    p.user(USER)
    p.pass_(PASSWORD)
    assert p.stat()[0] == 12
    p.quit()
    ctx = ssl.create_default_context(cafile=pop3_tls_server.cafile)
    with socket.create_connection(pop3_tls_server.address, timeout=TIMEOUT) as sock:
        with ctx.wrap_socket(sock, server_hostname="localhost") as tls:
            assert tls.recv(100).startswith(b"+OK")


def test_untrusted_client_fails_verification(pop3_tls_server: POP3TestServer) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        poplib.POP3_SSL(pop3_tls_server.host, pop3_tls_server.port, timeout=TIMEOUT, context=ssl.create_default_context())


def test_ipv6_loopback(pop3_server_factory: Callable[..., POP3TestServer]) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        srv = pop3_server_factory(host="::1")
    except OSError:
        pytest.skip("no IPv6 loopback")
    p = poplib.POP3(srv.host, srv.port, timeout=TIMEOUT)
    p.stls(context=srv.client_context())  # the certificate covers ::1
    p.user(USER)
    p.pass_(PASSWORD)
    p.quit()


def test_only_loopback_addresses() -> None:
    for host in ("0.0.0.0", "192.0.2.1", "example.com"):
        with pytest.raises(ValueError):
            POP3TestServer(host=host)


# --- SASL ----------------------------------------------------------------------------------------


def plain(user: str = USER, password: str = PASSWORD) -> str:
    return b64(f"\0{user}\0{password}".encode())


def test_auth_lists_mechanisms(raw: Any) -> None:
    client = raw()
    assert client.cmd("AUTH").startswith(b"+OK")
    assert client.lines() == [b"PLAIN", b"LOGIN", b"CRAM-MD5", b"XOAUTH2"]
    assert client.cmd("AUTH GSSAPI").startswith(b"-ERR")


def test_auth_plain_with_poplib(pop3_server: POP3TestServer) -> None:
    p = poplib.POP3(pop3_server.host, pop3_server.port, timeout=TIMEOUT)
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
        p._shortcmd("AUTH PLAIN " + plain(password="wrong"))
    assert p._shortcmd("AUTH PLAIN " + plain()).startswith(b"+OK")
    assert p.stat()[0] == 12
    p.quit()


def test_auth_plain_two_steps_and_cancel(raw: Any) -> None:
    client = raw()
    assert client.cmd("AUTH PLAIN") == b"+ \r\n"
    assert client.cmd("*") == b"-ERR AUTH cancelled by the client\r\n"
    assert client.cmd("AUTH PLAIN") == b"+ \r\n"
    assert client.cmd("not base64!").startswith(b"-ERR")
    assert client.cmd("AUTH PLAIN") == b"+ \r\n"
    assert client.cmd(plain()).startswith(b"+OK")


def test_auth_login(raw: Any) -> None:
    client = raw()
    assert client.cmd("AUTH LOGIN") == f"+ {b64(b'Username:')}\r\n".encode()
    assert client.cmd(b64(USER.encode())) == f"+ {b64(b'Password:')}\r\n".encode()
    assert client.cmd(b64(PASSWORD.encode())).startswith(b"+OK")
    second = raw()
    assert second.cmd(f"AUTH login {b64(USER.encode())}") == f"+ {b64(b'Password:')}\r\n".encode()
    assert second.cmd(b64(b"wrong")).startswith(b"-ERR [AUTH]")


def test_auth_cram_md5(raw: Any) -> None:
    client = raw()
    assert client.cmd("AUTH CRAM-MD5 " + b64(b"x")).startswith(b"-ERR")  # no initial response
    challenge_line = client.cmd("AUTH CRAM-MD5")
    assert challenge_line.startswith(b"+ ")
    challenge = base64.b64decode(challenge_line[2:])
    assert challenge.startswith(b"<") and challenge.endswith(b"@fastpoplib.test>")
    digest = hmac.new(PASSWORD.encode(), challenge, hashlib.md5).hexdigest()
    assert client.cmd(b64(f"{USER} {digest}".encode())).startswith(b"+OK")


def test_auth_xoauth2(pop3_server: POP3TestServer, raw: Any) -> None:
    pop3_server.oauth2_tokens = {USER: "ya29.good"}
    client = raw()
    bad = b64(f"user={USER}\x01auth=Bearer ya29.bad\x01\x01".encode())
    error = client.cmd(f"AUTH XOAUTH2 {bad}")
    assert error.startswith(b"+ ")
    assert base64.b64decode(error[2:]) == b'{"status": "401", "schemes": "bearer", "scope": "https://mail.google.com/"}'
    assert client.cmd("") == b"-ERR [AUTH] Authentication failed.\r\n"
    assert client.cmd("AUTH XOAUTH2") == b"+ \r\n"  # two-step form
    assert client.cmd(b64(f"user={USER}\x01auth=Bearer ya29.good\x01\x01".encode())).startswith(b"+OK")


def test_auth_oauthbearer(pop3_server_factory: Callable[..., POP3TestServer], raw: Any) -> None:
    srv = pop3_server_factory(sasl=["OAUTHBEARER"], oauth2_tokens={USER: "tok"})
    client = raw(srv)
    message = "n,a={},\x01host=127.0.0.1\x01port=110\x01auth=Bearer {}\x01\x01"
    assert client.cmd("AUTH OAUTHBEARER " + b64(message.format(USER, "nope").encode())).startswith(b"+ ")
    assert client.cmd(b64(b"\x01")).startswith(b"-ERR [AUTH]")
    assert client.cmd("AUTH OAUTHBEARER " + b64(message.format(USER, "tok").encode())).startswith(b"+OK")


def scram_proof(hash_name: str, first_bare: str, server_first: str) -> Any:
    attrs = dict(item.split("=", 1) for item in server_first.split(","))
    salted = hashlib.pbkdf2_hmac(hash_name, PASSWORD.encode(), base64.b64decode(attrs["s"]), int(attrs["i"]))
    client_key = hmac.digest(salted, b"Client Key", hash_name)
    without_proof = f"c={b64(b'n,,')},r={attrs['r']}"
    auth_message = f"{first_bare},{server_first},{without_proof}".encode()
    signature = hmac.digest(hashlib.new(hash_name, client_key).digest(), auth_message, hash_name)
    proof = bytes(a ^ b for a, b in zip(client_key, signature))
    expected = hmac.digest(hmac.digest(salted, b"Server Key", hash_name), auth_message, hash_name)
    return b64(f"{without_proof},p={b64(proof)}".encode()), b"v=" + base64.b64encode(expected)


@pytest.mark.parametrize("mechanism,hash_name", [("SCRAM-SHA-1", "sha1"), ("SCRAM-SHA-256", "sha256"), ("SCRAM-SHA-512", "sha512")])
@pytest.mark.parametrize("final", ["valid", "missing", "wrong"])
def test_auth_scram(mechanism: str, hash_name: str, final: str, pop3_server_factory: Callable[..., POP3TestServer], raw: Any) -> None:
    srv = pop3_server_factory(sasl=[mechanism], sasl_quirks=SASLQuirks(scram_server_final=final))
    client = raw(srv)
    first_bare = f"n={USER},r=clientnonce123"
    challenge = client.cmd(f"AUTH {mechanism} " + b64(f"n,,{first_bare}".encode()))
    server_first = base64.b64decode(challenge[2:]).decode()
    assert server_first.startswith("r=clientnonce123") and ",i=4096" in server_first
    client_final, expected = scram_proof(hash_name, first_bare, server_first)
    reply = client.cmd(client_final)
    if final == "missing":  # +OK without the server's signature
        assert reply.startswith(b"+OK")
        return
    signature = base64.b64decode(reply[2:])
    assert (signature == expected) == (final == "valid") and signature.startswith(b"v=")
    assert client.cmd("").startswith(b"+OK")


def test_sasl_quirks_on_the_wire(pop3_server_factory: Callable[..., POP3TestServer], raw: Any) -> None:
    quirks = SASLQuirks(
        cram_md5_unusable=True,
        login_prompts=(b"Benutzername:", b""),
        text_continuation=b"go ahead",
        scram_server_first={"i": "abc"},
        oauth2_error=b"[[1]]",
    )
    srv = pop3_server_factory(sasl=["PLAIN", "LOGIN", "CRAM-MD5", "XOAUTH2", "SCRAM-SHA-256"], sasl_quirks=quirks, allow_concurrent=True)
    client = raw(srv)
    assert client.cmd("AUTH PLAIN") == b"+ go ahead\r\n"
    assert client.cmd(plain()).startswith(b"+OK")
    client = raw(srv)
    assert client.cmd("AUTH LOGIN") == f"+ {b64(b'Benutzername:')}\r\n".encode()
    assert client.cmd(b64(USER.encode())) == b"+ \r\n"
    assert client.cmd(b64(PASSWORD.encode())).startswith(b"+OK")
    client = raw(srv)
    challenge = base64.b64decode(client.cmd("AUTH CRAM-MD5")[2:])
    digest = hmac.new(PASSWORD.encode(), challenge, "md5").hexdigest()
    assert client.cmd(b64(f"{USER} {digest}".encode())).startswith(b"-ERR [AUTH]")  # right digest, refused
    assert base64.b64decode(client.cmd("AUTH XOAUTH2 " + b64(b"user=user\x01auth=Bearer bad\x01\x01"))[2:]) == b"[[1]]"
    assert client.cmd("").startswith(b"-ERR [AUTH]")
    server_first = base64.b64decode(client.cmd("AUTH SCRAM-SHA-256 " + b64(f"n,,n={USER},r=abc".encode()))[2:])
    assert server_first.endswith(b",i=abc")
    assert client.cmd("*") == b"-ERR AUTH cancelled by the client\r\n"


def test_endless_continuations_are_bounded_and_cancellable(pop3_server_factory: Callable[..., POP3TestServer], raw: Any) -> None:
    srv = pop3_server_factory(sasl=["PLAIN"], sasl_quirks=SASLQuirks(endless_continuations=True))
    client = raw(srv)
    assert client.cmd("AUTH PLAIN " + plain()) == b"+ \r\n"
    for _ in range(5):
        assert client.cmd(plain()) == b"+ \r\n"
    assert client.cmd("*") == b"-ERR AUTH cancelled by the client\r\n"
    with pytest.raises(ValueError):
        SASLQuirks(scram_server_final="forged")


# --- faults --------------------------------------------------------------------------------------


def test_fault_reply_replaces_the_reply_without_executing(pop3_server: POP3TestServer, raw: Any) -> None:
    fault = pop3_server.add_fault(Fault.reply(b"+OK 1\r\nbogus", on="stat"))
    client = raw()
    client.login()
    assert client.cmd("STAT") == b"+OK 1\r\n"
    assert client.cmd("NOOP") == b"bogus+OK\r\n"
    assert client.cmd("STAT").startswith(b"+OK 12 ") and fault.fired == 1
    pop3_server.add_fault(Fault.reply(b"+OK\r\n", on="PASS"))
    second = raw()
    second.cmd("USER user")
    assert second.cmd("PASS password") == b"+OK\r\n"
    assert second.cmd("STAT").startswith(b"-ERR")  # not logged in


def test_fault_on_greeting(pop3_server: POP3TestServer, raw: Any) -> None:
    pop3_server.add_fault(Fault.reply(b"-ERR [SYS/TEMP] go away\r\n", on="greeting"))
    assert raw().greeting == b"-ERR [SYS/TEMP] go away\r\n"
    assert raw().greeting.startswith(b"+OK")  # once only


def test_fault_skip_and_times(pop3_server: POP3TestServer, raw: Any) -> None:
    pop3_server.add_fault(Fault.reply(b"-ERR nope\r\n", on="*", skip=2, times=None))
    client = raw()
    assert client.cmd("CAPA").startswith(b"+OK")
    client.lines()
    assert client.cmd("USER user").startswith(b"+OK")
    assert [client.cmd("NOOP") for _ in range(3)] == [b"-ERR nope\r\n"] * 3
    pop3_server.clear_faults()
    assert client.cmd("PASS password").startswith(b"+OK")  # replaced replies executed nothing


def test_fault_stall(pop3_server: POP3TestServer, raw: Any) -> None:
    pop3_server.add_fault(Fault.stall(0.4, on="NOOP"))
    client = raw()
    client.login()
    start = time.monotonic()
    assert client.cmd("NOOP") == b"+OK\r\n"
    assert time.monotonic() - start >= 0.35


def test_fault_drip(pop3_server: POP3TestServer, raw: Any) -> None:
    pop3_server.add_fault(Fault.drip(b"+OK 1 2\r\n", 0.05, on="STAT"))
    client = raw()
    client.login()
    client.send(b"STAT\r\n")
    first = client.sock.recv(100)
    start = time.monotonic()
    rest = b""
    while not (first + rest).endswith(b"\r\n"):
        rest += client.sock.recv(100)
    assert first + rest == b"+OK 1 2\r\n" and len(first) < 9 and time.monotonic() - start >= 0.2


def test_fault_drip_bounded_by_max_seconds(pop3_server: POP3TestServer, raw: Any) -> None:
    pop3_server.add_fault(Fault.drip(b"x" * 100, 0.05, max_seconds=0.3, on="greeting"))
    client = raw(greeting=False)
    data = client.sock.recv(1000)
    while chunk := client.sock.recv(1000):
        data += chunk
    assert 2 <= len(data) < 20  # closed after ~0.3 s


def test_fault_disconnect(pop3_server: POP3TestServer, raw: Any) -> None:
    pop3_server.add_fault(Fault.disconnect(on="RETR"))
    client = raw()
    client.login()
    assert client.cmd("RETR 1") == b""
    assert pop3_server.wait_for_sessions_closed(TIMEOUT)
    assert not pop3_server.sessions[0].quit_received


def test_fault_disconnect_reset(pop3_server: POP3TestServer, raw: Any) -> None:
    pop3_server.add_fault(Fault.disconnect(reset=True, on="NOOP"))
    client = raw()
    client.login()
    client.send(b"NOOP\r\n")
    with pytest.raises(ConnectionResetError):
        client.sock.recv(100)


def test_fault_disconnect_after(pop3_server: POP3TestServer) -> None:
    pop3_server.add_fault(Fault.disconnect_after(b"+OK 100 octets\r\nline 1\r\n", on="RETR"))
    p = logged_in(pop3_server)
    with pytest.raises(poplib.error_proto):  # poplib: b'-ERR EOF'
        p.retr(1)
    p.close()


def test_fault_endless_lines(pop3_server: POP3TestServer, raw: Any) -> None:
    pop3_server.add_fault(Fault.endless_lines(max_seconds=5))
    client = raw()
    client.login()
    assert client.cmd("RETR 1") == b"+OK here it comes\r\n"
    assert all(client.line() == b"x" * 70 + b"\r\n" for _ in range(5000))
    client.close()
    assert pop3_server.wait_for_sessions_closed(TIMEOUT)


def test_fault_endless_lines_bounded(pop3_server: POP3TestServer, raw: Any) -> None:
    pop3_server.add_fault(Fault.endless_lines(max_seconds=0.3, interval=0.01, on="NOOP"))
    client = raw()
    client.login()
    client.send(b"NOOP\r\n")
    start = time.monotonic()
    while client.line():
        pass
    assert time.monotonic() - start < 3


def test_fault_inject_after_stls(pop3_server: POP3TestServer, raw: Any) -> None:
    pop3_server.add_fault(Fault.inject_after_stls(b"+OK injected\r\n"))
    client = raw()
    client.send(b"STLS\r\n")
    # Both lines arrive, in plaintext, before the TLS handshake (read until both are in).
    expected = b"+OK Begin TLS negotiation\r\n+OK injected\r\n"
    received = b""
    client.sock.settimeout(5)
    while len(received) < len(expected):
        piece = client.sock.recv(1000)
        assert piece, "the server closed the connection"
        received += piece
    assert received == expected
    tls = pop3_server.client_context().wrap_socket(client.sock, server_hostname="127.0.0.1")
    tls.sendall(b"NOOP\r\n")
    assert tls.recv(100) == b"-ERR Command not valid in this state\r\n"
    tls.close()


def test_faults_given_to_the_constructor(pop3_server_factory: Callable[..., POP3TestServer], raw: Any) -> None:
    srv = pop3_server_factory(faults=[Fault.reply(b"+OK hi\r\n", on="greeting")])
    assert raw(srv).greeting == b"+OK hi\r\n"


def test_fault_validation() -> None:
    with pytest.raises(ValueError):
        Fault("explode")
    with pytest.raises(ValueError):
        Fault.reply(b"", times=0)
    assert Fault.stall(1e9).seconds == 30.0


# --- sessions and lifecycle ----------------------------------------------------------------------


def test_sessions_are_recorded(pop3_server: POP3TestServer) -> None:
    logged_in(pop3_server).quit()
    p = poplib.POP3(pop3_server.host, pop3_server.port, timeout=TIMEOUT)
    p.sock.close()  # gone without QUIT
    p.file.close()
    assert pop3_server.wait_for_sessions_closed(TIMEOUT)
    first, second = pop3_server.sessions
    assert first.raw_lines == [b"USER user\r\n", b"PASS password\r\n", b"QUIT\r\n"]
    assert first.commands == [b"USER user", b"PASS password", b"QUIT"]
    assert first.quit_received and first.user == USER and first.closed.is_set()
    assert not second.quit_received and second.commands == [] and second.wait_closed(1)


def test_stop_closes_open_connections_quickly(raw: Any) -> None:
    srv = POP3TestServer(stls=False).start()
    client = raw(srv)
    client.login()
    stalled = raw(srv)
    srv.add_fault(Fault.stall(20, on="NOOP"))
    stalled.send(b"NOOP\r\n")
    start = time.monotonic()
    srv.stop()
    srv.stop()  # idempotent
    assert time.monotonic() - start < 2.5
    assert srv.wait_for_sessions_closed(1)
    assert client.line() == b""
    with pytest.raises(OSError):
        socket.create_connection(srv.address, timeout=1)


def test_context_manager_and_list_of_messages() -> None:
    with POP3TestServer([b"Subject: hi\n\nhello\n"], users={"alice": "secret"}, stls=False) as srv:
        p = poplib.POP3(*srv.address, timeout=TIMEOUT)
        p.user("alice")
        p.pass_("secret")
        assert p.retr(1)[1] == [b"Subject: hi", b"", b"hello"]
        p.quit()
    with pytest.raises(RuntimeError):
        srv.client_context()  # no TLS on this server


@pytest.mark.parametrize("mode", ["implicit", "stls"])
def test_stop_ends_a_session_silent_in_the_tls_handshake(mode: str) -> None:
    """A client that connects and never says a word of TLS (implicit TLS, or after STLS)
    holds no session thread past stop()."""
    pytest.importorskip("trustme")
    srv = POP3TestServer(tls="implicit" if mode == "implicit" else "none").start()
    client = socket.create_connection((srv.host, srv.port), timeout=5)
    try:
        if mode == "stls":
            reader = client.makefile("rb")
            reader.readline()
            client.sendall(b"STLS\r\n")
            assert reader.readline().startswith(b"+OK")
        session = srv.wait_for_sessions(1)[0]
        srv.stop()
        assert session.closed.is_set()
        assert not [t for t in threading.enumerate() if t.name == f"pop3-session-{session.peer}" and t.is_alive()]
    finally:
        client.close()
