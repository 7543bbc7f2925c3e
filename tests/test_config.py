"""Configuration: strict validation (constructors and files alike), keys, secrets in reprs."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from llm_gateway import (
    ConfigError,
    CooldownPolicy,
    Gateway,
    GatewayConfig,
    LimitGroup,
    LLMMessage,
    LLMRequest,
    ModelConfig,
    RateLimitPolicy,
    RetryPolicy,
    load_config,
)

KEY = "sk-ant-api03-Zq9xTHISISTHEKEYxx"


def untyped(cls: Callable[..., object]) -> Any:
    """``cls`` for a call that passes wrong types on purpose, as untyped callers and JSON do."""
    return cls


def mock(**fields: Any) -> ModelConfig:
    values: dict[str, Any] = {"provider": "mock", "model_name": "m", **fields}
    return ModelConfig(**values)


def chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and every exception chained to it (causes and contexts)."""
    seen: list[BaseException] = []
    stack: list[BaseException | None] = [exc]
    while stack:
        current = stack.pop()
        if current is None or any(current is s for s in seen):
            continue
        seen.append(current)
        stack += [current.__cause__, current.__context__]
        stack += list(getattr(current, "exceptions", ()))
    return seen


def assert_not_shown(exc: BaseException, *secrets: str) -> None:
    for e in chain(exc):
        for secret in secrets:
            assert secret not in str(e)
            assert secret not in repr(e)
            assert secret not in repr(e.args)


# --- Keys -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad_key",
    [
        KEY + "\n",  # read from a key file without .strip()
        KEY + "\r\n",
        " " + KEY,
        KEY[:10] + " " + KEY[10:],
        KEY + "\t",
        KEY + "é",  # non-ASCII: a raw UnicodeEncodeError holding the key, before
        KEY + "\x00",
        KEY + "\udc80",
    ],
)
def test_a_key_that_cannot_be_sent_fails_at_construction_without_echoing_it(
    bad_key: str,
) -> None:
    with pytest.raises(ConfigError, match=r"^ModelConfig\.api_key has characters") as caught:
        mock(api_key=bad_key)
    assert_not_shown(caught.value, KEY, KEY[:12], KEY[-12:])


@pytest.mark.parametrize("bad_key", [123456789012, b"sk-bytes-key", ["sk-list"], ""])
def test_a_key_of_the_wrong_type_names_the_field_not_the_value(bad_key: object) -> None:
    with pytest.raises(ConfigError, match=r"^ModelConfig\.api_key ") as caught:
        mock(api_key=bad_key)
    assert_not_shown(caught.value, "123456789012", "sk-bytes-key", "sk-list")


@pytest.mark.parametrize("bad_key", [KEY + "\n", 123456789012])
def test_a_bad_key_in_a_config_file_names_its_path_not_the_key(
    tmp_path: Path, bad_key: object
) -> None:
    data = {"models": {"fast": {"provider": "gpt-4o", "model_name": "gpt-4o", "api_key": bad_key}}}
    with pytest.raises(ConfigError, match=r"models\.fast\.api_key ") as caught:
        load_config(data)
    assert_not_shown(caught.value, KEY[:12], "123456789012")
    path = tmp_path / "gateway.toml"
    value = '"' + KEY + '\\n"' if isinstance(bad_key, str) else str(bad_key)
    path.write_text(
        f'[models.fast]\nprovider = "gpt-4o"\nmodel_name = "gpt-4o"\napi_key = {value}\n'
    )
    with pytest.raises(ConfigError, match=r"models\.fast\.api_key ") as caught:
        load_config(path)
    assert_not_shown(caught.value, KEY[:12], "123456789012")


# --- Secrets in reprs -------------------------------------------------------------------------


