"""SASL mechanism objects and the AUTH flow on their own (no server): the RFCs' published
exchanges, how each mechanism refuses a malformed or hostile challenge, and the flow driven
by scripted replies."""

from __future__ import annotations

import base64
import time
import types
from functools import partial

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastpoplib
from fastpoplib import _flows, _login, _sasl


def test_cram_md5_rfc2195() -> None:
    mech = _sasl.CramMD5("tim", "tanstaaftanstaaf")
    assert mech(None) is None  # server-first: no initial response
    challenge = base64.b64decode("PDE4OTYuNjk3MTcwOTUyQHBvc3RvZmZpY2UucmVzdG9uLm1jaS5uZXQ+")
    assert challenge == b"<1896.697170952@postoffice.reston.mci.net>"
    answer = mech(challenge)
    assert answer == "tim b913a602c7eda7a495b4e6e7334d3890"
    assert base64.b64encode(answer.encode()) == b"dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw"


def test_plain_rfc4616() -> None:
    assert _sasl.Plain("tim", "tanstaaftanstaaf")(None) == "\0tim\0tanstaaftanstaaf"
    assert _sasl.Plain("Kurt", "xipj3plmq", authzid="Ursel")(b"") == "Ursel\0Kurt\0xipj3plmq"


def test_login_answers_in_order_whatever_the_prompts() -> None:
    mech = _sasl.Login("Benutzer", "Passwort")
    assert mech(None) is None
    assert mech(b"Kennwort:") == "Benutzer" and not mech.password_sent  # whatever the prompt says
    assert mech(b"") == "Passwort" and mech.password_sent
    with pytest.raises(_sasl.MalformedChallenge):
        mech(b"Password:")


