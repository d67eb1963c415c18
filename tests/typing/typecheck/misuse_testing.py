"""Wrong use of fastpoplib.exceptions and fastpoplib.testing, each line an error mypy must report.

tests/typing/test_typing.py checks this file with `mypy --strict`, which includes
`--warn-unused-ignores`: every `# type: ignore[code]` below must silence an error of exactly that
code on its line. A misuse that mypy stops reporting (because a type became `Any` or too loose)
leaves its ignore unused, and the test fails.
"""

from __future__ import annotations

from fastpoplib.exceptions import ServerError, error_proto
from fastpoplib.testing import Fault, POP3TestServer, sample_mailbox


def misuse() -> None:
    srv = POP3TestServer(sample_mailbox(2))
    port: str = srv.port  # type: ignore[assignment]
    host: bytes = srv.host  # type: ignore[assignment]
    POP3TestServer(mailbox=5)  # type: ignore[arg-type]
    POP3TestServer(tls=True)  # type: ignore[arg-type]
    POP3TestServer(users=["alice"])  # type: ignore[arg-type]
    POP3TestServer(no_such_option=1)  # type: ignore[call-arg]
    sample_mailbox("3")  # type: ignore[arg-type]
    Fault.stall("5")  # type: ignore[arg-type]
    Fault.reply("-ERR no")  # type: ignore[arg-type]
    srv.sessions[0].commands.append("NOOP")  # type: ignore[arg-type]
    size: str = srv.mailbox[0].size  # type: ignore[assignment]
    lines: list[str] = srv.mailbox[0].lines  # type: ignore[assignment]
    srv.client_context().no_such_method()  # type: ignore[attr-defined]
    del port, host, size, lines


def misuse_exceptions(exc: ServerError, proto: error_proto) -> None:
    text: str = exc.response  # type: ignore[assignment]
    other = proto.response  # type: ignore[attr-defined]
    del text, other