def test_repr_shows_no_secret() -> None:
    secrets = {
        "api_key": KEY,
        "authorization": "Bearer sk-auth-header-value",
        "x-api-key": "sk-x-api-key-value",
        "api-key": "azure-api-key-value",
        "proxy-authorization": "Basic cHJveHk6cGFzcw==",
        "cookie": "sessionid=cookie-value",
        "x-session-token": "session-token-value",
        "x-custom-secret": "custom-secret-value",
        "x-my-password": "password-value",
        "x-auth-stuff": "auth-value",
        "x-sessionid": "sessionid-value",
        "x-authkey2": "authkey-value",
        "x-plain": "Bearer plain-looking-bearer",
        "user-info": "pw-in-endpoint",
        "query": "query-key-value",
        "option": "option-token-value",
    }
    config = mock(
        api_key=KEY,
        endpoint="https://alice:pw-in-endpoint@proxy.example.com:8443/v1?api_key=query-key-value&region=eu",
        provider_options={
            "extra_headers": {
                "Authorization": secrets["authorization"],
                "X-API-Key": secrets["x-api-key"],
                "api-key": secrets["api-key"],
                "Proxy-Authorization": secrets["proxy-authorization"],
                "Cookie": secrets["cookie"],
                "X-Session-Token": secrets["x-session-token"],
                "X-Custom-Secret": secrets["x-custom-secret"],
                "X-My-Password": secrets["x-my-password"],
                "X-Auth-Stuff": secrets["x-auth-stuff"],
                "X-SessionId": secrets["x-sessionid"],
                "X-Authkey2": secrets["x-authkey2"],
                "X-Plain": secrets["x-plain"],
                "OpenAI-Organization": "org-visible",
            },
            "access_token": secrets["option"],
            "default_max_tokens": 512,
            "organization": "org-visible-too",
        },
    )
    gateway = GatewayConfig(models={"fast": config}, log_dir=None)
    for text in (repr(config), str(config), repr(gateway), str(gateway)):
        for name, secret in secrets.items():
            assert secret not in text, name
        assert "pw-in-endpoint" not in text
        # What is not secret stays visible, so the repr still helps.
        assert "https://***@proxy.example.com:8443/v1?api_key=***&region=eu" in text
        assert "'OpenAI-Organization': 'org-visible'" in text
        assert "'default_max_tokens': 512" in text
        assert "'organization': 'org-visible-too'" in text
        assert "'Authorization': '***'" in text
    # The values themselves are untouched: only the repr hides them.
    assert config.api_key == KEY
    assert config.provider_options["extra_headers"]["Authorization"] == secrets["authorization"]
    assert "pw-in-endpoint" in str(config.endpoint)


@pytest.mark.parametrize(
    ("endpoint", "shown"),
    [
        ("https://user:pw@host/v1", "https://***@host/v1"),
        ("http://token@127.0.0.1:8000/v1", "http://***@127.0.0.1:8000/v1"),
        ("http://localhost:8000/v1", "http://localhost:8000/v1"),
        ("https://h/v1?key=k1&x=1&token=t1", "https://h/v1?key=***&x=1&token=***"),
    ],
)
def test_endpoint_repr_hides_user_info_and_secret_query_values(endpoint: str, shown: str) -> None:
    assert f"endpoint={shown!r}" in repr(mock(endpoint=endpoint))


def test_a_bad_endpoint_is_not_echoed() -> None:
    with pytest.raises(ConfigError, match=r"^ModelConfig\.endpoint must be") as caught:
        mock(endpoint="ftp://alice:hunter2@host/")
    assert_not_shown(caught.value, "hunter2")


# --- Validation gaps --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"endpoint": 123}, "endpoint"),
        ({"endpoint": ""}, "endpoint"),
        ({"endpoint": "localhost:8000/v1"}, "endpoint"),
        ({"endpoint": "http://localhost:8000/v1\n"}, "endpoint"),
        ({"endpoint": "http:///v1"}, "endpoint"),
        ({"endpoint": "http://localhost:99999/v1"}, "endpoint"),
        ({"endpoint": "http://localhost:0/v1"}, "endpoint"),
        ({"api_key": 123}, "api_key"),
        ({"model_name": 5}, "model_name"),
        ({"model_name": "m\udc80"}, "model_name"),
        ({"batch_size": 2.5}, "batch_size"),
        ({"batch_size": "10"}, "batch_size"),
        ({"max_concurrency": True}, "max_concurrency"),
        ({"queue_capacity": 1.0}, "queue_capacity"),
        ({"max_tokens_per_minute": True}, "max_tokens_per_minute"),
        ({"batch_timeout_ms": math.nan}, "batch_timeout_ms"),
        ({"high_max_wait_s": True}, "high_max_wait_s"),
        ({"aging_s": math.inf}, "aging_s"),
        ({"timeout_s": math.nan}, "timeout_s"),
        ({"timeout_s": math.inf}, "timeout_s"),
        ({"provider": 3}, "provider"),
        ({"provider_options": [("a", 1)]}, "provider_options"),
        ({"provider_options": {1: "x"}}, "provider_options"),
        ({"retry": {"max_attempts": 2}}, "retry"),
        ({"cooldown": None}, "cooldown"),
        ({"rate_limit": "fast"}, "rate_limit"),
        ({"fallbacks": "other"}, "fallbacks"),
        ({"fallbacks": ["other", 3]}, r"fallbacks\[1\]"),
        ({"fallbacks": [""]}, r"fallbacks\[0\]"),
        ({"limit_group": 3}, "limit_group"),
        ({"limit_group": ""}, "limit_group"),
        ({"batch_fill": "fast"}, "batch_fill"),
        ({"batch_fill": None}, "batch_fill"),
    ],
)
def test_bad_model_config_fields_name_the_field(fields: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigError, match=rf"^ModelConfig\.{named} must be "):
        mock(**fields)