def test_scram_sha1_rfc5802() -> None:
    mech = _sasl.Scram("SCRAM-SHA-1", "user", "pencil", nonce="fyko+d2lbbFgONRv9qkxdawL")
    assert mech(None) == "n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL"
    final = mech(b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096")
    assert final == "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="
    with pytest.raises(_sasl.ServerNotVerified):
        mech.finish()  # +OK before the signature is not success
    assert mech(b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ=") == b""
    mech.finish()


def test_scram_sha256_rfc7677() -> None:
    mech = _sasl.Scram("SCRAM-SHA-256", "user", "pencil", nonce="rOprNGfwEbeRWgbNEkqO")
    assert mech(None) == "n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
    final = mech(b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
    assert final == "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
    assert mech(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=") == b""
    mech.finish()


def _scram_after_first() -> _sasl.Scram:
    mech = _sasl.Scram("SCRAM-SHA-256", "user", "pencil", nonce="rOprNGfwEbeRWgbNEkqO")
    mech(None)
    mech(b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
    return mech


def test_scram_server_final_is_checked() -> None:
    with pytest.raises(_sasl.ServerNotVerified):  # a valid signature for another password
        _scram_after_first()(b"v=" + base64.b64encode(b"\0" * 32))
    with pytest.raises(_sasl.SaslError) as info:
        _scram_after_first()(b"e=invalid-proof")
    assert not isinstance(info.value, (_sasl.MalformedChallenge, _sasl.ServerNotVerified))
    assert "invalid-proof" in str(info.value)
    for bad in (b"v=!!!", b"x", b"v=abc,v=abc", b"\xff"):
        with pytest.raises(_sasl.MalformedChallenge):
            _scram_after_first()(bad)


NONCE = "rOprNGfwEbeRWgbNEkqO"


@pytest.mark.parametrize("server_first", [
    f"r={NONCE}xyz,s=QSXCR+Q6sek8bf92,i=2147483647",   # hours of PBKDF2
    f"r={NONCE}xyz,s=QSXCR+Q6sek8bf92,i=600001",       # just over the cap
    f"r={NONCE}xyz,s=QSXCR+Q6sek8bf92,i=4095",         # under RFC 7677's minimum
    f"r={NONCE}xyz,s=QSXCR+Q6sek8bf92,i=abc",
    f"r={NONCE}xyz,s=QSXCR+Q6sek8bf92,i=-4096",
    f"r={NONCE}xyz,s=QSXCR+Q6sek8bf92,i=\u0664\u0660\u0669\u0666",  # Arabic-Indic digits
    f"r={NONCE}xyz,s=QSXCR+Q6sek8bf92,i=" + "9" * 5000,
    f"r={NONCE}xyz,s=!!!,i=4096",
    f"r={NONCE}xyz,s=,i=4096",
    f"r=forged{NONCE},s=QSXCR+Q6sek8bf92,i=4096",      # does not extend our nonce
    f"r={NONCE},s=QSXCR+Q6sek8bf92,i=4096",            # no server part
    f"m=ext,r={NONCE}xyz,s=QSXCR+Q6sek8bf92,i=4096",   # mandatory extension
    f"s=QSXCR+Q6sek8bf92,r={NONCE}xyz,i=4096",         # out of order
    f"r={NONCE}xyz,i=4096",
    "",
])
def test_scram_refuses_hostile_server_first_quickly(server_first: str) -> None:
    mech = _sasl.Scram("SCRAM-SHA-256", "user", "pencil", nonce=NONCE)
    mech(None)
    started = time.monotonic()
    with pytest.raises(_sasl.MalformedChallenge):
        mech(server_first.encode())
    assert time.monotonic() - started < 0.5


def test_scram_iteration_cap_is_accepted() -> None:
    mech = _sasl.Scram("SCRAM-SHA-256", "user", "pencil", nonce=NONCE)
    mech(None)
    assert mech(f"r={NONCE}xyz,s=QSXCR+Q6sek8bf92,i={_sasl.SCRAM_MAX_ITERATIONS}".encode()).startswith("c=biws,")


def test_scram_names_are_never_mapped_to_another_hash() -> None:
    for name in ("SCRAM-SHA-384", "SCRAM-SHA-224", "SCRAM-MD5", "SCRAM-SHA-256-PLUS"):
        with pytest.raises(ValueError):
            _sasl.Scram(name, "user", "pencil")
        with pytest.raises(ValueError, match="unsupported"):
            _sasl.check_wanted([name], oauth2=False)
    assert _sasl.candidates(["SCRAM-SHA-384", "SCRAM-SHA-256-PLUS"], None, False, user_ok=True, apop_ok=False) == ["USER"]


def test_scram_escapes_the_user_name() -> None:
    assert _sasl.Scram("SCRAM-SHA-1", "a=b,c", "pw", nonce="n0nce")(None) == "n,,n=a=3Db=2Cc,r=n0nce"


def test_candidates_order_and_restriction() -> None:
    offered = ["PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-1", "SCRAM-SHA-256", "XOAUTH2"]
    assert _sasl.candidates(offered, None, False, user_ok=True, apop_ok=True) == [
        "SCRAM-SHA-256", "SCRAM-SHA-1", "CRAM-MD5", "PLAIN", "LOGIN", "USER", "APOP",
    ]
    assert _sasl.candidates(offered, ["USER", "PLAIN"], False, user_ok=True, apop_ok=False) == ["USER", "PLAIN"]
    # Over TLS PLAIN comes before CRAM-MD5: TLS hides the password already.
    assert _sasl.candidates(offered, None, False, user_ok=True, apop_ok=True, tls=True) == [
        "SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN", "LOGIN", "USER", "CRAM-MD5", "APOP",
    ]
    assert _sasl.candidates(offered, None, True, user_ok=True, apop_ok=True) == ["XOAUTH2"]
    with pytest.raises(ValueError):
        _sasl.check_wanted(["PLAIN"], oauth2=True)


def test_rounds_and_challenge_needs_for_plain_callables() -> None:
    def plain(challenge: object) -> str:
        return "\0u\0p"

    assert [_sasl.rounds(m, plain) for m in ("PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-1", "XOAUTH2", "GSSAPI")] == [0, 1, 0, 2, 1, 8]
    assert [_sasl.needs_challenge(m, plain) for m in ("PLAIN", "LOGIN", "OAUTHBEARER", "CRAM-MD5", "GSSAPI")] == [False, False, False, True, True]
    assert _sasl.rounds("GSSAPI", _sasl.Scram("SCRAM-SHA-1", "u", "p")) == 2  # an object's own count wins


def test_error_json_is_parsed_defensively() -> None:
    assert _sasl.parse_error_json(b'{"status":"401","scope":"x"}') == {"status": "401", "scope": "x"}
    assert _sasl.parse_error_json(b'{"a":{"b":["]]]]"]}}') == {"a": {"b": ["]]]]"]}}  # brackets in strings
    deep = b"[" * 1500 + b"]" * 1500
    assert _sasl.parse_error_json(deep) == {"raw": _sasl.printable(deep)}
    hidden = b'{"a":' * 17 + b"1" + b"}" * 17
    assert list(_sasl.parse_error_json(hidden)) == ["raw"]
    huge = b'{"a":"' + b"x" * 5000 + b'"}'
    assert list(_sasl.parse_error_json(huge)) == ["raw"]
    assert _sasl.parse_error_json(b"not json") == {"raw": "not json"}
    assert _sasl.parse_error_json(b"[1, 2]") == {"raw": "[1, 2]"}


def test_oauth2_steps() -> None:
    x = _sasl.OAuth2("XOAUTH2", "me@example.com", "tok")
    assert x(b"go ahead") == "user=me@example.com\x01auth=Bearer tok\x01\x01"
    assert x(b'{"status":"401"}') == b"" and x.details == {"status": "401"}
    o = _sasl.OAuth2("OAUTHBEARER", "me@example.com", "tok")
    assert o(None) == "n,a=me@example.com,\x01auth=Bearer tok\x01\x01"
    assert o(b'{"status":"invalid_token"}') == b"\x01"  # RFC 7628 3.2.3


def test_printable_and_repr_hide_what_they_must() -> None:
    shown = _sasl.printable(b"-ERR \x1b[31mred\x07\r\n\xe2\x80\xae!")
    assert all(c.isprintable() for c in shown) and "red" in shown
    assert len(_sasl.printable(b"x" * 1000)) < 210
    for mech in (
        _sasl.Plain("u", "pw-secret"),
        _sasl.Login("u", "pw-secret"),
        _sasl.CramMD5("u", "pw-secret"),
        _sasl.Scram("SCRAM-SHA-256", "u", "pw-secret"),
        _sasl.OAuth2("XOAUTH2", "u", "pw-secret"),
    ):
        assert "pw-secret" not in repr(mech)


_counts = st.one_of(
    st.just("4096"),  # valid: the server-final message gets fuzzed too
    st.text(alphabet="0123456789-+ abc\u0664", max_size=12).filter(
        lambda i: not (i.isascii() and i.isdigit() and _sasl.SCRAM_MIN_ITERATIONS <= int(i))
    ),  # other valid counts only cost time
)
_server_firsts = st.one_of(
    st.binary(max_size=300),
    st.builds(
        lambda suffix, salt, count, tail: f"r={NONCE}{suffix},s={salt},i={count}{tail}".encode(),
        st.text(alphabet="aZ09~,=\x7f\u00e9", max_size=8),
        st.just("QSXCR+Q6sek8bf92") | st.text(max_size=30),
        _counts,
        st.sampled_from(["", ",x=y", ",", ",m"]),
    ),
)


@settings(max_examples=300, deadline=None)
@given(server_first=_server_firsts, server_final=st.binary(max_size=100))
def test_scram_challenges_either_answer_or_raise_sasl_errors(server_first: bytes, server_final: bytes) -> None:
    """Whatever the server sends, the mechanism answers or raises SaslError (which the flow
    turns into a cancelled exchange): never ValueError, binascii.Error, UnicodeError..."""
    mech = _sasl.Scram("SCRAM-SHA-1", "user", "pencil", nonce=NONCE)
    mech(None)
    try:
        assert isinstance(mech(server_first), str)
        mech(server_final)
    except _sasl.SaslError:
        pass


_json_like = st.recursive(st.none() | st.integers() | st.text(), lambda c: st.lists(c) | st.dictionaries(st.text(), c))


@settings(max_examples=100, deadline=None)
@given(data=st.one_of(st.binary(max_size=5000), _json_like.map(lambda v: repr(v).encode())))
def test_error_json_parsing_never_raises(data: bytes) -> None:
    value = _sasl.parse_error_json(data)
    assert isinstance(value, dict)
    if "raw" in value and len(value) == 1:
        assert all(c.isprintable() for c in value["raw"])


def run_exchange(mechanism: str, authobject: object, replies: list) -> tuple:
    """Drives the AUTH flow with scripted server replies, as a client would: returns the
    outcome (the reply, or the exception) and the lines sent. ``*`` always gets ``-ERR``
    (RFC 5034), QUIT gets ``+OK``; otherwise the next scripted reply (``-ERR`` when none is left)."""
    flow = _login.exchange(types.SimpleNamespace(_secrets=()), mechanism, authobject)  # type: ignore[arg-type]
    sent: list = []
    step = flow.__next__
    while True:
        try:
            op = step()
        except StopIteration as stop:
            return stop.value, sent
        except Exception as exc:
            return exc, sent
        assert isinstance(op, _flows.Run)
        line = op.command.encode()[:-2]
        sent.append(line)
        reply = {b"*": b"-ERR cancelled", b"QUIT": b"+OK bye"}.get(line) or (replies.pop(0) if replies else b"-ERR no")
        error = fastpoplib.AuthenticationError(reply)
        step = partial(flow.throw, error) if reply.startswith(b"-ERR") else partial(flow.send, reply)


def _mechanisms() -> list:
    return [
        ("PLAIN", _sasl.Plain("user", "pencil")),
        ("LOGIN", _sasl.Login("user", "pencil")),
        ("CRAM-MD5", _sasl.CramMD5("user", "pencil")),
        ("SCRAM-SHA-1", _sasl.Scram("SCRAM-SHA-1", "user", "pencil", nonce=NONCE)),
        ("XOAUTH2", _sasl.OAuth2("XOAUTH2", "user", "token")),
        ("OAUTHBEARER", _sasl.OAuth2("OAUTHBEARER", "user", "token")),
    ]


_replies = st.lists(
    st.one_of(
        st.just(b"+OK"),
        st.just(b"-ERR [AUTH] no"),
        st.binary(max_size=40).map(lambda b: b"+ " + base64.b64encode(b)),
        st.text(max_size=20).map(lambda t: b"+ " + t.encode()),
        st.just(b"+ " + base64.b64encode(f"r={NONCE}x,s=QSXCR+Q6sek8bf92,i=4096".encode())),
    ),
    max_size=12,
)


@settings(max_examples=300, deadline=None)
@given(index=st.integers(0, 5), replies=_replies)
def test_the_auth_flow_always_ends_in_step(index: int, replies: list) -> None:
    """Whatever the server answers, the exchange ends with the server's own +OK/-ERR or with
    our "*" (or QUIT), within the mechanism's rounds, and only POP3 errors escape."""
    mechanism, authobject = _mechanisms()[index]
    outcome, sent = run_exchange(mechanism, authobject, list(replies))
    assert len(sent) <= authobject.rounds + 4
    if isinstance(outcome, bytes):
        assert outcome.startswith(b"+OK")
    else:
        assert isinstance(outcome, (fastpoplib.error_proto, _sasl.ServerNotVerified)), repr(outcome)
    if isinstance(outcome, _sasl.ServerNotVerified):
        assert sent[-1] == b"QUIT"
    if isinstance(outcome, fastpoplib.RemoteProtocolError):  # our refusal: cancelled, reply read
        assert sent[-1] == b"*"


def test_the_auth_flow_cancels_a_malformed_challenge_and_reads_the_reply() -> None:
    outcome, sent = run_exchange("CRAM-MD5", _sasl.CramMD5("u", "p"), [b"+ not base64!"])
    assert isinstance(outcome, fastpoplib.RemoteProtocolError) and sent == [b"AUTH CRAM-MD5", b"*"]
    outcome, sent = run_exchange("PLAIN", _sasl.Plain("u", "p"), [b"+ ", b"+ "])
    assert isinstance(outcome, fastpoplib.RemoteProtocolError) and sent[-1] == b"*" and len(sent) == 2
