"""Typed requests: what the client hands the session is a command object (secrets typed as
``_core.Secret``), which renders itself, says its reply's shape and whether it is a login step;
poplib's hand-written lines (``_shortcmd``, ``_longcmd``, ``_putcmd``) still work on top."""

from __future__ import annotations

import asyncio
import pickle
import threading
import time
from typing import Any

import pytest

import fastpoplib
from support.clients import connect
from fastpoplib import _core
from fastpoplib.testing import Fault, POP3TestServer

SECRET = b"hunter2-Sekr1t"


def login(kind: str, server: POP3TestServer, **kw: Any) -> Any:
    pop = connect(kind, server.host, server.port, **kw)
    pop.user("user")
    pop.pass_("password")
    return pop


# -- the command objects ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "shown"),
    [
        (_core.Command.pass_(_core.Secret(SECRET)), "Command(PASS ****)"),
        (_core.Command.apop(b"bob", _core.Secret(SECRET), b"<1896.697170952@dbc.mtview.ca.us>"), "Command(APOP bob ****)"),
        (_core.Command.auth(b"PLAIN", _core.Secret(b"AGJvYgBodW50ZXIyLVNla3Ix")), "Command(AUTH PLAIN ****)"),
        (_core.Command.sasl_response(_core.Secret(SECRET)), "Command(****)"),
        (_core.Command.raw(b"PASS " + SECRET), "Command(PASS ****)"),
    ],
)
def test_a_secret_in_a_command_is_masked_in_repr_and_str(command: Any, shown: str) -> None:
    assert repr(command) == shown
    assert str(command) == shown
    assert SECRET.decode() not in repr(command) + str(command)


def test_a_secret_never_shows_and_cannot_be_pickled() -> None:
    secret = _core.Secret(SECRET)
    assert repr(secret) == str(secret) == "Secret(****)"
    assert f"{secret!r} {secret}" == "Secret(****) Secret(****)"
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(secret)
    with pytest.raises(TypeError):
        _core.Command.pass_(SECRET)  # type: ignore[arg-type]  # a password must come as a Secret


def test_a_command_knows_its_wire_form_shape_and_login_step() -> None:
    assert _core.Command.apop(b"mrose", _core.Secret(b"tanstaaf"), b"<1896.697170952@dbc.mtview.ca.us>").encode() == (
        b"APOP mrose c4c9334bac560ecc979e58001b3e22fb\r\n"  # RFC 1939 §7's example
    )
    assert _core.Command.top(b"1", b"10").encode() == b"TOP 1 10\r\n"
    assert _core.Command.list().multiline and not _core.Command.list(b"3").multiline
    assert _core.Command.user(b"bob").login_step and _core.Command.sasl_cancel().login_step
    assert not _core.Command.raw(b"USER bob").login_step  # poplib's _shortcmd: plain error_proto
    assert _core.Command.raw(b"LIST").multiline and not _core.Command.raw(b"LIST 1").multiline


def test_cr_lf_or_nul_in_an_argument_is_refused_with_a_sentence_that_hides_secrets() -> None:
    with pytest.raises(fastpoplib.InvalidArgumentError, match="the message number contains a LF byte at offset 1"):
        _core.Command.retr(b"1\nDELE 2").encode()
    with pytest.raises(fastpoplib.InvalidArgumentError) as info:
        _core.Command.pass_(_core.Secret(b"hun\r\nter2")).encode()
    assert str(info.value) == "the password contains a CR byte; POP3 arguments may not contain CR, LF or NUL"


# -- through the clients ---------------------------------------------------------------------


def test_an_argument_with_cr_lf_sends_nothing_and_the_connection_goes_on(kind: str, pop3_server: POP3TestServer) -> None:
    pop = login(kind, pop3_server)
    try:
        with pytest.raises(fastpoplib.InvalidArgumentError, match="may not contain CR, LF or NUL"):
            pop.retr("1\r\nDELE 2")
        with pytest.raises(fastpoplib.InvalidArgumentError) as info:
            pop.pass_("hunter2\r\nDELE 2")
        assert "hunter2" not in str(info.value)
        assert pop.noop().startswith(b"+OK")
        assert b"DELE 2" not in b"".join(pop3_server.sessions[-1].commands)
    finally:
        pop.close()


@pytest.mark.parametrize("blank", ["", " ", "\t"])
def test_a_blank_message_number_is_refused_and_replies_stay_in_step(
    kind: str, blank: str, pop3_server: POP3TestServer
) -> None:
    """``uidl("")`` would send ``UIDL `` which the server answers with the whole listing: every
    later reply would be taken for the wrong command. It is refused before anything is sent,
    and a hand-written ``UIDL `` is read as the multi-line reply it gets."""
    pop = login(kind, pop3_server)
    try:
        with pytest.raises(fastpoplib.InvalidArgumentError, match="message number"):
            pop.uidl(blank)
        with pytest.raises(fastpoplib.InvalidArgumentError, match="message number"):
            pop.list(blank)
        stat = pop.stat()
        assert stat[0] == len(pop3_server.mailbox.snapshot())
        resp, lines, _ = pop._longcmd("UIDL ")
        assert resp.startswith(b"+OK") and len(lines) == stat[0]
        assert pop._shortcmd("UIDL  ").startswith(b"+OK")  # its listing is dropped by the next command
        assert pop.stat() == stat
        assert pop.noop().startswith(b"+OK")
    finally:
        pop.close()


