"""The adapter contract again, over real loopback sockets, on each HTTP client the adapters use.

``test_provider_contract.py`` runs on an ``httpx2.MockTransport`` (virtual time), which cannot
drive aiohttp. Here the same tests (imported below) run against the same scripted API served on
127.0.0.1, with the adapter's own HTTP client (``provider_options.http_client``): httpx2 on
trio and asyncio, aiohttp on asyncio. The tests after them cover what only a socket shows:
timeouts, dropped and refused connections, cancellation reaching the socket, pool limits, and
what the transports' exceptions may carry. Real time; nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterator
from typing import Any

import anyio
import attrs
import httpx2
import pytest

from llm_gateway import (
    ConfigError,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeoutError,
    RequestTimeoutError,
)
from llm_gateway.providers import _transport as transport_module
from llm_gateway.providers import open_provider

from ._provider_support import PROTOCOLS, Protocol, ScriptedGateway, on_wire, open_scripted, user
from .test_provider_contract import (  # noqa: F401 (collected here again, on each wire)
    test_429_is_a_rate_limit_error_with_retry_after_and_rate_limit_headers,
    test_a_body_nested_too_deeply_is_a_provider_response_error,
    test_a_finish_reason_that_is_not_a_string_is_a_provider_response_error,
    test_a_gateway_batches_requests_and_matches_answers,
    test_a_gateway_delivers_provider_errors_as_they_are,
    test_a_gateway_survives_a_reply_with_string_usage,
    test_a_malformed_body_names_the_request_id,
    test_a_surrogate_pair_escape_is_text,
    test_a_tool_call_is_read_into_a_tool_call,
    test_a_usage_count_that_is_not_an_int_is_a_provider_response_error,
    test_answer_text_that_is_not_a_string_is_a_provider_response_error,
    test_answer_text_with_a_lone_surrogate_is_a_provider_response_error,
    test_finish_reasons_are_normalised,
    test_headers_carry_the_key_and_extra_headers_with_sdk_retries_off,
    test_http_errors_are_classified_by_status,
    test_malformed_bodies_are_provider_response_errors,
    test_malformed_tool_calls_are_provider_response_errors,
    test_missing_or_null_usage_counts_are_zero,
    test_non_json_error_body_still_gives_the_status,
    test_rate_limit_headers_of_a_success_are_kept_and_no_others,
    test_retry_after_ms_first_then_retry_after_as_seconds_or_date,
    test_text_tool_calls_finish_and_request_id_are_normalised,
    test_usage_counts_are_read_from_their_fields,
    test_usage_itself_must_be_an_object_or_null,
)

pytestmark = pytest.mark.anyio

CASES = [("trio", "httpx"), ("asyncio", "httpx"), ("asyncio", "aiohttp")]
"""(event loop, HTTP client): aiohttp runs on asyncio only."""


@pytest.fixture(params=CASES, ids=[f"{loop}-{wire}" for loop, wire in CASES])
def case(request: pytest.FixtureRequest) -> tuple[str, str]:
    result: tuple[str, str] = request.param
    return result


@pytest.fixture
def anyio_backend(case: tuple[str, str]) -> tuple[str, dict[str, Any]]:
    """Real time: sockets do not run on virtual clocks."""
    return (case[0], {})


@pytest.fixture
def wire(case: tuple[str, str]) -> str:
    return case[1]


@pytest.fixture(params=PROTOCOLS, ids=str)
def protocol(request: pytest.FixtureRequest) -> Protocol:
    result: Protocol = request.param
    return result


def chain(error: BaseException) -> Iterator[BaseException]:
    """``error`` and every exception chained to it (causes and contexts)."""
    seen: list[BaseException] = []
    todo: list[BaseException] = [error]
    while todo:
        current = todo.pop()
        if any(current is s for s in seen):
            continue
        seen.append(current)
        todo += [e for e in (current.__cause__, current.__context__) if e is not None]
    yield from seen


def everything_shown(error: BaseException) -> str:
    """All an exception shows or holds: its traceback, and each chained one's str, repr and
    attributes (aiohttp's exceptions keep the request's URL and headers as attributes)."""
    parts = ["".join(traceback.format_exception(error))]
    for e in chain(error):
        parts += [str(e), repr(e), repr(vars(e))]
    return "\n".join(parts)


# -- which client, and its configuration -----------------------------------------------------


async def test_each_wire_uses_its_http_client(protocol: Protocol, wire: str) -> None:
    scripted = protocol.api()
    async with scripted.serving(wire), open_scripted("m", protocol.config(), scripted, wire) as p:
        transport = p.client._client._transport  # type: ignore[attr-defined]
        await p.complete(user("hi"))
    if wire == "aiohttp":
        assert type(transport) is transport_module.GatewayAiohttpTransport
    else:
        assert type(transport._pool) is transport_module.StackedConnectionPool


async def test_auto_is_aiohttp_on_asyncio_and_httpx_on_trio(
    protocol: Protocol, anyio_backend: tuple[str, dict[str, Any]]
) -> None:
    config = protocol.config(provider_options={"http_client": "auto"})
    async with open_provider("m", config) as p:
        transport = p.client._client._transport  # type: ignore[attr-defined]
    on_asyncio = anyio_backend[0] == "asyncio"
    assert isinstance(transport, transport_module.GatewayAiohttpTransport) == on_asyncio


async def test_auto_is_httpx_when_aiohttp_is_not_installed(
    protocol: Protocol, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transport_module, "_aiohttp_installed", lambda: False)
    async with open_provider("m", protocol.config()) as p:
        transport = p.client._client._transport  # type: ignore[attr-defined]
    assert type(transport._pool) is transport_module.StackedConnectionPool


@pytest.mark.parametrize("value", ["curl", "", 3, None, "AIOHTTP"])
async def test_an_unknown_http_client_is_a_config_error(protocol: Protocol, value: Any) -> None:
    config = protocol.config(provider_options={"http_client": value})
    with pytest.raises(ConfigError) as caught:
        async with open_provider("m", config):
            pass
    assert str(caught.value) == (
        f"models.m.provider_options.http_client is {value!r}; use one of 'auto', 'httpx', 'aiohttp'"
    )


async def test_aiohttp_on_trio_or_not_installed_is_a_config_error(
    protocol: Protocol, anyio_backend: tuple[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    config = protocol.config(provider_options={"http_client": "aiohttp"})
    if anyio_backend[0] == "asyncio":
        monkeypatch.setattr(transport_module, "_aiohttp_installed", lambda: False)
        expected = "aiohttp is not installed; install it from the project's checkout with: pip"
    else:
        expected = "which runs only on asyncio, and this gateway runs on trio; use 'auto'"
    with pytest.raises(ConfigError, match=r"models\.m\.provider_options\.http_client is 'aiohttp'"):
        async with open_provider("m", config):
            pass
    with pytest.raises(ConfigError) as caught:
        async with open_provider("m", config):
            pass
    assert expected in str(caught.value)


def test_clients_share_one_ssl_context() -> None:
    first = transport_module.shared_ssl_context()
    assert transport_module.shared_ssl_context() is first


# -- failures only a socket shows ------------------------------------------------------------


async def test_a_server_that_never_answers_is_a_timeout_and_sees_the_connection_close(
    protocol: Protocol, wire: str
) -> None:
    """timeout_s is the HTTP client's read timeout on both clients; the client then closes."""
    scripted = protocol.api()
    scripted.reply(httpx2.ReadTimeout("held: the server never answers"))
    config = protocol.config(timeout_s=0.3)
    async with scripted.serving(wire), open_scripted("m", config, scripted, wire) as p:
        start = anyio.current_time()
        with pytest.raises(ProviderTimeoutError) as caught:
            await p.complete(user("hi"))
        assert 0.25 <= anyio.current_time() - start < 5
        assert scripted.closed is not None
        with anyio.fail_after(5):
            await scripted.closed.wait()
    assert len(scripted.requests) == 1  # SDK retries off
    assert isinstance(caught.value.__cause__, httpx2.ReadTimeout)


