"""The same workload through each contender: N one-message chat requests, at most C at once.

Each contender is an async context manager that builds its clients (inside the event loop of
the run) and yields ``send(n)``: send ``n`` requests the way that library's users do, at the
run's concurrency, and return how many came back with the expected answer. The request objects
are built inside ``send``, as users build them per call.

- ``sdk``: the official SDK (``AsyncOpenAI.chat.completions.create`` /
  ``AsyncAnthropic.messages.create``), an ``asyncio.Semaphore(C)`` and ``asyncio.gather``.
- ``sdk-aiohttp``: the same on the SDK's official aiohttp client (``DefaultAioHttpClient``).
- ``gateway-asyncio`` / ``gateway-trio``: one ``Gateway`` model with ``max_concurrency=C`` and
  otherwise default settings (``batch_fill="eager"``, logs on, ``http_client="auto"``: aiohttp
  on asyncio when installed, httpx2 on trio), ``await gw.batch(requests)``, NORMAL priority (the
  default); ``gateway-asyncio-high``: the same with every request HIGH;
  ``gateway-asyncio-httpx``: ``gateway-asyncio`` with ``http_client="httpx"`` (httpx2).
- ``litellm``: ``litellm.Router`` with one deployment, ``max_parallel_requests=C``,
  ``num_retries=3``, ``asyncio.gather`` of ``router.acompletion`` calls.
- ``langchain``: ``ChatOpenAI(...).abatch(prompts, config={"max_concurrency": C})``
  (OpenAI protocol only).

Every client gets retries matching the gateway's default (4 attempts); none is exercised.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import anyio
import attrs

from ._fake import ANSWER, MAX_TOKENS, MODEL_ANTHROPIC, MODEL_OPENAI, PROMPT

Send = Callable[[int], Awaitable[int]]
RETRIES = 3  # the gateway's default RetryPolicy(max_attempts=4): 1 call + 3 retries


@attrs.frozen
class Setup:
    """One run's setting.

    Attributes:
        protocol: ``"openai"`` or ``"anthropic"``.
        transport: ``"mock"`` (in-process MockTransport) or ``"loopback"``.
        concurrency: The most requests in flight.
        port: The loopback server's port (``transport == "loopback"``).
        priority: The gateway requests' priority (``"NORMAL"``, the default, or ``"HIGH"``).
        http_client: The HTTP client: the gateway's ``provider_options.http_client`` (``"auto"``,
            ``"httpx"``, ``"aiohttp"``); the raw SDK's when ``"aiohttp"`` (else httpx2).
    """

    protocol: str
    transport: str
    concurrency: int
    port: int = 0
    priority: str = "NORMAL"
    http_client: str = "auto"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_base_url(self) -> str:
        return f"{self.base_url}/v1" if self.transport == "loopback" else "http://fake.test/v1"

    @property
    def anthropic_base_url(self) -> str:
        return self.base_url if self.transport == "loopback" else "http://fake.test"


# -- raw SDK ------------------------------------------------------------------------------------


def _sdk_http(sdk: Any, setup: Setup, limits: Any) -> Any:
    """The SDK's own HTTP client for a loopback run: aiohttp if the setup asks, else httpx2."""
    if setup.http_client == "aiohttp":
        return sdk.DefaultAioHttpClient(limits=limits)
    return sdk.DefaultAsyncHttpxClient(limits=limits)


