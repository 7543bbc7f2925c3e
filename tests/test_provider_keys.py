"""Keys never leak (defect class 5 of issue 10), on both SDK adapters.

A key that cannot be sent is refused when the adapter opens, naming where it came from and never
showing it; extra headers likewise. And no exception an adapter raises carries the key in its
str, its repr, or its printed traceback (chained causes and contexts included), even when the
transport's own error quotes it.
"""

from __future__ import annotations

import traceback
from typing import Any

import httpx2
import pytest

from llm_gateway import (
    ConfigError,
    GatewayError,
    ModelConfig,
    ProviderConnectionError,
    ProviderTimeoutError,
)
from llm_gateway.providers import open_provider

from ._provider_support import OPENAI, PROTOCOLS, Protocol, ScriptedApi, ScriptedGateway, user

pytestmark = pytest.mark.anyio

KEY = "sk-live-7f3a9c1e5b2d4f6a8c0e"


@pytest.fixture(params=PROTOCOLS, ids=str)
def protocol(request: pytest.FixtureRequest) -> Protocol:
    result: Protocol = request.param
    return result


@pytest.fixture(autouse=True)
def no_keys_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for p in PROTOCOLS:
        monkeypatch.delenv(p.env_var, raising=False)


def everything_shown(error: BaseException) -> str:
    """All an exception shows: its printed traceback, and the str and repr of every exception
    reachable from it (chained causes and contexts, suppressed or not)."""
    shown = ["".join(traceback.format_exception(error))]
    seen: set[int] = set()
    todo: list[BaseException | None] = [error]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        shown += [str(current), repr(current)]
        todo += [current.__cause__, current.__context__]
    return "\n".join(shown)


def no_http(request: httpx2.Request) -> httpx2.Response:
    raise AssertionError("no request expected: the key should have been refused at open")


# -- a key that cannot be sent is refused at open ------------------------------------------

BAD_KEYS = [
    pytest.param(KEY + "\n", id="trailing-newline"),
    pytest.param(KEY + "\r\n", id="crlf"),
    pytest.param(KEY[:10] + "\r\nX-Injected: 1", id="header-injection"),
    pytest.param(" " + KEY, id="leading-space"),
    pytest.param(KEY + "\t", id="tab"),
    pytest.param(KEY[:8] + " " + KEY[8:], id="inner-space"),
    pytest.param(KEY + "é", id="non-ascii"),
    pytest.param("ключ-" + KEY, id="cyrillic"),
]


@pytest.mark.parametrize("key", BAD_KEYS)
async def test_an_environment_key_that_cannot_be_sent_is_a_config_error_at_open(
    protocol: Protocol, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(protocol.env_var, key)
    scripted = ScriptedApi(no_http)
    config = protocol.config(api_key=None)
    with pytest.raises(ConfigError) as caught:
        async with open_provider("fast", config, http_client=scripted.client()):
            pytest.fail("the adapter opened with a key it cannot send")
    message = str(caught.value)
    assert protocol.env_var in message
    assert "models.fast" in message
    assert "not shown" in message
    shown = everything_shown(caught.value)
    assert KEY not in shown and KEY[:10] not in shown and key.strip() not in shown
    assert not isinstance(caught.value, UnicodeError)
    assert scripted.requests == []


@pytest.mark.parametrize("key", BAD_KEYS)
async def test_a_configured_key_that_cannot_be_sent_is_a_config_error(
    protocol: Protocol, key: str
) -> None:
    # The config may refuse it itself (ModelConfig validates keys too); either way it is a
    # ConfigError before any request, naming the field and never showing the key.
    scripted = ScriptedApi(no_http)
    with pytest.raises(ConfigError) as caught:
        config = protocol.config(api_key=key)
        async with open_provider("fast", config, http_client=scripted.client()):
            pytest.fail("the adapter opened with a key it cannot send")
    assert "api_key" in str(caught.value)
    shown = everything_shown(caught.value)
    assert KEY not in shown and KEY[:10] not in shown
    assert scripted.requests == []


async def test_a_clean_environment_key_is_sent_as_it_is(
    protocol: Protocol, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(protocol.env_var, KEY)
    scripted = protocol.api()
    async with open_provider(
        "m", protocol.config(api_key=None), http_client=scripted.client()
    ) as p:
        await p.complete(user("hi"))
    assert scripted.requests[0].headers["authorization"] == f"Bearer {KEY}"


# -- extra headers and header-borne options ------------------------------------------------

SECRET_HEADER = "proxy-token-5e8d1c7b9a"


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(SECRET_HEADER + "\n", id="newline"),
        pytest.param(SECRET_HEADER + "\r\nX-Injected: 1", id="crlf-injection"),
        pytest.param(SECRET_HEADER + "\x00", id="nul"),
        pytest.param(SECRET_HEADER + "\x7f", id="del"),
        pytest.param(SECRET_HEADER + "é", id="non-ascii"),
        pytest.param(" " + SECRET_HEADER, id="leading-space"),
        pytest.param(SECRET_HEADER + " ", id="trailing-space"),
    ],
)
async def test_an_extra_header_value_that_cannot_be_sent_is_a_config_error(
    protocol: Protocol, value: str
) -> None:
    config = protocol.config(provider_options={"extra_headers": {"x-proxy-auth": value}})
    with pytest.raises(ConfigError) as caught:
        async with open_provider("m", config, http_client=ScriptedApi(no_http).client()):
            pytest.fail("the adapter opened with a header it cannot send")
    message = str(caught.value)
    assert "models.m.provider_options.extra_headers['x-proxy-auth']" in message
    assert "not shown" in message
    assert SECRET_HEADER not in everything_shown(caught.value)