@pytest.mark.parametrize(
    ("build", "named"),
    [
        (lambda: RetryPolicy(max_attempts=True), "RetryPolicy.max_attempts"),
        (lambda: RetryPolicy(backoff_base_s=math.nan), "RetryPolicy.backoff_base_s"),
        (lambda: RetryPolicy(backoff_max_s=-1), "RetryPolicy.backoff_max_s"),
        (lambda: RetryPolicy(max_retry_after_s=math.inf), "RetryPolicy.max_retry_after_s"),
        (lambda: untyped(RetryPolicy)(retry_statuses="429"), "RetryPolicy.retry_statuses"),
        (lambda: RetryPolicy(retry_statuses=[429, True]), "RetryPolicy.retry_statuses"),
        (lambda: RetryPolicy(retry_statuses=[4290]), "RetryPolicy.retry_statuses"),
        (
            lambda: untyped(CooldownPolicy)(failure_threshold=1.0),
            "CooldownPolicy.failure_threshold",
        ),
        (lambda: CooldownPolicy(cooldown_s=math.inf), "CooldownPolicy.cooldown_s"),
        (lambda: untyped(RateLimitPolicy)(tokenizer=3), "RateLimitPolicy.tokenizer"),
        (lambda: RateLimitPolicy(high_reserve=math.nan), "RateLimitPolicy.high_reserve"),
        (lambda: RateLimitPolicy(window_s=True), "RateLimitPolicy.window_s"),
        (
            lambda: RateLimitPolicy(default_output_tokens=-1),
            "RateLimitPolicy.default_output_tokens",
        ),
        (lambda: LimitGroup(max_requests_per_minute=True), "LimitGroup.max_requests_per_minute"),
        (lambda: LimitGroup(window_s=math.nan), "LimitGroup.window_s"),
        (
            lambda: untyped(GatewayConfig)(models={"a": {"provider": "mock"}}),
            r"GatewayConfig.models\['a'\]",
        ),
        (lambda: untyped(GatewayConfig)(models=[mock()]), "GatewayConfig.models"),
        (lambda: GatewayConfig(models={"": mock()}), "GatewayConfig.models"),
        (lambda: untyped(GatewayConfig)(models={"a": mock()}, log_dir=3), "GatewayConfig.log_dir"),
        (
            lambda: untyped(GatewayConfig)(models={"a": mock()}, limit_groups={"g": 1}),
            "GatewayConfig.limit",
        ),
    ],
)
def test_bad_policy_and_gateway_fields_name_the_field(build: Any, named: str) -> None:
    with pytest.raises(ConfigError, match="^" + named):
        build()


def test_policies_keep_accepting_what_they_accepted() -> None:
    assert RetryPolicy(retry_statuses={429, 503}).retry_statuses == frozenset({429, 503})
    assert RetryPolicy(retry_statuses=[500]).retry_statuses == frozenset({500})
    assert RetryPolicy(backoff_base_s=0, backoff_max_s=1).backoff_max_s == 1
    assert mock(batch_timeout_ms=50, timeout_s=None, aging_s=1).batch_timeout_ms == 50
    assert mock(fallbacks=["b"]).fallbacks == ("b",)
    assert mock(endpoint="http://127.0.0.1:9/v1").endpoint == "http://127.0.0.1:9/v1"
    assert GatewayConfig(models={"a": mock()}, log_dir=Path("logs")).log_dir == "logs"


# --- batch_fill -------------------------------------------------------------------------------


def test_batch_fill_defaults_to_eager_and_accepts_wait(tmp_path: Path) -> None:
    assert mock().batch_fill == "eager"
    assert mock(batch_fill="wait").batch_fill == "wait"
    config = load_config(
        {"models": {"a": {"provider": "mock", "model_name": "m", "batch_fill": "wait"}}}
    )
    assert config.models["a"].batch_fill == "wait"
    path = tmp_path / "gateway.toml"
    path.write_text('[models.a]\nprovider = "mock"\nmodel_name = "m"\nbatch_fill = "eager"\n')
    assert load_config(path).models["a"].batch_fill == "eager"
    with pytest.raises(ConfigError, match=r"models\.a\.batch_fill must be one of 'eager', 'wait'"):
        load_config(
            {"models": {"a": {"provider": "mock", "model_name": "m", "batch_fill": "Wait"}}}
        )