def test_shortcmd_and_longcmd_send_lines_as_written(kind: str, pop3_server: POP3TestServer) -> None:
    pop = login(kind, pop3_server)
    try:
        assert pop._shortcmd("noop").startswith(b"+OK")
        resp, lines, _ = pop._longcmd("LIST")
        assert resp.startswith(b"+OK") and lines[0].startswith(b"1 ")
        assert pop._shortcmd(b"STAT").startswith(b"+OK")
        # A hand-written USER refused is poplib's plain error_proto, not a login failure.
        with pytest.raises(fastpoplib.error_proto) as info:
            pop._shortcmd("XTND nothing")
        assert not isinstance(info.value, fastpoplib.AuthenticationError)
    finally:
        pop.close()


def test_shortcmd_retr_leaves_its_body_to_itself_not_to_the_next_command(kind: str, pop3_server: POP3TestServer) -> None:
    """``_shortcmd("RETR 1")`` reads the status line; the body that follows is still that
    reply's (the next command drops it), never the reply to the next RETR."""
    pop = login(kind, pop3_server)
    try:
        messages = pop3_server.mailbox.snapshot()
        assert pop._shortcmd("RETR 1").startswith(b"+OK")
        assert pop.retr(2)[1] == messages[1].lines
        assert pop.retr(1)[1] == messages[0].lines
    finally:
        pop.close()


def test_putcmd_and_getresp_read_the_reply_of_the_line_written_by_hand(pop3_server: POP3TestServer) -> None:
    # poplib's blocking internals: AsyncPOP3 has no _putcmd.
    pop = login("sync", pop3_server)
    try:
        pop._putcmd("UIDL")
        resp, lines, _ = pop._getlongresp()
        assert resp.startswith(b"+OK") and len(lines) == len(pop.list()[1])
    finally:
        pop.close()


def test_a_bare_err_to_a_login_step_is_an_authentication_error(kind: str, pop3_server_factory: Any) -> None:
    server = pop3_server_factory(faults=[Fault.reply(b"-ERR no such user\r\n", on="USER")])
    pop = connect(kind, server.host, server.port)
    try:
        with pytest.raises(fastpoplib.AuthenticationError):
            pop.user("nobody")
    finally:
        pop.close()


def test_a_password_in_debug_output_is_masked(kind: str, pop3_server: POP3TestServer, capsys: Any) -> None:
    pop = connect(kind, pop3_server.host, pop3_server.port)
    try:
        pop.set_debuglevel(2)
        pop.user("user")
        pop.pass_("password")
        pop._shortcmd("NOOP")
    finally:
        pop.close()
    out = capsys.readouterr().out
    assert "PASS ****" in out and "password" not in out.replace("PASS ****", "")


# -- one closed/error state, read from the session -------------------------------------------


def _conn(pop: Any) -> Any:
    """The Rust connection under a client (through the async adapter too)."""
    return getattr(pop, "client", pop)._session


def assert_closed_for(pop: Any, reason: str) -> None:
    """Every accessor tells the one reason the session holds: the reason itself, repr, the TLS
    state and the error the next call raises."""
    assert _conn(pop).closed == reason
    assert repr(getattr(pop, "client", pop)).endswith(" closed>"), repr(pop)
    assert getattr(pop, "client", pop).tls_info is None
    with pytest.raises(fastpoplib.error_proto) as info:
        pop.noop()
    assert str(info.value) == reason


def _oversized_status(on: str) -> Fault:
    # A status line past poplib's 2048-byte _MAXLINE: the reply cannot be framed, fatal.
    return Fault.reply(b"+OK " + b"x" * 3000 + b"\r\n", on=on)


@pytest.mark.parametrize("via", ["rustls", "context"])
def test_after_a_fatal_error_every_accessor_gives_one_reason_and_repr_is_not_tls(
    kind: str, via: str, pop3_server_factory: Any
) -> None:
    pytest.importorskip("trustme")
    server = pop3_server_factory(tls="implicit", faults=[_oversized_status("NOOP")])
    options = {"context": server.client_context()} if via == "context" else {"cafile": server.cafile}
    pop = connect(kind, server.host, server.port, tls=True, **options)
    try:
        assert repr(getattr(pop, "client", pop)).endswith(" TLS>")
        with pytest.raises(fastpoplib.RemoteProtocolError, match="line too long") as info:
            pop.noop()
        reason = _conn(pop).closed
        assert reason is not None and str(info.value) in reason
        assert_closed_for(pop, reason)
    finally:
        pop.close()