@asynccontextmanager
async def open_sdk(setup: Setup) -> AsyncGenerator[Send]:
    import asyncio

    import httpx2

    from ._fake import httpx2_transport

    c = setup.concurrency
    limits = httpx2.Limits(max_connections=c, max_keepalive_connections=c)
    if setup.protocol == "openai":
        import openai

        http = (
            httpx2.AsyncClient(transport=httpx2_transport())
            if setup.transport == "mock"
            else _sdk_http(openai, setup, limits)
        )
        client: Any = openai.AsyncOpenAI(
            api_key="k", base_url=setup.openai_base_url, max_retries=RETRIES, http_client=http
        )

        async def one(sem: asyncio.Semaphore) -> bool:
            async with sem:
                r = await client.chat.completions.create(
                    model=MODEL_OPENAI,
                    messages=[{"role": "user", "content": PROMPT}],
                    max_completion_tokens=MAX_TOKENS,
                    temperature=0,
                )
            return bool(r.choices[0].message.content == ANSWER)

    else:
        import anthropic

        http = (
            httpx2.AsyncClient(transport=httpx2_transport())
            if setup.transport == "mock"
            else _sdk_http(anthropic, setup, limits)
        )
        client = anthropic.AsyncAnthropic(
            api_key="k", base_url=setup.anthropic_base_url, max_retries=RETRIES, http_client=http
        )

        async def one(sem: asyncio.Semaphore) -> bool:
            async with sem:
                r = await client.messages.create(
                    model=MODEL_ANTHROPIC,
                    max_tokens=MAX_TOKENS,
                    messages=[{"role": "user", "content": PROMPT}],
                )
            return bool(r.content[0].text == ANSWER)

    async def send(n: int) -> int:
        sem = asyncio.Semaphore(c)
        return sum(await asyncio.gather(*(one(sem) for _ in range(n))))

    try:
        yield send
    finally:
        await client.close()


@asynccontextmanager
async def open_sdk_post(setup: Setup) -> AsyncGenerator[Send]:
    """The SDK's low-level ``client.post(..., cast_to=httpx2.Response)``: the gateway's own path.

    Not a contender users pick: the floor under the gateway's adapters, so that the gateway's
    own cost (queue, batcher, futures, tasks, logs) shows as the difference.
    """
    import asyncio

    import httpx2

    from ._fake import httpx2_transport

    c = setup.concurrency
    limits = httpx2.Limits(max_connections=c, max_keepalive_connections=c)
    body = {"role": "user", "content": PROMPT}
    if setup.protocol == "openai":
        import openai

        http = (
            httpx2.AsyncClient(transport=httpx2_transport())
            if setup.transport == "mock"
            else openai.DefaultAsyncHttpxClient(limits=limits)
        )
        client: Any = openai.AsyncOpenAI(
            api_key="k", base_url=setup.openai_base_url, max_retries=RETRIES, http_client=http
        )
        path, options = "/chat/completions", {"security": {"bearer_auth": True}}

        def payload() -> dict[str, Any]:
            return {
                "model": MODEL_OPENAI,
                "messages": [dict(body)],
                "max_completion_tokens": MAX_TOKENS,
                "temperature": 0,
            }

        def text(data: Any) -> Any:
            return data["choices"][0]["message"]["content"]

    else:
        import anthropic

        http = (
            httpx2.AsyncClient(transport=httpx2_transport())
            if setup.transport == "mock"
            else anthropic.DefaultAsyncHttpxClient(limits=limits)
        )
        client = anthropic.AsyncAnthropic(
            api_key="k", base_url=setup.anthropic_base_url, max_retries=RETRIES, http_client=http
        )
        path, options = "/v1/messages", {}

        def payload() -> dict[str, Any]:
            return {"max_tokens": MAX_TOKENS, "messages": [dict(body)], "model": MODEL_ANTHROPIC}

        def text(data: Any) -> Any:
            return data["content"][0]["text"]

    async def one(sem: asyncio.Semaphore) -> bool:
        async with sem:
            r = await client.post(path, body=payload(), cast_to=httpx2.Response, options=options)
        return bool(text(r.json()) == ANSWER)

    async def send(n: int) -> int:
        sem = asyncio.Semaphore(c)
        return sum(await asyncio.gather(*(one(sem) for _ in range(n))))

    try:
        yield send
    finally:
        await client.close()


# -- this gateway -------------------------------------------------------------------------------