# --- Loading is exactly as strict as the constructors ------------------------------------------


@pytest.mark.parametrize(
    ("toml_value", "expected"),
    [
        ("2.5", "an int, got float"),
        ("true", "an int, got bool"),
        ('"10"', "an int, got str"),
        ("0", "an int >= 1, got 0"),
        ("[10]", "an int, got list"),
    ],
)
def test_a_file_value_of_the_wrong_type_is_not_coerced(
    tmp_path: Path, toml_value: str, expected: str
) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(
        f'[models.fast]\nprovider = "mock"\nmodel_name = "m"\nbatch_size = {toml_value}\n'
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert f"models.fast.batch_size must be {expected}" in str(caught.value)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"batch_size": 2.5}, "models.fast.batch_size must be an int, got float"),
        ({"max_concurrency": True}, "models.fast.max_concurrency must be an int, got bool"),
        ({"queue_capacity": "10"}, "models.fast.queue_capacity must be an int, got str"),
        ({"batch_timeout_ms": "100"}, "models.fast.batch_timeout_ms must be a number, got str"),
        ({"batch_timeout_ms": True}, "models.fast.batch_timeout_ms must be a number, got bool"),
        ({"timeout_s": math.nan}, "models.fast.timeout_s must be a finite number > 0 or None"),
        ({"model_name": 5}, "models.fast.model_name must be a str, got int"),
        ({"endpoint": 123}, "models.fast.endpoint must be a str, got int"),
        ({"fallbacks": "other"}, "models.fast.fallbacks must be a list, got str"),
        ({"retry": {"retry_statuses": "429"}}, "models.fast.retry.retry_statuses must be a list"),
        ({"retry": {"retry_statuses": ["429"]}}, "models.fast.retry.retry_statuses"),
        ({"retry": {"max_attempts": 1.0}}, "models.fast.retry.max_attempts must be an int"),
        ({"retry": 3}, "models.fast.retry must be a table (dict) of RetryPolicy fields"),
        ({"rate_limit": {"window_s": 7}}, "models.fast.rate_limit.window_s"),
        ({"batchsize": 3}, "models.fast has unknown keys 'batchsize' (did you mean 'batch_size'?)"),
        ({"provider": "gpt-5"}, "models.fast.provider must be one of 'anthropic', 'openai'"),
        ({"provider": "openia"}, "got 'openia' (did you mean 'openai'?)"),
    ],
)
def test_a_dict_value_of_the_wrong_type_names_its_path(
    fields: dict[str, Any], message: str
) -> None:
    data = {"models": {"fast": {"provider": "mock", "model_name": "m", **fields}}}
    with pytest.raises(ConfigError) as caught:
        load_config(data)
    assert str(caught.value).startswith("invalid configuration: ")
    assert message in str(caught.value)


def test_a_file_keeps_what_is_valid(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(
        'log_dir = "logs"\n'
        "[models.fast]\n"
        'provider = "mock"\nmodel_name = "m"\nbatch_timeout_ms = 50\ntimeout_s = 2.5\n'
        'fallbacks = ["slow"]\n'
        "[models.fast.retry]\nretry_statuses = [429, 503]\n"
        '[models.fast.provider_options.extra_headers]\nx-api-key = "k"\n'
        "[models.slow]\n"
        'provider = "mock"\nmodel_name = "m"\nlimit_group = "org"\n'
        "[limit_groups.org]\nmax_requests_per_minute = 60\n"
    )
    config = load_config(path)
    fast = config.models["fast"]
    assert fast.batch_timeout_ms == 50
    assert fast.timeout_s == 2.5
    assert fast.fallbacks == ("slow",)
    assert fast.retry.retry_statuses == frozenset({429, 503})
    assert fast.provider_options == {"extra_headers": {"x-api-key": "k"}}
    assert config.limit_groups["org"].max_requests_per_minute == 60


def test_every_problem_is_named_with_its_path() -> None:
    data = {
        "models": {
            "fast": {"provider": "mock", "model_name": "m", "batch_size": 2.5},
            "claude-haiku": {"provider": "claude-haiku", "model_name": "h", "aging_s": "1"},
            "a b": {"provider": "mock"},
        },
        "limit_groups": {"g": {"max_requests_per_minute": True}},
    }
    with pytest.raises(ConfigError) as caught:
        load_config(data)
    message = str(caught.value)
    assert "models.fast.batch_size must be an int, got float" in message
    assert "models.claude-haiku.aging_s must be a number, got str" in message
    assert re.search(r"models\['a b'\]\.model_name is required", message)
    assert "limit_groups.g.max_requests_per_minute must be an int, got bool" in message


def test_a_config_that_is_not_a_table_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"models\.fast must be a table"):
        load_config({"models": {"fast": "mock"}})
    with pytest.raises(ConfigError, match="cannot build a gateway configuration from a list"):
        load_config([1, 2])  # type: ignore[arg-type]