async def test_a_dropped_connection_is_a_connection_error(protocol: Protocol, wire: str) -> None:
    scripted = protocol.api()
    scripted.reply(httpx2.RemoteProtocolError("dropped"))  # the server closes, no answer
    async with scripted.serving(wire), open_scripted("m", protocol.config(), scripted, wire) as p:
        with pytest.raises(ProviderConnectionError) as caught:
            await p.complete(user("hi"))
        assert (await p.complete(user("again"))).content == "echo again"  # a new connection
    assert len(scripted.requests) == 2
    assert str(caught.value) == f"could not reach {protocol.display} (RemoteProtocolError)"
    assert isinstance(caught.value.__cause__, httpx2.RemoteProtocolError)


async def test_a_refused_connection_is_a_connection_error(protocol: Protocol, wire: str) -> None:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    await listener.aclose()  # nothing listens there now
    scripted = attrs.evolve(protocol.api(), base_url=f"http://127.0.0.1:{port}")
    config = on_wire(protocol.config(), scripted, wire) if wire != "mock" else protocol.config()
    async with open_provider("m", config) as p:
        with pytest.raises(ProviderConnectionError) as caught:
            await p.complete(user("hi"))
    assert str(caught.value) == f"could not reach {protocol.display} (ConnectError)"
    assert isinstance(caught.value.__cause__, httpx2.ConnectError)


