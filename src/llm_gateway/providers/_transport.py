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

httpx2's pool is :class:`StackedConnectionPool`: httpcore2's connections, without httpcore2's
per-request walk over the whole pool (which costs in proportion to the pool's size).

Imported only by the SDK adapters; it never imports aiohttp unless a model uses it.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import ssl
from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping
from typing import Any

import anyio
import attrs
import httpcore2
import httpx2
import sniffio

from .._config import ModelConfig
from .._exceptions import ConfigError

__all__ = [
    "HTTP_CLIENTS",
    "GatewayAiohttpTransport",
    "SdkHttpClients",
    "StackedConnectionPool",
    "build_http_client",
    "http_client_choice",
    "pool_limits",
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

    httpx2's pool of ``max_concurrency`` connections is a :class:`StackedConnectionPool`;
    aiohttp's is one connector, its transport wrapped by :class:`GatewayAiohttpTransport`.
    Blocking (the SSL context, the first time):
    call it from a worker thread.
    """
    options: dict[str, Any] = {"timeout": config.timeout_s, "verify": shared_ssl_context()}
    if choice == "aiohttp":
        client = clients.aiohttp(**options, limits=pool_limits(config))
        _wrap_transports(client)
        return client
    client = clients.httpx(**options, limits=pool_limits(config))
    # The SDK's transport keeps its pool in ``_pool`` and httpx2 has no hook to choose
    # another; this one has not opened a socket yet. Proxy mounts keep httpcore2's pools.
    transport = client._transport
    if isinstance(transport, httpx2.AsyncHTTPTransport):
        transport._pool = StackedConnectionPool.replacing(transport._pool)
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


# -- httpx2's pool: a stack of idle connections ---------------------------------------------


class StackedConnectionPool(httpcore2.AsyncConnectionPool):
    """httpcore2's connection pool, with each origin's idle connections kept on a stack.

    httpcore2's own pool walks all of its connections twice per request (when a request
    starts and when its response closes), asking each idle one whether its socket is still
    good: at 64 connections that walk cost more than the rest of the HTTP/1.1 exchange on
    trio. Here a request takes the most recently used idle connection of its origin (one
    check of that one socket) or opens a new one; its response's close puts the connection
    back. The connections themselves (HTTP/1.1, TLS, proxies, connect retries, timeouts) are
    httpcore2's, built by :meth:`create_connection` as httpcore2's pool builds them.

    The same limits as httpcore2's pool: at most ``max_connections`` connections, busy and
    idle together; requests beyond them wait (up to the request's ``pool`` timeout, then
    ``PoolTimeout``); at most ``max_keepalive_connections`` idle ones kept. For HTTP/1.1
    only: a pool that may speak HTTP/2 shares connections between requests, so it stays
    httpcore2's own (:meth:`replacing` returns it unchanged).

    A connection whose exchange fails or is cancelled is closed at once (shielded from the
    cancellation), so cancelling a request closes its socket.
    """

    @classmethod
    def replacing(cls, pool: httpcore2.AsyncConnectionPool) -> httpcore2.AsyncConnectionPool:
        """A pool with ``pool``'s settings (its SDK's socket options, SSL context, proxy)."""
        if type(pool) is not httpcore2.AsyncConnectionPool or pool._http2:
            return pool
        return cls(
            ssl_context=pool._ssl_context,
            proxy=pool._proxy,
            max_connections=pool._max_connections,
            max_keepalive_connections=pool._max_keepalive_connections,
            keepalive_expiry=pool._keepalive_expiry,
            http1=pool._http1,
            http2=pool._http2,
            retries=pool._retries,
            local_address=pool._local_address,
            uds=pool._uds,
            network_backend=pool._network_backend,
            socket_options=pool._socket_options,
        )

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        self._idle: dict[tuple[bytes, bytes, int], list[httpcore2.AsyncConnectionInterface]] = {}
        self._busy: set[httpcore2.AsyncConnectionInterface] = set()
        # One token per request holding (or about to hold) a connection: the limit on
        # requests in flight; idle connections beyond it are closed when a new one opens.
        self._slots = anyio.Semaphore(self._max_connections)

    @property
    def connections(self) -> list[httpcore2.AsyncConnectionInterface]:
        """Every open connection: busy ones, then each origin's idle ones."""
        return [*self._busy, *(c for stack in self._idle.values() for c in stack)]

    def _idle_count(self) -> int:
        return sum(map(len, self._idle.values()))

    async def handle_async_request(self, request: httpcore2.Request) -> httpcore2.Response:
        """Send ``request`` on an idle connection of its origin, or on a new one."""
        scheme = request.url.scheme
        if scheme not in (b"http", b"https", b"ws", b"wss"):
            raise httpcore2.UnsupportedProtocol(
                "Request URL is missing an 'http://' or 'https://' protocol."
                if not scheme
                else f"Request URL has an unsupported protocol '{scheme.decode()}://'."
            )
        try:
            self._slots.acquire_nowait()
        except anyio.WouldBlock:
            timeout = request.extensions.get("timeout", {}).get("pool")
            with anyio.move_on_after(timeout) as waited:
                await self._slots.acquire()
            if waited.cancelled_caught:
                raise httpcore2.PoolTimeout("no connection came free in time") from None
        try:
            return await self._send(request)
        except BaseException:
            self._slots.release()
            raise

    async def _send(self, request: httpcore2.Request) -> httpcore2.Response:
        origin = request.url.origin
        key = (origin.scheme, origin.host, origin.port)
        while True:
            connection = await self._take_idle(key)
            if connection is None:
                await self._make_room()
                connection = self.create_connection(origin)
            self._busy.add(connection)
            try:
                response = await connection.handle_async_request(request)
            except httpcore2.ConnectionNotAvailable:
                # It closed between the check and the send: take another.
                await self._discard(connection)
                continue
            except BaseException:
                await self._discard(connection)
                raise
            assert isinstance(response.stream, AsyncIterable)
            return httpcore2.Response(
                status=response.status,
                headers=response.headers,
                content=_Released(response.stream, self, key, connection),
                extensions=response.extensions,
            )

    async def _take_idle(
        self, key: tuple[bytes, bytes, int]
    ) -> httpcore2.AsyncConnectionInterface | None:
        stack = self._idle.get(key)
        while stack:
            connection = stack.pop()
            if connection.is_available() and not connection.has_expired():
                return connection
            await _close(connection)
        return None

    async def _make_room(self) -> None:
        # This request holds a slot but no connection yet, so with the pool full at least
        # one connection is idle: close the oldest of some origin's.
        while self._idle_count() and len(self._busy) + self._idle_count() >= self._max_connections:
            stack = next(stack for stack in self._idle.values() if stack)
            await _close(stack.pop(0))

    async def _discard(self, connection: httpcore2.AsyncConnectionInterface) -> None:
        self._busy.discard(connection)
        await _close(connection)

    async def release(
        self, key: tuple[bytes, bytes, int], connection: httpcore2.AsyncConnectionInterface
    ) -> None:
        """Take back ``connection`` when its response closed: idle if reusable, else closed."""
        self._busy.discard(connection)
        self._slots.release()
        if connection.is_idle() and self._idle_count() < self._max_keepalive_connections:
            self._idle.setdefault(key, []).append(connection)
        else:
            await _close(connection)

    async def aclose(self) -> None:
        """Close every connection, busy ones included (as httpcore2's pool does)."""
        closing = self.connections
        self._busy.clear()
        self._idle.clear()
        for connection in closing:
            await _close(connection)

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} [Connections: {len(self._busy)} active, "
            f"{self._idle_count()} idle]>"
        )


async def _close(connection: httpcore2.AsyncConnectionInterface) -> None:
    with anyio.CancelScope(shield=True):
        await connection.aclose()


class _Released:
    """A response body that gives its connection back to the pool once, when closed."""

    def __init__(
        self,
        stream: AsyncIterable[bytes],
        pool: StackedConnectionPool,
        key: tuple[bytes, bytes, int],
        connection: httpcore2.AsyncConnectionInterface,
    ) -> None:
        self._stream = stream
        self._pool = pool
        self._key = key
        self._connection: httpcore2.AsyncConnectionInterface | None = connection

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._stream:
            yield chunk

    async def aclose(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        try:
            with anyio.CancelScope(shield=True):
                aclose = getattr(self._stream, "aclose", None)
                if aclose is not None:
                    await aclose()
        finally:
            await self._pool.release(self._key, connection)