@pytest.mark.parametrize("name", ["x bad", "x-bad\r\n", "", "x:y", "é"])
async def test_an_extra_header_name_that_is_not_a_token_is_a_config_error(
    protocol: Protocol, name: str
) -> None:
    config = protocol.config(provider_options={"extra_headers": {name: SECRET_HEADER}})
    with pytest.raises(ConfigError, match=r"extra_headers has a header name that is not an HTTP"):
        async with open_provider("m", config, http_client=ScriptedApi(no_http).client()):
            pass


async def test_printable_extra_headers_with_inner_spaces_are_sent(protocol: Protocol) -> None:
    headers = {"x-note": "two words\tand a tab", "x-empty": ""}
    scripted = protocol.api()
    config = protocol.config(provider_options={"extra_headers": headers})
    async with open_provider("m", config, http_client=scripted.client()) as provider:
        await provider.complete(user("hi"))
    sent = scripted.requests[0].headers
    assert (sent["x-note"], sent["x-empty"]) == ("two words\tand a tab", "")


@pytest.mark.parametrize("option", ["organization", "project"])
async def test_an_openai_header_option_that_cannot_be_sent_is_a_config_error(option: str) -> None:
    config = OPENAI.config(provider_options={option: "org-" + SECRET_HEADER + "\n"})
    with pytest.raises(ConfigError, match=rf"provider_options\.{option} has characters") as caught:
        async with open_provider("m", config, http_client=ScriptedApi(no_http).client()):
            pass
    assert SECRET_HEADER not in everything_shown(caught.value)


# -- no adapter exception carries the key ---------------------------------------------------


def leaking_protocol_error(request: httpx2.Request) -> httpx2.Response:
    """What h11 raises for a header it cannot send: the message quotes the header's value."""
    value = request.headers["authorization"].encode()
    raise httpx2.LocalProtocolError(f"Illegal header value {value!r}")


async def adapter_error(protocol: Protocol, reply: Any, **options: Any) -> GatewayError:
    scripted = ScriptedApi(protocol.echo)
    scripted.reply(reply)
    config = protocol.config(api_key=KEY, **options)
    async with open_provider("m", config, http_client=scripted.client()) as provider:
        with pytest.raises(GatewayError) as caught:
            await provider.complete(user("hi"))
    assert scripted.requests, "the call was made"
    return caught.value


async def test_a_transport_error_quoting_the_key_does_not_leak_it(protocol: Protocol) -> None:
    error = await adapter_error(protocol, leaking_protocol_error)
    assert type(error) is ProviderConnectionError
    assert str(error) == (
        f"could not reach {protocol.display} (LocalProtocolError; details withheld: they may "
        "quote request headers)"
    )
    assert KEY not in everything_shown(error)
    assert error.__cause__ is None
    assert error.__context__ is None  # not even reachable programmatically


@pytest.mark.parametrize(
    ("make", "kind"),
    [
        (httpx2.ConnectError, ProviderConnectionError),
        (httpx2.ReadTimeout, ProviderTimeoutError),
    ],
)
async def test_a_socket_error_that_happens_to_quote_a_secret_is_not_chained(
    protocol: Protocol, make: type[Exception], kind: type[GatewayError]
) -> None:
    # Socket-level errors are chained for debugging, unless their text holds a secret: the key,
    # or an extra header's value.
    for secret in (KEY, SECRET_HEADER):
        options = {"provider_options": {"extra_headers": {"x-proxy-auth": SECRET_HEADER}}}
        error = await adapter_error(protocol, make(f"failed sending {secret}"), **options)
        assert type(error) is kind
        assert error.__cause__ is None
        shown = everything_shown(error)
        assert KEY not in shown and SECRET_HEADER not in shown


async def test_a_socket_error_without_secrets_stays_chained_for_debugging(
    protocol: Protocol,
) -> None:
    cause = httpx2.ConnectError("[Errno 111] Connection refused")
    error = await adapter_error(protocol, cause)
    assert error.__cause__ is cause
    assert "Connection refused" in "".join(traceback.format_exception(error))


async def test_through_the_gateway_a_retried_leaking_error_shows_no_key(protocol: Protocol) -> None:
    """The issue's reproduction: sent, a bad header fails as a retried connection error, and
    the printed traceback of what the caller gets must not show the key."""
    scripted = ScriptedApi(leaking_protocol_error)
    config = protocol.config(api_key=KEY, timeout_s=None)
    async with ScriptedGateway({"m": config}, scripted) as gw:
        with pytest.raises(GatewayError) as caught:
            await gw.request(user("hi"))
    assert len(scripted.requests) >= 2  # retried: a connection error
    assert KEY not in everything_shown(caught.value)


def test_model_config_is_unchanged_by_the_adapter() -> None:
    """The adapter reads the key; it never rewrites the config that holds it."""
    config = ModelConfig(provider="gpt-4o", model_name="m", api_key=KEY)
    assert config.api_key == KEY