async def test_cancelling_a_call_closes_its_connection(protocol: Protocol, wire: str) -> None:
    """Cancellation reaches the socket: the server sees the connection close at once."""
    scripted = protocol.api()
    scripted.reply(httpx2.ReadTimeout("held"))
    config = protocol.config(timeout_s=None)
    async with scripted.serving(wire), open_scripted("m", config, scripted, wire) as p:
        with anyio.move_on_after(0.2) as scope:
            await p.complete(user("hi"))
        assert scope.cancelled_caught
        assert scripted.closed is not None
        with anyio.fail_after(2):
            await scripted.closed.wait()
        assert (await p.complete(user("after"))).content == "echo after"
    assert scripted.disconnects == 1
    assert len(scripted.requests) == 2


async def test_the_gateway_deadline_closes_the_connection(protocol: Protocol, wire: str) -> None:
    scripted = protocol.api()
    scripted.reply(httpx2.ReadTimeout("held"))
    config = protocol.config(timeout_s=None)
    async with scripted.serving(wire), ScriptedGateway({"m": config}, scripted, wire) as gw:
        with pytest.raises(RequestTimeoutError):
            await gw.request(user("slow", timeout_s=0.3))
        assert scripted.closed is not None
        with anyio.fail_after(2):
            await scripted.closed.wait()
    assert len(scripted.requests) == 1


@pytest.mark.parametrize("max_concurrency", [2, 9])
async def test_the_pool_holds_max_concurrency_connections(
    protocol: Protocol, wire: str, max_concurrency: int
) -> None:
    """At most max_concurrency connections, all of them used, and kept (httpx2's in the
    stacked pool, aiohttp's in its connector)."""
    scripted = protocol.api()
    scripted.delay_s = 0.05
    config = protocol.config(max_concurrency=max_concurrency)
    async with scripted.serving(wire), open_scripted("m", config, scripted, wire) as p:
        for burst in range(2):
            async with anyio.create_task_group() as tg:
                for i in range(3 * max_concurrency):
                    tg.start_soon(p.complete, user(f"q{burst}-{i}"))
            assert len(scripted.requests) == 3 * max_concurrency * (burst + 1)
            # The others waited for a pooled connection; the second burst reuses them all.
            assert scripted.connections == max_concurrency


# -- what the transports' exceptions may carry -----------------------------------------------

SECRET = "sk-live-7f3a9c1e5b2d4f6a8c0e"


async def test_a_key_the_client_refuses_to_send_never_shows(protocol: Protocol, wire: str) -> None:
    """A header with a line break: httpx2's h11 and aiohttp both refuse it before sending, and
    their exceptions quote it. Same error on both clients; the key nowhere in it."""
    scripted = protocol.api()
    async with scripted.serving(wire), open_scripted("m", protocol.config(), scripted, wire) as p:
        p.client.api_key = SECRET + "\n"  # type: ignore[attr-defined]
        with pytest.raises(ProviderConnectionError) as caught:
            await p.complete(user("hi"))
    assert scripted.requests == []
    assert str(caught.value).startswith(f"could not reach {protocol.display} (LocalProtocolError")
    assert SECRET not in everything_shown(caught.value)
    assert caught.value.__cause__ is None


@pytest.mark.parametrize("failure", ["refused", "timeout", "dropped"])
async def test_a_transport_error_holds_no_secret_of_the_request(
    protocol: Protocol, wire: str, failure: str
) -> None:
    """Not the key, an extra header, nor a secret in the endpoint's query (aiohttp's exceptions
    keep the request's URL and headers as attributes, and quote the URL in messages)."""
    scripted = protocol.api()
    scripted.reply(
        httpx2.ReadTimeout("held") if failure == "timeout" else httpx2.RemoteProtocolError("x")
    )
    options = {"extra_headers": {"x-secret-header": "hdr-" + SECRET}}
    async with scripted.serving(wire):
        config = on_wire(protocol.config(timeout_s=0.3, provider_options=options), scripted, wire)
        if failure == "refused":
            listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
            port = listener.extra(anyio.abc.SocketAttribute.local_port)
            await listener.aclose()
            config = attrs.evolve(config, endpoint=f"http://127.0.0.1:{port}/v1")
        config = attrs.evolve(
            config, api_key="key-" + SECRET, endpoint=f"{config.endpoint}?api-key=url-{SECRET}"
        )
        async with open_provider("m", config) as p:
            with pytest.raises(ProviderError) as caught:
                await p.complete(user("hi"))
    assert type(caught.value) in (ProviderConnectionError, ProviderTimeoutError)
    assert caught.value.__cause__ is not None  # socket-level: kept, for debugging
    assert SECRET not in everything_shown(caught.value)