def gateway_models(setup: Setup, queue_capacity: int, batch_fill: str = "eager") -> dict[str, Any]:
    """The benchmark's one model, default settings but for concurrency, queue room and
    ``batch_fill`` (``"eager"`` is the default)."""
    from llm_gateway import ModelConfig

    options = {"http_client": setup.http_client}
    if setup.protocol == "openai":
        config = ModelConfig(
            provider="gpt-4o-mini",
            model_name=MODEL_OPENAI,
            endpoint=setup.openai_base_url,
            api_key="k",
            max_concurrency=setup.concurrency,
            queue_capacity=queue_capacity,
            batch_fill=batch_fill,
            provider_options=options,
        )
    else:
        config = ModelConfig(
            provider="claude-haiku",
            model_name=MODEL_ANTHROPIC,
            endpoint=setup.anthropic_base_url,
            api_key="k",
            max_concurrency=setup.concurrency,
            queue_capacity=queue_capacity,
            batch_fill=batch_fill,
            provider_options=options,
        )
    return {"m": config}


def bench_gateway(
    setup: Setup,
    *,
    queue_capacity: int = 10_000,
    log_dir: str | None = None,
    wrap: Callable[[AbstractAsyncContextManager[Any]], AbstractAsyncContextManager[Any]]
    | None = None,
    batch_fill: str = "eager",
) -> Any:
    """A ``Gateway`` on the fake provider (its SDK adapters over a MockTransport if asked).

    ``wrap`` may wrap each opened provider adapter (the latency benchmark times its calls).
    """
    from llm_gateway import Gateway
    from llm_gateway.providers import open_provider

    def factory(model_id: str, config: Any) -> AbstractAsyncContextManager[Any]:
        if setup.transport != "mock":
            opened = open_provider(model_id, config)
        else:
            import httpx2

            from ._fake import httpx2_transport

            client = httpx2.AsyncClient(transport=httpx2_transport())
            opened = open_provider(model_id, config, http_client=client)
        return opened if wrap is None else wrap(opened)

    models = gateway_models(setup, queue_capacity, batch_fill)
    return Gateway(models=models, log_dir=log_dir, provider_factory=factory)


@asynccontextmanager
async def open_gateway(setup: Setup) -> AsyncGenerator[Send]:
    from llm_gateway import LLMMessage, LLMRequest, RequestPriority

    priority = RequestPriority[setup.priority]
    with tempfile.TemporaryDirectory(prefix="bench-logs-") as logs:
        # Logs on, as by default (metadata only; one line per batch, off the event loop).
        async with bench_gateway(setup, queue_capacity=200_000, log_dir=logs) as gw:

            async def send(n: int) -> int:
                requests = [
                    LLMRequest(
                        model="m",
                        messages=[LLMMessage("user", PROMPT)],
                        max_tokens=MAX_TOKENS,
                        priority=priority,
                    )
                    for _ in range(n)
                ]
                return sum(r.content == ANSWER for r in await gw.batch(requests))

            yield send


# -- LiteLLM ------------------------------------------------------------------------------------


_LITELLM_DEFAULT_TRANSPORT: list[Any] = []


def _litellm_transport(mock: bool) -> None:
    """Give LiteLLM's HTTP clients the in-process MockTransport (both of its client paths),
    or put its own default back."""
    import httpx
    import litellm
    from litellm.llms.custom_httpx.http_handler import AsyncHTTPHandler

    from ._fake import httpx_transport

    if not _LITELLM_DEFAULT_TRANSPORT:
        _LITELLM_DEFAULT_TRANSPORT.append(AsyncHTTPHandler.__dict__["_create_async_transport"])
    if mock:
        litellm.aclient_session = httpx.AsyncClient(transport=httpx_transport())  # OpenAI path
        AsyncHTTPHandler._create_async_transport = staticmethod(  # type: ignore[method-assign]
            lambda *args, **kwargs: httpx_transport()
        )  # the Anthropic path (its own httpx handler)
    else:
        litellm.aclient_session = None
        AsyncHTTPHandler._create_async_transport = _LITELLM_DEFAULT_TRANSPORT[0]  # type: ignore[method-assign]


