"""httpx2's pool under the SDK clients (``providers._transport.StackedConnectionPool``).

On virtual time, over a scripted network backend (httpcore2's extension point for sockets), so
the connections, their reuse and their closing can be counted. The loopback tests
(``test_provider_wires.py``) run the adapters over real sockets on this pool.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from typing import Any

import anyio
import httpcore2
import httpx2
import pytest

from llm_gateway.providers._transport import StackedConnectionPool

pytestmark = pytest.mark.anyio

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
URL = "http://api.test/v1/messages"


class Stream(httpcore2.AsyncNetworkStream):
    """One scripted connection: each request is answered after the server's ``hold_s``."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.closed = False
        self.peer_closed = False  # the server hung up while the connection was idle
        self.requests = 0
        self._answers = 0

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109 (httpcore2's interface)
        if buffer.startswith(b"POST "):
            self.requests += 1

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109
        if self._answers == self.requests or self.peer_closed:
            return b""
        self.server.busy += 1
        self.server.most = max(self.server.most, self.server.busy)
        try:
            await anyio.sleep(self.server.hold_s)
        finally:
            self.server.busy -= 1
        self._answers += 1
        return ANSWER

    async def aclose(self) -> None:
        self.closed = True

    def get_extra_info(self, info: str) -> Any:
        return self.peer_closed if info == "is_readable" else None


class Server(httpcore2.AsyncNetworkBackend):
    """Hands out :class:`Stream` connections and counts what happens on them."""

    def __init__(self, hold_s: float = 1.0) -> None:
        self.hold_s = hold_s
        self.refuse = False
        self.streams: list[Stream] = []
        self.busy = 0
        self.most = 0

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        if self.refuse:
            raise httpcore2.ConnectError("refused")
        stream = Stream(self)
        self.streams.append(stream)
        return stream

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)

    @property
    def open(self) -> list[Stream]:
        return [s for s in self.streams if not s.closed]


def pool_on(
    server: Server, connections: int, keepalive: int | None = None
) -> StackedConnectionPool:
    return StackedConnectionPool(
        max_connections=connections,
        max_keepalive_connections=keepalive,
        network_backend=server,
    )


async def post(pool: httpcore2.AsyncConnectionPool, url: str = URL, **extensions: Any) -> bytes:
    response = await pool.request("POST", url, content=b"{}", extensions=extensions)
    return response.content


async def test_sequential_requests_reuse_one_connection() -> None:
    server = Server(hold_s=0.1)
    async with pool_on(server, 4) as pool:
        for _ in range(5):
            assert await post(pool) == b"ok"
        assert [s.requests for s in server.streams] == [5]
        assert len(pool.connections) == 1
    assert server.open == []  # closing the pool closes its connections


async def test_concurrent_requests_open_at_most_max_connections_and_keep_them() -> None:
    server = Server()
    async with pool_on(server, 3) as pool:
        for _ in range(2):
            async with anyio.create_task_group() as tg:
                for _ in range(10):
                    tg.start_soon(post, pool)
            assert server.most == 3  # three at a time: the others waited for one
            assert len(server.streams) == 3  # the second burst reused them
        assert sum(s.requests for s in server.streams) == 20
        assert repr(pool) == "<StackedConnectionPool [Connections: 0 active, 3 idle]>"


async def test_a_request_that_waits_longer_than_the_pool_timeout_fails() -> None:
    server = Server(hold_s=10.0)
    transport = httpx2.AsyncHTTPTransport()
    transport._pool = pool_on(server, 1)
    async with httpx2.AsyncClient(transport=transport) as client, anyio.create_task_group() as tg:
        tg.start_soon(client.post, URL)
        await anyio.sleep(0.1)
        start = anyio.current_time()
        with pytest.raises(httpx2.PoolTimeout):
            await client.post(URL, timeout=httpx2.Timeout(None, pool=2.0))
        assert anyio.current_time() - start == pytest.approx(2.0)
        tg.cancel_scope.cancel()


async def test_cancelling_a_request_closes_its_connection_and_frees_its_place() -> None:
    server = Server(hold_s=10.0)
    async with pool_on(server, 1) as pool:
        with anyio.move_on_after(1.0):
            await post(pool)
        assert [s.closed for s in server.streams] == [True]  # cancellation reached the socket
        assert pool.connections == []
        server.hold_s = 0.1
        with anyio.fail_after(60):  # the one place is free again, on a new connection
            assert await post(pool) == b"ok"
        assert len(server.streams) == 2


async def test_a_failed_connect_frees_its_place() -> None:
    server = Server(hold_s=0.1)
    async with pool_on(server, 1) as pool:
        server.refuse = True
        with pytest.raises(httpcore2.ConnectError):
            await post(pool)
        server.refuse = False
        with anyio.fail_after(60):  # else it waits for the place forever
            assert await post(pool) == b"ok"


async def test_a_response_closed_twice_gives_its_place_back_once() -> None:
    server = Server(hold_s=0.1)
    async with pool_on(server, 1) as pool:
        async with pool.stream("POST", URL, content=b"{}") as response:
            assert len(pool.connections) == 1
            await response.aread()
        await response.aclose()  # closed again: nothing more is given back
        async with anyio.create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(post, pool)
        assert server.most == 1  # still one request at a time
        assert len(server.streams) == 1


async def test_an_idle_connection_the_server_closed_is_not_reused() -> None:
    server = Server(hold_s=0.1)
    async with pool_on(server, 2) as pool:
        await post(pool)
        server.streams[0].peer_closed = True
        assert await post(pool) == b"ok"
        assert [(s.requests, s.closed) for s in server.streams] == [(1, True), (1, False)]


async def test_idle_connections_beyond_the_keepalive_limit_are_closed() -> None:
    server = Server()
    async with pool_on(server, 4, keepalive=1) as pool:
        async with anyio.create_task_group() as tg:
            for _ in range(4):
                tg.start_soon(post, pool)
        assert len(server.streams) == 4
        assert len(server.open) == 1
        assert len(pool.connections) == 1


async def test_a_full_pool_closes_another_origins_idle_connection_to_make_room() -> None:
    server = Server(hold_s=0.1)
    async with pool_on(server, 2) as pool:
        await post(pool, "http://a.test/")
        await post(pool, "http://b.test/")
        assert await post(pool, "http://c.test/") == b"ok"
        assert [s.closed for s in server.streams] == [True, False, False]  # a's, the oldest
        assert len(pool.connections) == 2


async def test_a_url_that_is_not_http_is_refused() -> None:
    async with pool_on(Server(), 1) as pool:
        with pytest.raises(httpcore2.UnsupportedProtocol, match="unsupported protocol 'ftp://'"):
            await post(pool, "ftp://api.test/")


def test_it_replaces_the_sdks_http1_pool_with_the_same_settings() -> None:
    options = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, True)]
    sdk_pool = httpcore2.AsyncConnectionPool(
        max_connections=7, keepalive_expiry=30.0, retries=2, socket_options=options
    )
    pool = StackedConnectionPool.replacing(sdk_pool)
    assert type(pool) is StackedConnectionPool
    settings = ("_max_connections", "_max_keepalive_connections", "_keepalive_expiry")
    assert [getattr(pool, s) for s in settings] == [7, 7, 30.0]
    assert (pool._retries, pool._socket_options, pool._http2) == (2, options, False)


def test_an_http2_pool_stays_httpcore2s_own() -> None:
    """HTTP/2 shares one connection between requests: the stack is for HTTP/1.1."""
    sdk_pool = httpcore2.AsyncConnectionPool(http2=True)
    assert StackedConnectionPool.replacing(sdk_pool) is sdk_pool
