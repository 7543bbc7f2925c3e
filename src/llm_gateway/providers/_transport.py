"""The HTTP client under the SDK clients: httpx2 (both loops) or the SDKs' aiohttp transport.

Both official SDKs ship two async HTTP clients: ``DefaultAsyncHttpxClient`` (httpx2, runs on
trio and asyncio) and ``DefaultAioHttpClient`` (an httpx2 client whose transport is aiohttp,
from their ``[aiohttp]`` extras; asyncio only). Over a socket aiohttp costs a fraction of
httpx2's CPU per call, so on asyncio the gateway uses it when it is installed. A model chooses
with ``provider_options.http_client`` (:data:`HTTP_CLIENTS`).

The SDK's client, auth, headers, ``client.post()`` and error mapping stay the same on both: the
SDK maps aiohttp's exceptions to httpx2's. Two of those mappings differ from what httpx2 itself
raises (openai's copy maps every dropped connection to ``ConnectTimeout``; an exception aiohttp
raises while building the request, such as a header with a line break, is not mapped at all),
and the exceptions it chains carry the request (URL, headers). :class:`GatewayAiohttpTransport`
wraps the SDK's transport so that the same failure gives the same httpx2 exception on both
transports, with a message that quotes no request header nor URL, and nothing chained.

httpx2's one pool of ``max_concurrency`` connections becomes several small ones
(:class:`ShardedTransport`): httpcore2's per-request walk over its pool costs in proportion to
the pool's size.

Imported only by the SDK adapters; it never imports aiohttp unless a model uses it.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import ssl
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import attrs
import httpcore2
import httpx2
import sniffio

from .._config import ModelConfig
from .._exceptions import ConfigError

__all__ = [
    "HTTP_CLIENTS",
    "SHARD_SIZE",
    "GatewayAiohttpTransport",
    "SdkHttpClients",
    "ShardedTransport",
    "build_http_client",
    "http_client_choice",
    "pool_limits",
    "shard_sizes",
    "shared_ssl_context",
]

HTTP_CLIENTS = ("auto", "httpx", "aiohttp")
"""The values of ``provider_options.http_client``:

- ``"auto"`` (default): aiohttp on asyncio when the ``aiohttp`` extra is installed; httpx2
  otherwise, and always on trio.
- ``"httpx"``: the SDK's default httpx2 client, on either loop.
- ``"aiohttp"``: the SDK's aiohttp client; asyncio only, and the ``aiohttp`` extra must be
  installed (else the model fails to open with a ``ConfigError`` saying so).
