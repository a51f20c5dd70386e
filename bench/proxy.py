"""A TCP proxy that puts a mail server far away: every chunk waits RTT/2 in each direction (order
kept, bandwidth not limited, so pipelined commands stay pipelined), and a connection past ``cap``
is answered ``421 4.7.0`` and closed, as a provider refuses a sender holding too many.

``LatencyProxy(target_port, rtt, cap).start()`` runs it on a thread of its own; ``most_open`` and
``refused`` say what the mail server would have seen.
"""
import asyncio
import threading
import time

REFUSAL = b"421 4.7.0 Too many connections from your host\r\n"


class LatencyProxy:
    def __init__(self, target_port: int, rtt: float, cap: int, host: str = "127.0.0.1"):
        self.target = (host, target_port)
        self.host = host
        self.delay = rtt / 2
        self.cap = cap
        self.port = None
        self.open_now = self.most_open = self.refused = self.connections = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="latency-proxy")
        self._server = None

    def start(self) -> "LatencyProxy":
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._accept, self.host, 0), self._loop).result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        async def close():
            self._server.close()
            await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def reset(self) -> None:
        self.most_open, self.refused, self.connections = self.open_now, 0, 0

    async def _accept(self, client_reader, client_writer) -> None:
        if self.open_now >= self.cap:
            self.refused += 1
            await asyncio.sleep(self.delay)
            client_writer.write(REFUSAL)
            await client_writer.drain()
            client_writer.close()
            return
        self.open_now += 1
        self.connections += 1
        self.most_open = max(self.most_open, self.open_now)
        try:
            await asyncio.sleep(self.delay)  # the SYN's way there
            server_reader, server_writer = await asyncio.open_connection(*self.target)
            await asyncio.gather(self._pipe(client_reader, server_writer), self._pipe(server_reader, client_writer))
        except OSError:
            pass
        finally:
            self.open_now -= 1
            client_writer.close()

    async def _pipe(self, reader, writer) -> None:
        """Copy one direction, each chunk delivered RTT/2 after it arrived."""
        chunks: asyncio.Queue = asyncio.Queue()

        async def deliver():
            while (item := await chunks.get()) is not None:
                at, data = item
                if (wait := at - time.monotonic()) > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()
            writer.close()

        delivering = asyncio.ensure_future(deliver())
        try:
            while data := await reader.read(65536):
                chunks.put_nowait((time.monotonic() + self.delay, data))
        except OSError:
            pass
        finally:
            chunks.put_nowait(None)
            try:
                await delivering
            except OSError:
                pass
