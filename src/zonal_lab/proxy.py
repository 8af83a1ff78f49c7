"""A user-space TCP fault proxy: latency, black hole, reset, refuse.

There is no ``netem`` and often no root where the lab runs, so faults are made here:
one :class:`FaultProxy` per zone, with one listener in front of each of the zone's
servers (PostgreSQL, PgBouncer). Its asyncio loop runs in a background thread; every
control method returns once the fault is in effect.

Bounded: at most ``max_connections`` open connections per proxy (more are reset on
accept) and at most ``_QUEUE_CHUNKS`` chunks of 64 KiB in flight per direction.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from zonal_lab.errors import LabError

__all__ = ["FaultProxy", "Listener"]

_CHUNK = 65536
_QUEUE_CHUNKS = 64
_CONTROL_TIMEOUT = 10.0
_T = TypeVar("_T")


@dataclass
class Listener:
    """One listening port of a proxy and the upstream it forwards to."""

    port: int
    upstream_host: str
    upstream_port: int
    server: asyncio.Server | None = field(default=None, repr=False)


@dataclass(eq=False)
class _Conn:
    client: asyncio.StreamWriter
    task: asyncio.Task[None]
    upstream: asyncio.StreamWriter | None = None


def _rst(writer: asyncio.StreamWriter | None) -> None:
    """Close with a TCP RST (SO_LINGER 0) rather than an orderly FIN."""
    if writer is None:
        return
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class FaultProxy:
    """Fault controls for the listeners of one zone.

    >>> proxy = FaultProxy("a")
    >>> port = proxy.listen("127.0.0.1", 5432)   # clients connect to 127.0.0.1:port
    >>> proxy.latency(ms=20); proxy.heal(); proxy.close()
    """

    def __init__(self, name: str = "", *, host: str = "127.0.0.1", max_connections: int = 1000):
        self.name = name
        self.host = host
        self.max_connections = max_connections
        self.listeners: list[Listener] = []
        self._latency = 0.0  # seconds per round trip, half on each direction
        self._blackholed = False
        self._refusing = False
        self._closed = False
        self._conns: set[_Conn] = set()
        self._loop = asyncio.new_event_loop()
        self._flowing = asyncio.Event()
        self._flowing.set()
        started = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(started,), name=f"zonal-proxy-{name}", daemon=True
        )
        self._thread.start()
        started.wait()

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.call_soon(started.set)
        self._loop.run_forever()
        self._loop.close()

    def _call(self, coro: Coroutine[Any, Any, _T]) -> _T:
        if self._closed:
            coro.close()
            raise LabError(f"fault proxy {self.name!r} is closed")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(_CONTROL_TIMEOUT)

    # -- state -------------------------------------------------------------------

    @property
    def state(self) -> str:
        """``"ok"``, or the faults in effect, e.g. ``"blackhole+latency=20ms"``."""
        faults = []
        if self._refusing:
            faults.append("refuse")
        if self._blackholed:
            faults.append("blackhole")
        if self._latency:
            faults.append(f"latency={self._latency * 1000:g}ms")
        return "+".join(faults) or "ok"

    @property
    def connections(self) -> int:
        """Open client connections through this proxy."""
        return len(self._conns)

    def __repr__(self) -> str:
        ports = ",".join(str(lst.port) for lst in self.listeners)
        return f"<FaultProxy {self.name!r} ports={ports} {self.state}>"

    # -- listeners ---------------------------------------------------------------

    def listen(self, upstream_host: str, upstream_port: int, port: int = 0) -> int:
        """Forward a new listening port (free one if 0) to upstream; return the port."""
        listener = Listener(port, upstream_host, upstream_port)
        self._call(self._open(listener))
        self.listeners.append(listener)
        return listener.port

    async def _open(self, listener: Listener) -> None:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self._handle(listener, reader, writer)

        try:
            listener.server = await asyncio.start_server(
                handle, self.host, listener.port, reuse_address=True, backlog=128
            )
        except OSError as exc:
            raise LabError(
                f"fault proxy {self.name!r} cannot listen on {listener.port}: {exc}"
            ) from None
        listener.port = listener.server.sockets[0].getsockname()[1]

    # -- faults ------------------------------------------------------------------

    def latency(self, ms: float) -> None:
        """Add ``ms`` milliseconds to every round trip, on new and open connections
        alike (half on the way in, half on the way out); 0 removes it."""
        if ms < 0:
            raise ValueError("latency ms must be >= 0")
        self._latency = ms / 1000.0

    def blackhole(self) -> None:
        """Accept, but forward nothing in either direction: open connections stall and
        new ones hang in the handshake, as behind a silently dropping network."""
        self._call(self._set_flowing(False))

    async def _set_flowing(self, flowing: bool) -> None:
        self._blackholed = not flowing
        if flowing:
            self._flowing.set()
        else:
            self._flowing.clear()

    def reset(self) -> None:
        """Drop every open connection with a TCP RST (both sides see a reset)."""
        self._call(self._reset())

    async def _reset(self) -> None:
        for conn in list(self._conns):
            _rst(conn.client)
            _rst(conn.upstream)
            conn.task.cancel()

    def refuse(self) -> None:
        """Stop listening: new connections are refused, open ones carry on."""
        self._call(self._refuse())

    async def _refuse(self) -> None:
        self._refusing = True
        for listener in self.listeners:
            if listener.server is not None:
                # close() stops listening at once; not wait_closed(), which (3.12+)
                # would also wait for every open connection to end
                listener.server.close()
                listener.server = None

    def heal(self) -> None:
        """Clear every fault: no latency, forwarding again, listening again (same ports)."""
        self._latency = 0.0
        self._call(self._heal())

    async def _heal(self) -> None:
        await self._set_flowing(True)
        if self._refusing:
            for listener in self.listeners:
                if listener.server is None:
                    await self._open(listener)
            self._refusing = False

    def close(self) -> None:
        """Stop listening, drop every connection, stop the loop thread."""
        if self._closed:
            return
        with contextlib.suppress(Exception):
            self._call(self._shutdown())
        self._closed = True
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=_CONTROL_TIMEOUT)

    async def _shutdown(self) -> None:
        await self._refuse()
        await self._reset()
        self._flowing.set()  # let cancelled handlers run their cleanup
        pending = [c.task for c in self._conns]
        if pending:
            await asyncio.wait(pending, timeout=2)

    # -- forwarding --------------------------------------------------------------

    async def _handle(
        self, listener: Listener, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        if len(self._conns) >= self.max_connections:
            _rst(cwriter)
            return
        conn = _Conn(cwriter, task)
        self._conns.add(conn)
        try:
            await self._flowing.wait()  # a black hole holds new connections here
            ureader, uwriter = await asyncio.wait_for(
                asyncio.open_connection(listener.upstream_host, listener.upstream_port), 10
            )
            conn.upstream = uwriter
            pumps = [
                asyncio.ensure_future(self._pump(creader, uwriter)),
                asyncio.ensure_future(self._pump(ureader, cwriter)),
            ]
            try:
                # either side ending ends the pair (PostgreSQL has no half-close)
                await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for pump in pumps:
                    pump.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)
        except (TimeoutError, OSError, asyncio.IncompleteReadError):
            pass  # upstream down or a side reset: the client sees its connection close
        except asyncio.CancelledError:
            pass  # reset() or close()
        finally:
            self._conns.discard(conn)
            for writer in (cwriter, conn.upstream):
                if writer is not None and not writer.is_closing():
                    writer.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Copy one direction, each chunk held until its arrival time + half the latency,
        in order; a reader task and a writer task so delayed chunks stay pipelined."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(_QUEUE_CHUNKS)

        async def read_side() -> None:
            try:
                while True:
                    await self._flowing.wait()
                    data = await reader.read(_CHUNK)
                    await queue.put((loop.time() + self._latency / 2, data))
                    if not data:
                        return
            except (OSError, asyncio.IncompleteReadError):
                # A reset (a killed server with unread data sends RST, not FIN) ends
                # this direction as an EOF would: the writer must not wait forever
                # on an empty queue, or the pair never closes and the client sees a
                # black hole where the server crashed.
                await queue.put((loop.time(), b""))

        async def write_side() -> None:
            while True:
                due, data = await queue.get()
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                await self._flowing.wait()
                if not data:
                    return
                writer.write(data)
                await writer.drain()

        reading = asyncio.ensure_future(read_side())
        try:
            await write_side()
        finally:
            reading.cancel()
            await asyncio.gather(reading, return_exceptions=True)