"""


@attrs.frozen
class SdkHttpClients:
    """One SDK's two HTTP client classes.

    Attributes:
        httpx: Its ``DefaultAsyncHttpxClient``.
        aiohttp: Its ``DefaultAioHttpClient`` (raises RuntimeError when aiohttp is missing).
    """

    httpx: Callable[..., httpx2.AsyncClient]
    aiohttp: Callable[..., httpx2.AsyncClient]


def pool_limits(config: ModelConfig) -> httpx2.Limits:
    """A connection pool as large as the model's ``max_concurrency``, and no larger.

    The gateway never has more than ``max_concurrency`` calls of a model in flight, so more
    connections would only be idle sockets; fewer would queue calls inside the HTTP client.
    The aiohttp transport reads ``max_connections`` (its connector's ``limit``) and
    ``keepalive_expiry`` from the same object.
    """
    return httpx2.Limits(
        max_connections=config.max_concurrency, max_keepalive_connections=config.max_concurrency
    )


def _aiohttp_installed() -> bool:
    return importlib.util.find_spec("aiohttp") is not None


def http_client_choice(model_id: str, options: Mapping[str, Any]) -> str:
    """Which HTTP client this model's SDK client gets here: ``"httpx"`` or ``"aiohttp"``.

    Reads ``options["http_client"]`` (:data:`HTTP_CLIENTS`, default ``"auto"``); called in the
    event loop that will use the client, since aiohttp runs only on asyncio.

    Raises:
        ConfigError: An unknown value; ``"aiohttp"`` on trio, or without aiohttp installed.
    """
    field = f"models.{model_id}.provider_options.http_client"
    choice = options.get("http_client", "auto")
    if choice not in HTTP_CLIENTS:
        raise ConfigError(
            f"{field} is {choice!r}; use one of {', '.join(repr(c) for c in HTTP_CLIENTS)}"
        )
    on_asyncio = sniffio.current_async_library() == "asyncio"
    if choice == "auto":
        return "aiohttp" if on_asyncio and _aiohttp_installed() else "httpx"
    if choice == "aiohttp":
        if not on_asyncio:
            raise ConfigError(
                f"{field} is 'aiohttp', which runs only on asyncio, and this gateway runs on "
                f"{sniffio.current_async_library()}; use 'auto' or 'httpx'"
            )
        if not _aiohttp_installed():
            raise ConfigError(
                f"{field} is 'aiohttp', and aiohttp is not installed; install it from the "
                "project's checkout with: pip install -e '.[aiohttp]', or use 'auto'"
            )
    return str(choice)


@functools.cache
def _ssl_context(cafile: str | None, capath: str | None) -> ssl.SSLContext:
    del cafile, capath  # the cache key: httpcore2 reads the same variables
    return httpcore2.default_ssl_context()


def shared_ssl_context() -> ssl.SSLContext:
    """The system's CA certificates as one SSL context, built once per process.

    Every HTTP client would otherwise load and parse the certificate store again (~20 ms of
    blocking work per model). The context is the one httpx2 builds by default (it honours
    ``SSL_CERT_FILE`` and ``SSL_CERT_DIR``, which are part of the cache key); a context may be
    shared by any number of connections and threads.
    """
    return _ssl_context(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))


def build_http_client(
    clients: SdkHttpClients, choice: str, config: ModelConfig
) -> httpx2.AsyncClient:
    """The SDK's HTTP client of kind ``choice``, with the model's pool size and timeout.

    httpx2's pool of ``max_concurrency`` connections is split into shards of at most
    :data:`SHARD_SIZE` (:class:`ShardedTransport`); aiohttp's is one connector, its transport
    wrapped by :class:`GatewayAiohttpTransport`. Blocking (the SSL context, the first time):
    call it from a worker thread.
    """
    options: dict[str, Any] = {"timeout": config.timeout_s, "verify": shared_ssl_context()}
    if choice == "aiohttp":
        client = clients.aiohttp(**options, limits=pool_limits(config))
        _wrap_transports(client)
        return client
    client = clients.httpx(**options, limits=pool_limits(config))
    if config.max_concurrency > SHARD_SIZE:
        # Each shard's transport is built by the SDK's own client class (the SDK's socket
        # options, proxies left to the outer client), then set in place of the one pool: httpx2
        # keeps it in ``_transport`` and has no hook for it (that pool never opened a socket).
        shards = [
            (
                clients.httpx(
                    **options,
                    limits=httpx2.Limits(max_connections=size, max_keepalive_connections=size),
                )._transport,
                size,
            )
            for size in shard_sizes(config.max_concurrency)
        ]
        client._transport = ShardedTransport(shards)
    return client


def _wrap_transports(client: httpx2.AsyncClient) -> None:
    # httpx2 keeps the transport it built (and one per proxy mount, from the environment's
    # proxy variables) in these attributes; the SDK's client has no hook to wrap them.
    client._transport = GatewayAiohttpTransport(client._transport)
    client._mounts = {
        pattern: None if transport is None else GatewayAiohttpTransport(transport)
        for pattern, transport in client._mounts.items()
    }


# -- aiohttp's failures as httpx2's --------------------------------------------------------


def _aiohttp_failure(error: BaseException) -> httpx2.TransportError | None:
    """The httpx2 exception httpx2 itself would raise for the aiohttp exception ``error``.

    The message names the aiohttp exception and, for socket errors, the OS's text; never
    aiohttp's own message, which may quote the URL (a query may hold a key).
    """
    import aiohttp

    name = type(error).__name__
    if isinstance(error, aiohttp.ConnectionTimeoutError):
        return httpx2.ConnectTimeout(f"timed out connecting ({name})")
    if isinstance(error, aiohttp.ServerTimeoutError):
        return httpx2.ReadTimeout(f"timed out reading ({name})")
    if isinstance(error, aiohttp.ClientConnectorError):
        return httpx2.ConnectError(f"{name}: {error.os_error}")
    if isinstance(error, aiohttp.ServerDisconnectedError):
        return httpx2.RemoteProtocolError(
            f"Server disconnected without sending a complete response ({name})"
        )
    if isinstance(error, aiohttp.ClientOSError):
        return httpx2.ReadError(f"{name}: [Errno {error.errno}] {error.strerror}")
    if isinstance(error, aiohttp.ClientPayloadError):
        return httpx2.RemoteProtocolError(f"the response body was cut short or malformed ({name})")
    if isinstance(error, aiohttp.ClientConnectionError):
        return httpx2.ReadError(f"the connection failed ({name})")
    if isinstance(error, aiohttp.ClientError):
        return httpx2.RemoteProtocolError(f"the exchange failed ({name})")
    return None


def _as_httpx(error: Exception) -> httpx2.TransportError:
    """``error`` (raised by the SDK's aiohttp transport) as a plain httpx2 exception."""
    origin: BaseException = error
    if isinstance(error, httpx2.TransportError) and error.__cause__ is not None:
        origin = error.__cause__  # the aiohttp exception the SDK mapped
    mapped = _aiohttp_failure(origin)
    if mapped is not None:
        return mapped
    if isinstance(error, httpx2.TransportError):
        # An httpx2 exception of the SDK's transport's own (UnsupportedProtocol, ProxyError):
        # same type, the message without aiohttp's text.
        return type(error)(f"{type(error).__name__} ({type(origin).__name__})")
    # aiohttp refused to send the request (a header value with a line break: ValueError),
    # where httpx2's h11 raises LocalProtocolError. Its message may quote the header.
    return httpx2.LocalProtocolError(f"the request could not be sent ({type(error).__name__})")


class _Body(httpx2.AsyncByteStream):
    def __init__(self, stream: httpx2.AsyncByteStream) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._stream:
                yield chunk
        except Exception as error:
            mapped = _as_httpx(error)
        else:
            return
        raise mapped  # outside the except block: not even the aiohttp error's context

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        except Exception as error:
            mapped = _as_httpx(error)
        else:
            return
        raise mapped


class GatewayAiohttpTransport(httpx2.AsyncBaseTransport):
    """The SDK's aiohttp transport, raising what httpx2's own transport raises.

    Same connection pool, timeouts and requests as the transport it wraps; only its
    exceptions change (see the module's docstring), on the request and on the body.

    Args:
        transport: The transport ``DefaultAioHttpClient`` built.
    """

    def __init__(self, transport: httpx2.AsyncBaseTransport) -> None:
        self.transport = transport

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        try:
            response = await self.transport.handle_async_request(request)
        except Exception as error:
            mapped = _as_httpx(error)
        else:
            assert isinstance(response.stream, httpx2.AsyncByteStream)
            response.stream = _Body(response.stream)
            return response
        raise mapped

    async def aclose(self) -> None:
        await self.transport.aclose()


# -- httpx2's pool, in shards ----------------------------------------------------------------

SHARD_SIZE = 4
"""The most connections in one httpx2 pool. httpcore2 walks every connection of its pool twice
per request (when it starts and when it ends), polling each idle socket: at 64 connections
that walk was about a quarter of a call's CPU on trio. Pools of 4 make it cheap; smaller ones
measured no better."""


def shard_sizes(connections: int) -> list[int]:
    """``connections`` split into pools of at most :data:`SHARD_SIZE` (the last may be smaller)."""
    full, rest = divmod(connections, SHARD_SIZE)
    return [SHARD_SIZE] * full + ([rest] if rest else [])


class _Released(httpx2.AsyncByteStream):
    """A response body that calls ``release`` once, when it is closed."""

    def __init__(self, stream: httpx2.AsyncByteStream, release: Callable[[], None]) -> None:
        self._stream = stream
        self._release: Callable[[], None] | None = release

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._stream.aclose()
        finally:
            release, self._release = self._release, None
            if release is not None:
                release()


class ShardedTransport(httpx2.AsyncBaseTransport):
    """Several httpx2 transports, each with its own small pool, as one.

    A request goes to the shard with the most free connections; its connection counts as
    busy until the response body is closed (or the request fails or is cancelled). Together
    the shards hold as many connections as the one pool they replace; more requests than
    that wait inside a shard's pool, as they would in one pool. Errors, timeouts and
    cancellation are the shards' own: this only chooses.

    Args:
        shards: Each shard's transport (built by the SDK's ``DefaultAsyncHttpxClient``, so it
            has the SDK's socket options) and its number of connections.
    """

    def __init__(self, shards: list[tuple[httpx2.AsyncBaseTransport, int]]) -> None:
        self.shards = [transport for transport, _ in shards]
        self.free = [size for _, size in shards]

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        free = self.free
        shard = max(range(len(free)), key=free.__getitem__)
        free[shard] -= 1
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                free[shard] += 1

        try:
            response = await self.shards[shard].handle_async_request(request)
        except BaseException:
            release()
            raise
        assert isinstance(response.stream, httpx2.AsyncByteStream)
        response.stream = _Released(response.stream, release)
        return response

    async def aclose(self) -> None:
        for shard in self.shards:
            await shard.aclose()
