"""A loopback TCP forwarder that delays every chunk by a fixed time in each direction — a
stand-in for netem, which this kernel lacks. Byte order is kept; TLS passes through."""

from __future__ import annotations

import asyncio
import threading
from typing import Optional, Tuple


class DelayProxy:
    """``with DelayProxy(("127.0.0.1", 1110), delay=0.025) as proxy:`` then connect to
    ``proxy.port``. Runs its own event loop in a daemon thread."""

    def __init__(self, target: Tuple[str, int], delay: float, host: str = "127.0.0.1") -> None:
        self.target, self.delay, self.host = target, delay, host
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._server: Optional[asyncio.base_events.Server] = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                if data is None:
                    break
                await asyncio.sleep(max(0.0, due - self._loop.time()))
                writer.write(data)
                await writer.drain()
            writer.close()

        sender = asyncio.ensure_future(deliver())
        try:
            while data := await reader.read(65536):
                queue.put_nowait((self._loop.time() + self.delay, data))
        except ConnectionError:
            pass
        queue.put_nowait((0.0, None))
        await sender

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection(*self.target)
        await asyncio.gather(self._pipe(client_r, server_w), self._pipe(server_r, client_w), return_exceptions=True)

    def __enter__(self) -> "DelayProxy":
        self._thread.start()
        start = asyncio.start_server(self._handle, self.host, 0)
        self._server = asyncio.run_coroutine_threadsafe(start, self._loop).result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _shutdown(self) -> None:
        assert self._server is not None
        self._server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()
