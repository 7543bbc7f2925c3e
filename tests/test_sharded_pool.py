"""httpx2's pool in shards (``providers._transport.ShardedTransport``), on virtual time.

Each shard is a MockTransport here; the loopback tests (``test_provider_wires.py``) check the
real pools' connection counts.
"""

from __future__ import annotations

import anyio
import httpx2
import pytest

from llm_gateway.providers._transport import SHARD_SIZE, ShardedTransport, shard_sizes

pytestmark = pytest.mark.anyio


class Shard:
    """A MockTransport handler that counts the requests it holds at once."""

    def __init__(self, hold_s: float = 1.0, fail: bool = False) -> None:
        self.hold_s = hold_s
        self.fail = fail
        self.busy = 0
        self.most = 0
        self.served = 0

    async def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.busy += 1
        self.most = max(self.most, self.busy)
        try:
            await anyio.sleep(self.hold_s)
            if self.fail:
                raise httpx2.ConnectError("refused")
            self.served += 1
            # A body to read (as from a socket): read and closed by the client, not here.
            return httpx2.Response(200, stream=httpx2.ByteStream(b"ok"))
        finally:
            self.busy -= 1


def sharded(*handlers: tuple[Shard, int]) -> tuple[httpx2.AsyncClient, ShardedTransport]:
    transport = ShardedTransport([(httpx2.MockTransport(h), size) for h, size in handlers])
    return httpx2.AsyncClient(transport=transport), transport


@pytest.mark.parametrize(
    ("connections", "sizes"), [(1, [1]), (4, [4]), (9, [4, 4, 1]), (64, [4] * 16)]
)
def test_shard_sizes_add_up_to_the_pool(connections: int, sizes: list[int]) -> None:
    assert shard_sizes(connections) == sizes
    assert max(sizes) <= SHARD_SIZE


async def test_requests_go_where_connections_are_free_and_come_back() -> None:
    a, b, c = Shard(), Shard(), Shard()
    client, transport = sharded((a, 2), (b, 2), (c, 1))
    async with client, anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(client.post, "http://x.test/")
    assert (a.most, b.most, c.most) == (2, 2, 1)  # five at once: every shard full, none over
    assert transport.free == [2, 2, 1]  # every connection free again once the bodies closed


async def test_more_requests_than_connections_wait_in_a_shard() -> None:
    a, b = Shard(), Shard()
    client, transport = sharded((a, 1), (b, 1))
    async with client, anyio.create_task_group() as tg:
        for _ in range(4):
            tg.start_soon(client.post, "http://x.test/")
    assert a.served + b.served == 4
    assert transport.free == [1, 1]


async def test_a_failed_or_cancelled_request_frees_its_connection() -> None:
    failing, slow = Shard(fail=True), Shard(hold_s=10.0)
    client, transport = sharded((slow, 2), (failing, 1))
    async with client:
        with anyio.move_on_after(1.0):
            await client.post("http://x.test/")  # the shard with the most room: the slow one
        assert (slow.most, slow.served) == (1, 0)
        assert transport.free == [2, 1]
        async with anyio.create_task_group() as tg:
            for _ in range(2):
                tg.start_soon(client.post, "http://x.test/")  # the slow shard, now full
            await anyio.sleep(0.5)
            assert transport.free == [0, 1]
            with pytest.raises(httpx2.ConnectError):
                await client.post("http://x.test/")  # the failing shard
            assert transport.free == [0, 1]
            tg.cancel_scope.cancel()
        assert transport.free == [2, 1]


async def test_a_response_closed_twice_frees_its_connection_once() -> None:
    a = Shard(hold_s=0.0)
    client, transport = sharded((a, 2))
    async with client:
        response = await client.post("http://x.test/")
        assert transport.free == [2]
        await response.aclose()
        assert transport.free == [2]
        async with client.stream("POST", "http://x.test/") as streamed:
            assert transport.free == [1]  # held while the body is open
            await streamed.aread()
        assert transport.free == [2]