@asynccontextmanager
async def open_litellm(setup: Setup) -> AsyncGenerator[Send]:
    import asyncio

    import litellm

    litellm.telemetry = False
    litellm.suppress_debug_info = True
    _litellm_transport(mock=setup.transport == "mock")
    # LiteLLM caches its HTTP clients process-wide; each run starts from none (fresh loop).
    cache = getattr(litellm, "in_memory_llm_clients_cache", None)
    if cache is not None:
        cache.flush_cache()
    if setup.protocol == "openai":
        params = {"model": f"openai/{MODEL_OPENAI}", "api_base": setup.openai_base_url}
    else:
        params = {"model": f"anthropic/{MODEL_ANTHROPIC}", "api_base": setup.anthropic_base_url}
    params |= {"api_key": "k", "max_parallel_requests": setup.concurrency}
    router = litellm.Router(
        model_list=[{"model_name": "m", "litellm_params": params}], num_retries=RETRIES
    )

    async def one() -> bool:
        r = await router.acompletion(
            model="m",
            messages=[{"role": "user", "content": PROMPT}],
            max_tokens=MAX_TOKENS,
            temperature=0 if setup.protocol == "openai" else None,
        )
        return bool(r.choices[0].message.content == ANSWER)

    async def send(n: int) -> int:
        ok = sum(await asyncio.gather(*(one() for _ in range(n))))
        # Let LiteLLM's per-request logging (queued to a background worker) finish, so its CPU
        # is counted as part of the requests that made it.
        from litellm.litellm_core_utils.logging_worker import GLOBAL_LOGGING_WORKER

        queue = GLOBAL_LOGGING_WORKER._queue
        if queue is not None:
            with anyio.move_on_after(30):
                await queue.join()
        return ok

    try:
        yield send
    finally:
        if litellm.aclient_session is not None:
            await litellm.aclient_session.aclose()
        if cache is not None:
            for client in list(getattr(cache, "cache_dict", {}).values()):
                close = getattr(client, "aclose", None) or getattr(client, "close", None)
                if close is not None:
                    result = close()
                    if isinstance(result, Awaitable):
                        await result
            cache.flush_cache()


# -- LangChain ----------------------------------------------------------------------------------


@asynccontextmanager
async def open_langchain(setup: Setup) -> AsyncGenerator[Send]:
    import httpx2
    from langchain_openai import ChatOpenAI

    from ._fake import httpx2_transport

    if setup.protocol != "openai":
        raise ValueError("the LangChain contender is ChatOpenAI: OpenAI protocol only")
    c = setup.concurrency
    http = (
        httpx2.AsyncClient(transport=httpx2_transport())
        if setup.transport == "mock"
        else httpx2.AsyncClient(
            limits=httpx2.Limits(max_connections=c, max_keepalive_connections=c), timeout=600
        )
    )
    llm = ChatOpenAI(
        model=MODEL_OPENAI,
        base_url=setup.openai_base_url,
        api_key="k",  # type: ignore[arg-type]
        max_retries=RETRIES,
        temperature=0,
        max_completion_tokens=MAX_TOKENS,
        http_async_client=http,
    )

    async def send(n: int) -> int:
        answers = await llm.abatch([PROMPT] * n, config={"max_concurrency": c})
        return sum(a.content == ANSWER for a in answers)

    try:
        yield send
    finally:
        await http.aclose()


Opener = Callable[[Setup], AbstractAsyncContextManager[Send]]


def _on(opener: Opener, http_client: str) -> Opener:
    """``opener`` with the HTTP client ``http_client`` (``Setup.http_client``)."""
    return lambda setup: opener(attrs.evolve(setup, http_client=http_client))


CONTENDERS: dict[str, Opener] = {
    "sdk": open_sdk,
    "sdk-post": open_sdk_post,
    "gateway-asyncio": open_gateway,
    "gateway-trio": open_gateway,
    "gateway-asyncio-high": open_gateway,  # every request HIGH
    "gateway-asyncio-httpx": _on(open_gateway, "httpx"),  # on httpx2, not aiohttp
    "sdk-aiohttp": _on(open_sdk, "aiohttp"),  # on the SDK's aiohttp client
    "litellm": open_litellm,
    "langchain": open_langchain,
}
"""Contender name -> how to open it."""

BACKENDS = {"gateway-trio": "trio"}
"""The event loop each contender runs on (asyncio unless named here)."""

LITELLM_ENV = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_TELEMETRY": "False"}
"""Environment for LiteLLM: no network fetch of its model price list at import."""