def test_a_server_closing_mid_reply_closes_the_session_with_that_reason(kind: str, pop3_server: POP3TestServer) -> None:
    pop3_server.add_fault(Fault.disconnect_after(b"+OK\r\nSubject: cut\r\n", on="RETR"))
    pop = login(kind, pop3_server)
    try:
        with pytest.raises(fastpoplib.ConnectionClosedError) as info:
            pop.retr(1)
        reason = _conn(pop).closed
        # The earlier error's advice is not repeated inside the reason.
        earlier = str(info.value)[: -len("; open a new connection")]
        assert reason == f"the connection was closed after an earlier error ({earlier}); open a new connection"
        assert_closed_for(pop, reason)
    finally:
        pop.close()


@pytest.mark.parametrize("driver", ["rust", "python-ssl"])
def test_close_from_another_thread_interrupts_a_retr_and_every_accessor_agrees(driver: str, pop3_server_factory: Any) -> None:
    if driver == "python-ssl":
        pytest.importorskip("trustme")
        server = pop3_server_factory(tls="implicit", faults=[Fault.stall(10, on="RETR")])
        pop = login("sync", server, tls=True, context=server.client_context())
    else:
        server = pop3_server_factory(faults=[Fault.stall(10, on="RETR")])
        pop = login("sync", server)
    session = server.sessions[-1]

    def watchdog() -> None:
        deadline = time.monotonic() + 5
        while b"RETR 1" not in session.commands and time.monotonic() < deadline:
            time.sleep(0.01)
        pop.close()

    closer = threading.Thread(target=watchdog)
    started = time.monotonic()
    closer.start()
    reason = "the connection is closed; open a new one"
    try:
        # The RETR says why it ended: the close, not the end of stream the close caused.
        with pytest.raises(fastpoplib.POP3Error) as interrupted:
            pop.retr(1)
        assert time.monotonic() - started < 3, "close() did not interrupt the RETR"
        assert str(interrupted.value) == reason
    finally:
        closer.join(5)
    assert pop._session.closed == reason
    assert repr(pop).endswith(" closed>")
    with pytest.raises(fastpoplib.LocalProtocolError) as info:
        pop.noop()
    assert str(info.value) == reason


@pytest.mark.parametrize("via", ["rustls", "context"])
def test_a_cancelled_async_retr_closes_with_one_reason(via: str, pop3_server_factory: Any) -> None:
    """The same sentence whichever TLS carries the bytes (tokio's, or the event loop's with a
    ``context``)."""
    pytest.importorskip("trustme")
    server = pop3_server_factory(tls="implicit", faults=[Fault.stall(10, on="RETR")])
    options = {"context": server.client_context()} if via == "context" else {"cafile": server.cafile}

    async def main() -> None:
        pop = await fastpoplib.AsyncPOP3_SSL.connect(server.host, server.port, 5, **options)
        try:
            await pop.user("user")
            await pop.pass_("password")
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(pop.retr(1), 0.3)
            reason = pop._session.closed
            assert reason == "the connection was closed because an operation was cancelled; open a new connection"
            assert repr(pop).endswith(" closed>") and pop.tls_info is None
            with pytest.raises(fastpoplib.POP3Error) as info:
                await pop.noop()
            assert str(info.value) == reason
            # The one reason stays: closing after it does not replace it.
            await pop.aclose()
            assert pop._session.closed == reason
            with pytest.raises(fastpoplib.LocalProtocolError) as again:
                await pop.noop()
            assert str(again.value) == reason
        finally:
            await pop.aclose()

    asyncio.run(main())


def test_aclose_from_another_task_during_retr_gives_one_reason(pop3_server: POP3TestServer) -> None:
    pop3_server.add_fault(Fault.stall(10, on="RETR"))

    async def main() -> None:
        pop = await fastpoplib.AsyncPOP3.connect(pop3_server.host, pop3_server.port, 5)
        await pop.user("user")
        await pop.pass_("password")
        retr = asyncio.ensure_future(pop.retr(1))
        deadline = time.monotonic() + 5
        while b"RETR 1" not in pop3_server.sessions[-1].commands:
            assert time.monotonic() < deadline, "the server never received RETR"
            await asyncio.sleep(0.01)
        started = time.monotonic()
        await pop.aclose()
        reason = "the connection is closed; open a new one"
        with pytest.raises(fastpoplib.POP3Error) as interrupted:
            await retr
        assert time.monotonic() - started < 3
        assert str(interrupted.value) == reason
        assert pop._session.closed == reason
        assert repr(pop).endswith(" closed>")
        with pytest.raises(fastpoplib.LocalProtocolError) as info:
            await pop.noop()
        assert str(info.value) == reason

    asyncio.run(main())
