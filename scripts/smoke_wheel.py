"""Smoke session for an installed fastpoplib wheel (run by scripts/smoke-wheel.sh).

Run with the interpreter of a fresh virtualenv that has only the wheel installed, from a
directory outside the checkout. It checks that the import resolves to site-packages and to the
abi3 extension, then runs one blocking and one asyncio session (connect, USER/PASS, STAT, RETR,
QUIT) against the shipped test server and compares every answer with the server's mailbox.
Any mismatch raises, so the process exits non-zero.
"""

from __future__ import annotations

import asyncio
import sys
import sysconfig
from pathlib import Path

import fastpoplib
from fastpoplib import _core
from fastpoplib.testing import POP3TestServer, sample_mailbox


def check(condition: bool, what: str) -> None:
    if not condition:
        raise SystemExit(f"smoke: FAILED: {what}")


def check_install() -> None:
    site = Path(sysconfig.get_paths()["purelib"]).resolve()
    package = Path(fastpoplib.__file__).resolve().parent
    check(package.parent == site, f"fastpoplib imported from {package}, not from {site}")
    check(Path(str(_core.__file__)).name == "_core.abi3.so", f"extension is {_core.__file__}, not the abi3 one")


def sync_session(server: POP3TestServer) -> None:
    box = server.mailbox
    pop = fastpoplib.POP3(server.host, server.port, timeout=10)
    check(pop.getwelcome().startswith(b"+OK"), f"greeting {pop.getwelcome()!r}")
    check(pop.user("user").startswith(b"+OK"), "USER")
    check(pop.pass_("password").startswith(b"+OK"), "PASS")
    check(pop.stat() == (len(box), box.total_size), f"STAT {pop.stat()} != {(len(box), box.total_size)}")
    for number, message in enumerate(box.snapshot(), start=1):
        resp, lines, octets = pop.retr(number)
        check(resp.startswith(b"+OK"), f"RETR {number}: {resp!r}")
        check(lines == message.lines, f"RETR {number}: lines differ from the mailbox")
        check(octets == message.size, f"RETR {number}: {octets} octets, the mailbox says {message.size}")
    check(pop.quit().startswith(b"+OK"), "QUIT")


async def async_session(server: POP3TestServer) -> None:
    box = server.mailbox
    pop = await fastpoplib.AsyncPOP3.connect(server.host, server.port, timeout=10)
    check(pop.getwelcome().startswith(b"+OK"), "async greeting")
    await pop.user("user")
    await pop.pass_("password")
    stat = await pop.stat()
    check(stat == (len(box), box.total_size), f"async STAT {stat}")
    _, lines, octets = await pop.retr(len(box))
    check(lines == box[len(box) - 1].lines and octets == box[len(box) - 1].size, "async RETR differs from the mailbox")
    check((await pop.quit()).startswith(b"+OK"), "async QUIT")


def main() -> None:
    check_install()
    with POP3TestServer(sample_mailbox(6), users={"user": "password"}) as server:
        sync_session(server)
        asyncio.run(async_session(server))
        check(len(server.wait_for_sessions(2)) == 2, "the server did not see two sessions")
        check(server.wait_for_sessions_closed(), "a session is still open after QUIT")
        check(all(s.quit_received for s in server.sessions), "a session ended without QUIT")
    version = ".".join(map(str, sys.version_info[:3]))
    print(f"smoke: OK: fastpoplib {fastpoplib.__version__} on Python {version} ({Path(fastpoplib.__file__).parent})")


if __name__ == "__main__":
    main()
