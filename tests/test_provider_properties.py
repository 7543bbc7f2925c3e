"""Properties of the provider boundary, through the real adapters over ``httpx2.MockTransport``.

Whatever a provider answers (any status, any header bytes, any body: JSON of any shape, garbage,
invalid UTF-8, absurd nesting), an adapter returns a well-typed ``LLMResponse`` or raises a
``GatewayError``; nothing else ever comes out. Both adapters, both backends.
"""

from __future__ import annotations

import email.utils
import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx2
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from llm_gateway import GatewayError, LLMResponse, ToolCall, Usage
from llm_gateway.providers import open_provider
from llm_gateway.providers._http import kept_headers, parse_retry_after

from ._provider_support import ANTHROPIC, OPENAI, PROTOCOLS, Protocol, ScriptedApi, user
from .conftest import run_on_virtual_time

# -- strategies ----------------------------------------------------------------------------

texts = st.text(max_size=12) | st.sampled_from(["", "hi", "stop"])
# Text with lone surrogates: json.dumps escapes them ("\ud800"), which decodes back to a str
# that cannot be encoded as UTF-8.
nasty_texts = st.text(st.characters(categories=["Cs"]) | st.characters(), min_size=1, max_size=4)
numbers = (
    st.integers()
    | st.integers(-3, 10)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([2**53 - 1, 2**53, 10**400])
)
scalars = st.none() | st.booleans() | numbers | texts | nasty_texts
garbage = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(texts | nasty_texts, children, max_size=4)
    ),
    max_leaves=12,
)


def one_in(
    n: int, rare: st.SearchStrategy[Any], usual: st.SearchStrategy[Any]
) -> st.SearchStrategy[Any]:
    """``rare`` one time in ``n``, else ``usual``."""
    return st.integers(1, n).flatmap(lambda i: rare if i == 1 else usual)


