"""Secrets a server may echo back: a password or token in a reply (``-ERR bad password
hunter2``, ``+OK welcome, hunter2``), in clear or in base64 (a SASL PLAIN response sent
back). While a flow that sends one runs, the client lists it here; debug output, logs and
the exceptions it raises (their ``__context__`` and ``__cause__`` included, which every
traceback prints) show ``****`` in its place. What the session itself sends (a password, an
APOP digest, a SASL response as sent, in base64) it masks in the lines it sends and in every
status line it reads (``src/proto/command.rs``, ``src/proto/session/trace.rs``); a SASL
exchange lists here its responses before base64 (``_login.exchange``)."""

from __future__ import annotations

import base64
import binascii
from typing import Any, Generator, Iterable, List, Optional, Set, Tuple, Union

MASK = b"****"
# Shorter secrets are not masked: they occur in ordinary words, so masking them would garble
# every message and show the reader which letters the secret is made of.
MIN_MASKED = 4


def redact(text: bytes, secrets: Iterable[bytes]) -> bytes:
    """``text`` with each secret masked, also inside a base64 word that decodes to one."""
    secrets = [s for s in secrets if len(s) >= MIN_MASKED]
    if not secrets:
        return text
    for secret in secrets:
        text = text.replace(secret, MASK)
    words = text.split(b" ")
    for i, word in enumerate(words):
        try:
            decoded = base64.b64decode(word, validate=True)
        except (binascii.Error, ValueError):
            continue  # not base64: nothing hidden in it
        if any(secret in decoded for secret in secrets):
            words[i] = MASK
    return b" ".join(words)


def _redact_value(value: Any, secrets: Tuple[bytes, ...]) -> Any:
    if isinstance(value, bytes):
        return redact(value, secrets)
    if isinstance(value, str):
        return redact(value.encode("utf-8", "surrogateescape"), secrets).decode("utf-8", "surrogateescape")
    if isinstance(value, tuple):
        return tuple(_redact_value(v, secrets) for v in value)
    return value


def scrub(exc: BaseException, secrets: Tuple[bytes, ...]) -> None:
    """Masks the secrets in ``exc`` and every exception chained to it, in place."""
    seen: Set[int] = set()
    todo: List[Optional[BaseException]] = [exc]
    while todo:
        err = todo.pop()
        if err is None or id(err) in seen:
            continue
        seen.add(id(err))
        err.args = _redact_value(err.args, secrets)
        for name in ("details", "attempts"):
            if isinstance(getattr(err, name, None), (bytes, str, tuple)):
                setattr(err, name, _redact_value(getattr(err, name), secrets))
        todo += [err.__context__, err.__cause__]


def hidden(client: Any, secret: Union[str, bytes, None], flow: Generator[Any, Any, Any]) -> Generator[Any, Any, Any]:
    """Runs ``flow`` (which sends ``secret``) with the secret masked wherever the client
    shows what the server said, the ``+OK`` line it returns included (often printed). The
    flow may list more with :func:`add`; they are masked until this returns."""
    previous = client._secrets
    if secret:
        add(client, secret if isinstance(secret, bytes) else secret.encode("utf-8"))
    try:
        return _redact_value((yield from flow), client._secrets)
    except BaseException as exc:
        scrub(exc, client._secrets)
        raise
    finally:
        client._secrets = previous


def add(client: Any, secret: bytes) -> None:
    """Lists one more secret the flow in progress is about to send."""
    client._secrets = client._secrets + (secret,)
