"""Check several mailboxes concurrently with asyncio.

    python examples/async_many_accounts.py HOST PORT USER [USER...]   (password in $POP_PASSWORD)
"""

import asyncio
import os
import sys

import fastpoplib


async def count(host: str, port: int, user: str) -> int:
    async with fastpoplib.AsyncPOP3.connect(host, port, timeout=30) as pop:
        await pop.login(user, os.environ["POP_PASSWORD"], allow_insecure=True)  # loopback demo only
        messages, _ = await pop.stat()
        return messages


async def main() -> None:
    host, port, users = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    counts = await asyncio.gather(*(count(host, port, u) for u in users))
    for user, n in zip(users, counts):
        print(f"{user}: {n} messages")


asyncio.run(main())