def maybe(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly ``valid``, one time in 30 garbage: bodies hold a few near misses, or none."""
    return one_in(30, garbage, valid)


ABSENT = object()


def objects(**fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    """JSON objects with these fields, each left out one time in 20."""
    return st.fixed_dictionaries(
        {name: one_in(20, st.just(ABSENT), s) for name, s in fields.items()}
    ).map(lambda d: {k: v for k, v in d.items() if v is not ABSENT})


counts = maybe(st.integers(0, 10**6) | st.none())
arguments = st.dictionaries(texts, garbage, max_size=3)

anthropic_blocks = st.lists(
    maybe(
        objects(type=st.just("text"), text=maybe(texts))
        | objects(
            type=st.just("tool_use"),
            id=maybe(texts),
            name=maybe(texts),
            input=maybe(arguments),
        )
        | objects(type=maybe(st.sampled_from(["thinking", "server_tool_use", "image"])))
    ),
    max_size=4,
)
anthropic_bodies = objects(
    id=texts,
    type=st.just("message"),
    content=maybe(anthropic_blocks),
    stop_reason=maybe(st.sampled_from(["end_turn", "tool_use", "max_tokens", "refusal"])),
    usage=maybe(
        objects(
            input_tokens=counts,
            output_tokens=counts,
            cache_read_input_tokens=counts,
            cache_creation_input_tokens=counts,
        )
    ),
)

openai_parts = st.lists(
    maybe(
        objects(type=st.just("text"), text=maybe(texts))
        | objects(type=st.just("refusal"), refusal=maybe(texts))
        | objects(type=maybe(st.just("image_url")))
    ),
    max_size=4,
)
openai_tool_calls = st.lists(
    maybe(
        objects(
            id=maybe(texts),
            type=st.just("function"),
            function=maybe(
                objects(
                    name=maybe(texts),
                    arguments=maybe(arguments.map(json.dumps) | st.just("") | texts | arguments),
                )
            ),
        )
    ),
    max_size=3,
)
openai_bodies = objects(
    id=texts,
    choices=maybe(
        st.lists(
            maybe(
                objects(
                    message=maybe(
                        objects(
                            role=st.just("assistant"),
                            content=maybe(texts | st.none() | openai_parts),
                            refusal=maybe(st.none() | texts),
                            tool_calls=maybe(st.none() | openai_tool_calls),
                        )
                    ),
                    finish_reason=maybe(st.sampled_from(["stop", "tool_calls", "length"])),
                )
            ),
            max_size=2,
        )
    ),
    usage=maybe(
        objects(
            prompt_tokens=counts,
            completion_tokens=counts,
            prompt_tokens_details=maybe(objects(cached_tokens=counts)),
        )
    ),
)

BODIES = {"anthropic": anthropic_bodies, "openai": openai_bodies}


def encoded(values: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    return values.map(lambda v: json.dumps(v).encode())


def deeply_nested(depth: int) -> bytes:
    return ("[" * depth + "]" * depth).encode()


def body_bytes(protocol: Protocol) -> st.SearchStrategy[bytes]:
    shaped = BODIES[protocol.name]
    return one_in(
        4,
        st.one_of(
            encoded(garbage),
            st.binary(max_size=64),  # not JSON, or not UTF-8
            st.integers(0, 5000).map(deeply_nested),
            st.sampled_from([b"NaN", b'{"usage": Infinity}', b"\xef\xbb\xbf{}", b""]),
        ),
        encoded(shaped),
    )


HEADER_NAMES = [
    "retry-after",
    "retry-after-ms",
    "x-should-retry",
    "request-id",
    "x-request-id",
    "anthropic-ratelimit-requests-remaining",
    "anthropic-ratelimit-tokens-reset",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-tokens",
    "content-type",
]
NASTY_VALUES = ["inf", "-inf", "nan", "NaN", "-1", "1e309", "-0", "9" * 400, "1000000h", ""]
# What can arrive in a header: any byte but CR, LF and NUL (httpx decodes them as it can).
header_bytes = st.binary(max_size=16).map(
    lambda b: b.replace(b"\r", b"").replace(b"\n", b"").replace(b"\0", b"")
)
header_values = (
    st.sampled_from(NASTY_VALUES).map(str.encode)
    | header_bytes
    | texts.map(lambda t: t.encode("utf-8", "replace")).map(
        lambda b: b.replace(b"\r", b"").replace(b"\n", b"").replace(b"\0", b"")
    )
)
header_names = st.sampled_from(HEADER_NAMES).flatmap(
    lambda name: st.sampled_from([name, name.upper(), name.title()])  # any case on the wire
)
headers = st.lists(st.tuples(header_names.map(str.encode), header_values), max_size=5)
statuses = one_in(
    3,
    st.sampled_from([201, 204, 400, 401, 404, 429, 500, 529]) | st.integers(100, 599),
    st.just(200),
)


# -- the property --------------------------------------------------------------------------


def check_response(response: LLMResponse, request_id: str) -> None:
    """What a well-typed response is."""
    assert type(response) is LLMResponse
    assert response.request_id == request_id
    assert type(response.content) is str
    response.content.encode("utf-8")  # no lone surrogate
    assert type(response.usage) is Usage
    for field in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens"):
        value = getattr(response.usage, field)
        assert type(value) is int and value >= 0, field
    assert response.finish_reason is None or type(response.finish_reason) is str
    assert type(response.tool_calls) is tuple
    for call in response.tool_calls:
        assert type(call) is ToolCall
        assert type(call.id) is str and type(call.name) is str
        assert type(call.arguments) is dict
        json.dumps(call.arguments, allow_nan=False).encode("utf-8")  # can be sent back
    assert all(type(k) is str and type(v) is str for k, v in response.rate_limit_headers.items())


async def answer_once(
    protocol: Protocol, status: int, body: bytes, raw_headers: list[tuple[bytes, bytes]]
) -> None:
    def reply(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(status, content=body, headers=raw_headers)

    scripted = ScriptedApi(reply)
    request = user("hi")
    async with open_provider("m", protocol.config(), http_client=scripted.client()) as provider:
        try:
            response = await provider.complete(request)
        except GatewayError as error:
            str(error), repr(error)  # printable
            event(f"{type(error).__name__} on HTTP {'2xx' if 200 <= status < 300 else 'error'}")
            return
    check_response(response, request.request_id)
    event("a response")


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
@pytest.mark.parametrize("protocol", PROTOCOLS, ids=str)
@settings(deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_answer_is_a_well_typed_response_or_a_gateway_error(
    backend: str, protocol: Protocol, data: st.DataObject
) -> None:
    status = data.draw(statuses, label="status")
    body = data.draw(body_bytes(protocol), label="body")
    raw_headers = data.draw(headers, label="headers")
    run_on_virtual_time(backend, lambda: answer_once(protocol, status, body, raw_headers))


@pytest.mark.parametrize("backend", ["trio", "asyncio"])
@pytest.mark.parametrize("protocol", PROTOCOLS, ids=str)
@settings(deadline=None, max_examples=60, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_well_shaped_answers_with_valid_values_are_responses(
    backend: str, protocol: Protocol, data: st.DataObject
) -> None:
    """The strategies are not all garbage: valid shapes do come back as responses."""
    text = data.draw(st.text(max_size=20), label="text")
    calls = data.draw(
        st.lists(
            st.builds(
                ToolCall,
                st.text(min_size=1, max_size=5),
                st.text(min_size=1, max_size=5),
                st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5)),
            ),
            max_size=3,
        ),
        label="tool_calls",
    )
    body = json.dumps(protocol.answer(text, calls, protocol.finish_reasons[0][0], None)).encode()

    async def check() -> None:
        scripted = ScriptedApi(lambda r: httpx2.Response(200, content=body))
        request = user("hi")
        async with open_provider("m", protocol.config(), http_client=scripted.client()) as p:
            response = await p.complete(request)
        check_response(response, request.request_id)
        assert (response.content, response.tool_calls) == (text, tuple(calls))

    run_on_virtual_time(backend, check)


# -- header helpers ------------------------------------------------------------------------


http_dates = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
).map(lambda d: email.utils.format_datetime(d, usegmt=True))
date_like = st.from_regex(
    r"\A(Mon|Wed), \d{1,2} (Jan|Oct|Foo) \d{1,6} \d{1,2}:\d{1,2}:\d{1,2} (GMT|-0000|\+9999|X)\Z"
)
retry_values = st.one_of(
    st.sampled_from(NASTY_VALUES),
    st.floats().map(repr),
    st.integers().map(str),
    http_dates,
    date_like,
    st.text(max_size=30),
    header_bytes.map(lambda b: b.decode("latin-1")),
)


@settings(max_examples=500)
@given(
    values=st.dictionaries(st.sampled_from(["retry-after", "retry-after-ms"]), retry_values),
    now=st.none() | st.floats(),
)
def test_parse_retry_after_never_raises_and_gives_a_finite_delay_or_none(
    values: dict[str, str], now: float | None
) -> None:
    seconds = parse_retry_after(values, now=now)
    assert seconds is None or (type(seconds) is float and math.isfinite(seconds) and seconds >= 0)


@given(when=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)))
def test_parse_retry_after_reads_any_http_date_against_now(when: datetime) -> None:
    now = datetime(2050, 1, 1, tzinfo=UTC).timestamp()
    value = email.utils.format_datetime(when.replace(tzinfo=UTC), usegmt=True)
    seconds = parse_retry_after({"retry-after": value}, now=now)
    expected = max(
        0.0, (when.replace(tzinfo=UTC) - datetime(2050, 1, 1, tzinfo=UTC)) / timedelta(seconds=1)
    )
    assert seconds == pytest.approx(expected, abs=1.0)


@given(raw=headers)
def test_kept_headers_never_raises_and_keeps_only_known_names(
    raw: list[tuple[bytes, bytes]],
) -> None:
    parsed = httpx2.Headers(raw)
    kept = kept_headers(parsed)
    for name, value in kept.items():
        assert type(name) is str and type(value) is str
    # What httpx2 reads of them (names lower-cased, a repeated one comma-joined), filtered.
    assert kept == {
        name: value
        for name, value in parsed.items()
        if name in {"retry-after", "retry-after-ms", "x-should-retry"}
        or name.startswith(("anthropic-ratelimit-", "x-ratelimit-"))
    }


def test_the_strategies_reach_both_adapters_shapes() -> None:
    assert {p.name for p in PROTOCOLS} == set(BODIES) == {ANTHROPIC.name, OPENAI.name}