# -- issue 12: plain-dict models, missing provider, fallbacks, "did you mean" ---------------


def test_models_may_be_plain_dicts_mixed_with_model_configs() -> None:
    loaded = load_config(
        {
            "fast": {"provider": "mock", "model_name": "m", "batch_size": 3},
            "slow": ModelConfig(provider="mock", model_name="s", fallbacks=["fast"]),
        }
    )
    assert loaded.models["fast"] == ModelConfig(provider="mock", model_name="m", batch_size=3)
    assert loaded.models["slow"].fallbacks == ("fast",)


def test_plain_dict_models_are_as_strict_as_a_file() -> None:
    with pytest.raises(ConfigError, match=r"models\.fast\.batch_size must be an int, got float"):
        load_config({"fast": {"provider": "mock", "model_name": "m", "batch_size": 2.5}})


@pytest.mark.anyio
async def test_a_gateway_takes_plain_dict_models() -> None:
    # Gateway's annotation says ModelConfig; plain dicts are what this test is about.
    models: Any = {"fast": {"provider": "mock", "model_name": "m"}}
    async with Gateway(models=models, log_dir=None) as gw:
        answer = await gw.request(LLMRequest(model="fast", messages=[LLMMessage("user", "hi")]))
    assert answer.model == "fast"


@pytest.mark.parametrize(
    "data",
    [
        {"fast": {"model_name": "m"}},
        {"models": {"fast": {"model_name": "m"}}},
    ],
)
def test_a_model_without_a_provider_says_the_provider_is_missing(data: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(data)
    message = str(caught.value)
    assert "models.fast.provider is missing" in message
    assert "unknown" not in message


def test_a_fallback_to_a_missing_model_names_the_configured_ones() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(
            {
                "fast": {"provider": "mock", "model_name": "m", "fallbacks": ["slwo"]},
                "slow": {"provider": "mock", "model_name": "m"},
            }
        )
    assert str(caught.value) == (
        "invalid configuration: models.fast.fallbacks names 'slwo' (did you mean 'slow'?), "
        "which is not a configured model; the other configured models are ['slow']"
    )


def test_a_fallback_with_no_other_model_says_so_not_an_empty_list() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config({"fast": {"provider": "mock", "model_name": "m", "fallbacks": ["slow"]}})
    message = str(caught.value)
    assert "[]" not in message
    assert "'fast' is the only configured model" in message


def test_a_model_cannot_fall_back_to_itself() -> None:
    with pytest.raises(ConfigError, match=r"models\.fast\.fallbacks names the model itself"):
        load_config({"fast": {"provider": "mock", "model_name": "m", "fallbacks": ["fast"]}})


@pytest.mark.parametrize(
    ("data", "hint"),
    [
        ({"modles": {"fast": {"provider": "mock", "model_name": "m"}}}, "did you mean 'models'?"),
        ({"fast": {"provider": "antropic", "model_name": "m"}}, "did you mean 'anthropic'?"),
        (
            {
                "models": {"fast": {"provider": "mock", "model_name": "m", "limit_group": "oai"}},
                "limit_groups": {"openai": {}},
            },
            "did you mean 'openai'?",
        ),
    ],
)
def test_unknown_names_suggest_the_nearest(data: dict[str, Any], hint: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(hint)):
        load_config(data)


def test_the_constructor_says_a_none_provider_is_missing() -> None:
    with pytest.raises(ConfigError, match=r"ModelConfig\.provider .*it is missing \(None\)"):
        ModelConfig(provider=None, model_name="m")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("models", "message"),
    [
        ({"fast": {}}, "models.fast.provider is missing"),
        ({"fast": {"provder": "mock", "model_name": "m"}}, "(did you mean 'provider'?)"),
        # A model may be called like a configuration key's near-miss.
        ({"model": {"provider": "mock", "model_name": "m", "batch_size": 0}}, "models.model."),
    ],
)
def test_a_models_mapping_is_read_as_models_even_when_a_model_is_wrong(
    models: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(models)
    assert message in str(caught.value)
    assert "unknown keys 'fast'" not in str(caught.value)
