"""Configuration: per-model settings and the gateway's, from objects, dicts or TOML."""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import cattrs
import cattrs.v
from cattrs.errors import ClassValidationError

from ._exceptions import ConfigError
from ._models import ModelProvider, RequestPriority

__all__ = [
    "CooldownPolicy",
    "GatewayConfig",
    "LimitGroup",
    "ModelConfig",
    "RateLimitPolicy",
    "RetryPolicy",
    "load_config",
]


RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})


def _positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    ok = (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and (value >= 0 if allow_zero else value > 0)
    )
    if not ok or value != value or value == float("inf"):
        raise ConfigError(
            f"{name} is {value!r}; use a finite number {'>=' if allow_zero else '>'} 0"
        )


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """When and how the gateway retries a failed provider call.

    Retryable: HTTP 408, 409, 429, 500, 502, 503, 504, 529, timeouts and connection errors, and
    any error whose response says ``x-should-retry: true``. Not retryable: everything else
    (400, 401, 403, 404, 413, 422, ...) and ``x-should-retry: false``.

    Attributes:
        max_attempts: The most calls per model for one request (1 turns retries off).
        backoff_base_s: The first backoff's upper bound; it doubles on each retry.
        backoff_max_s: The cap of the exponential backoff. The wait is drawn uniformly from
            ``[0, min(backoff_max_s, backoff_base_s * 2**(retry - 1))]`` (full jitter), and is
            never shorter than the provider's ``retry-after``.
        max_retry_after_s: A ``retry-after`` longer than this fails the request at once (with
            a clear error) instead of sleeping that long.
        retry_statuses: The HTTP statuses that are retried.
    """

    max_attempts: int = 4
    backoff_base_s: float = 0.5
    backoff_max_s: float = 20.0
    max_retry_after_s: float = 60.0
    retry_statuses: frozenset[int] = RETRYABLE_STATUSES

    def __attrs_post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int):
            raise ConfigError(f"RetryPolicy.max_attempts is {self.max_attempts!r}; use an int >= 1")
        if self.max_attempts < 1:
            raise ConfigError(f"RetryPolicy.max_attempts is {self.max_attempts!r}; use an int >= 1")
        _positive("RetryPolicy.backoff_base_s", self.backoff_base_s, allow_zero=True)
        _positive("RetryPolicy.backoff_max_s", self.backoff_max_s, allow_zero=True)
        _positive("RetryPolicy.max_retry_after_s", self.max_retry_after_s, allow_zero=True)


@attrs.frozen(kw_only=True)
class CooldownPolicy:
    """When a model stops dispatching for a while (a circuit breaker).

    After ``failure_threshold`` retryable failures in a row that carry no ``retry-after``, or
    a rate-limit answer (429) with a ``retry-after`` (a pause of exactly that long), the model
    dispatches nothing until the cooldown ends. Queued requests wait
    (unless their deadline passes first, or they have a fallback model: then they move there).

    Attributes:
        failure_threshold: Consecutive retryable failures that start a cooldown.
        cooldown_s: How long a cooldown started by failures lasts.
    """

    failure_threshold: int = 5
    cooldown_s: float = 10.0

    def __attrs_post_init__(self) -> None:
        threshold = self.failure_threshold
        if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 1:
            raise ConfigError(f"CooldownPolicy.failure_threshold is {threshold!r}; use an int >= 1")
        _positive("CooldownPolicy.cooldown_s", self.cooldown_s, allow_zero=True)


@attrs.frozen(kw_only=True)
class RateLimitPolicy:
    """How a model's rate limits are applied (the limits are ``ModelConfig``'s).

    Attributes:
        high_reserve: The share of each per-minute budget that only HIGH requests may use
            (0 to 0.9). Default 0: every priority may use all of it, and priority order alone
            decides who gets it first.
        default_output_tokens: The output tokens a request is assumed to use when it has no
            ``max_tokens`` (providers count ``max_tokens`` toward the limit when given).
        tokenizer: ``"heuristic"`` (about four characters a token, plus a few per message: fast,
            no dependency) or ``"tiktoken"`` (exact for OpenAI models; ``pip install tiktoken``).
        window_s: The pacing window. The default, 60, enforces the per-minute limits over
            every 60-second span. A shorter window enforces the same rate at a finer grain
            (``limit * window_s / 60`` per window: smoother, for providers that enforce their
            limits per second).
    """

    high_reserve: float = 0.0
    default_output_tokens: int = 1024
    tokenizer: str = "heuristic"
    window_s: float = 60.0

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.window_s, int | float) or not 0 < self.window_s <= 60:
            raise ConfigError(
                f"RateLimitPolicy.window_s is {self.window_s!r}; use seconds in (0, 60]"
            )
        if not isinstance(self.high_reserve, int | float) or not 0 <= self.high_reserve <= 0.9:
            raise ConfigError(
                f"RateLimitPolicy.high_reserve is {self.high_reserve!r}; use a share from 0 to 0.9"
            )
        if (
            isinstance(self.default_output_tokens, bool)
            or not isinstance(self.default_output_tokens, int)
            or self.default_output_tokens < 0
        ):
            raise ConfigError(
                f"RateLimitPolicy.default_output_tokens is {self.default_output_tokens!r}; "
                "use an int >= 0"
            )
        if self.tokenizer not in ("heuristic", "tiktoken"):
            raise ConfigError(
                f"RateLimitPolicy.tokenizer is {self.tokenizer!r}; use 'heuristic' or 'tiktoken'"
            )


@attrs.frozen(kw_only=True)
class LimitGroup:
    """A budget several models share (one API key or organisation).

    Attributes:
        max_requests_per_minute: Requests per minute across the group's models.
        max_tokens_per_minute: Estimated tokens per minute across the group's models.
    """

    max_requests_per_minute: int | None = None
    max_tokens_per_minute: int | None = None
    window_s: float = 60.0

    def __attrs_post_init__(self) -> None:
        if not isinstance(self.window_s, int | float) or not 0 < self.window_s <= 60:
            raise ConfigError(f"LimitGroup.window_s is {self.window_s!r}; use seconds in (0, 60]")
        for name in ("max_requests_per_minute", "max_tokens_per_minute"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise ConfigError(f"LimitGroup.{name} is {value!r}; use an int >= 1, or None")
        check_window(
            "LimitGroup", self.window_s, self.max_requests_per_minute, self.max_tokens_per_minute
        )


def check_window(where: str, window_s: float, rpm: int | None, tpm: int | None) -> None:
    """A window must split the minute evenly, and each limit into at least one unit a window.

    Then a limit held in every window is held over every 60-second span too.
    """
    if window_s == 60:
        return
    windows = 60 / window_s
    if abs(windows - round(windows)) > 1e-9:
        raise ConfigError(
            f"{where}.window_s is {window_s!r}; use a divisor of 60 (1, 2, 5, 10, 30)"
        )
    for name, limit in (("max_requests_per_minute", rpm), ("max_tokens_per_minute", tpm)):
        if limit is not None and limit < round(windows):
            raise ConfigError(
                f"{where}.window_s={window_s:g} splits {name}={limit} into less than one per "
                f"window; use a window of at least {60 / limit:g} s, or 60"
            )


def _secret_repr(value: str | None) -> str:
    return "None" if value is None else "'***'"


def _to_provider(value: ModelProvider | str) -> ModelProvider:
    try:
        return ModelProvider(value)
    except ValueError:
        choices = ", ".join(p.value for p in ModelProvider)
        raise ConfigError(f"ModelConfig.provider is {value!r}; use one of {choices}") from None


def _check(ok: bool, field: str, value: object, fix: str) -> None:
    if not ok:
        raise ConfigError(f"ModelConfig.{field} is {value!r}; {fix}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return _is_int(value) or (isinstance(value, float) and not math.isnan(value))


@attrs.frozen(kw_only=True)
class ModelConfig:
    """How the gateway reaches one model, and how it queues and batches its requests.

    Attributes:
        provider: Which kind of provider serves the model.
        model_name: The provider's name for the model (e.g. ``"claude-haiku-4-5"``).
        endpoint: Base URL override (a proxy, an Azure-style gateway, a local server).
        api_key: The key; read from the provider's environment variable when ``None``.
            Never shown by ``repr`` or written to logs.
        max_requests_per_minute: Request budget per minute, or ``None`` for no limit.
        max_tokens_per_minute: Token budget per minute, or ``None`` for no limit.
        batch_size: The most requests in one batch; a batch leaves as soon as this many wait.
        batch_timeout_ms: The longest a NORMAL request waits for its batch to fill.
        high_max_wait_s: The longest a HIGH request waits for its batch to fill (0: it leaves
            as soon as there is capacity).
        low_max_wait_s: The longest a LOW request waits for its batch to fill.
        aging_s: Anti-starvation: a NORMAL or LOW request that has waited this long in its
            class is promoted one class (to the back of that class's line).
        max_concurrency: The most requests of this model in flight at once.
        queue_capacity: The most requests waiting in this model's queue; ``submit`` waits and
            ``submit_nowait`` raises :class:`QueueFullError` beyond it.
        timeout_s: Default deadline of a request, queue wait included; ``None`` for none.
        provider_options: Extra options for the provider adapter (see ``docs/providers.md``).
        retry: When and how failed calls are retried (see :class:`RetryPolicy`).
        cooldown: When the model pauses after failures (see :class:`CooldownPolicy`).
        fallbacks: Model ids to try, in order, when a request has used up its retries here
            or this model is cooling down past the request's deadline.
        rate_limit: How the per-minute limits are applied (see :class:`RateLimitPolicy`).
        limit_group: The name of a shared budget in ``GatewayConfig.limit_groups``.
    """

    provider: ModelProvider = attrs.field(converter=_to_provider)
    model_name: str
    endpoint: str | None = None
    api_key: str | None = attrs.field(default=None, repr=_secret_repr)
    max_requests_per_minute: int | None = None
    max_tokens_per_minute: int | None = None
    batch_size: int = 10
    batch_timeout_ms: float = 100.0
    high_max_wait_s: float = 0.0
    low_max_wait_s: float = 1.0
    aging_s: float = 10.0
    max_concurrency: int = 32
    queue_capacity: int = 10_000
    timeout_s: float | None = 600.0
    provider_options: Mapping[str, Any] = attrs.field(factory=dict)
    retry: RetryPolicy = attrs.field(factory=RetryPolicy)
    cooldown: CooldownPolicy = attrs.field(factory=CooldownPolicy)
    fallbacks: tuple[str, ...] = ()
    rate_limit: RateLimitPolicy = attrs.field(factory=RateLimitPolicy)
    limit_group: str | None = None

    def __attrs_post_init__(self) -> None:
        _check(
            isinstance(self.model_name, str) and bool(self.model_name),
            "model_name",
            self.model_name,
            "give the provider's model name",
        )
        for name in ("batch_size", "max_concurrency", "queue_capacity"):
            value = getattr(self, name)
            _check(_is_int(value) and value >= 1, name, value, "use an int >= 1")
        for name in ("max_requests_per_minute", "max_tokens_per_minute"):
            value = getattr(self, name)
            _check(
                value is None or (_is_int(value) and value >= 1),
                name,
                value,
                "use an int >= 1, or None for no limit",
            )
        for name in ("batch_timeout_ms", "high_max_wait_s", "low_max_wait_s"):
            value = getattr(self, name)
            _check(_is_number(value) and 0 <= value < math.inf, name, value, "use a number >= 0")
        _check(_is_number(self.aging_s) and self.aging_s > 0, "aging_s", self.aging_s, "use > 0")
        check_window(
            "ModelConfig.rate_limit",
            self.rate_limit.window_s,
            self.max_requests_per_minute,
            self.max_tokens_per_minute,
        )
        _check(
            self.timeout_s is None or (_is_number(self.timeout_s) and self.timeout_s > 0),
            "timeout_s",
            self.timeout_s,
            "use a positive number of seconds, or None",
        )

    def max_wait_s(self, priority: RequestPriority) -> float:
        """The longest a request of ``priority`` waits for its batch to fill, in seconds."""
        if priority is RequestPriority.HIGH:
            return self.high_max_wait_s
        if priority is RequestPriority.NORMAL:
            return self.batch_timeout_ms / 1000.0
        return self.low_max_wait_s


@attrs.frozen(kw_only=True)
class GatewayConfig:
    """The whole gateway's configuration.

    Attributes:
        models: Model id -> its configuration. Requests name a model by its id.
        log_dir: Where ``gateway/batches.jsonl`` and ``gateway/errors.jsonl`` go; ``None``
            turns logging off.
        limit_groups: Budgets shared by several models (one API key or organisation), by
            name; a model joins one with ``limit_group``.
    """

    models: Mapping[str, ModelConfig]
    log_dir: str | None = "04_logs"
    limit_groups: Mapping[str, LimitGroup] = attrs.field(factory=dict)

    def __attrs_post_init__(self) -> None:
        if not self.models:
            raise ConfigError("GatewayConfig.models is empty; configure at least one model")
        for model_id, model in self.models.items():
            if model.limit_group is not None and model.limit_group not in self.limit_groups:
                raise ConfigError(
                    f"models.{model_id}.limit_group is {model.limit_group!r}, which is not in "
                    f"limit_groups; define it there (known: {sorted(self.limit_groups)})"
                )
            for fallback in model.fallbacks:
                if fallback not in self.models or fallback == model_id:
                    raise ConfigError(
                        f"models.{model_id}.fallbacks names {fallback!r}, which is not another "
                        f"configured model; use some of {sorted(set(self.models) - {model_id})}"
                    )
            if not isinstance(model_id, str) or not model_id:
                raise ConfigError(f"GatewayConfig.models has an empty or non-str id {model_id!r}")
            if not isinstance(model, ModelConfig):
                raise ConfigError(
                    f"GatewayConfig.models[{model_id!r}] is a {type(model).__name__}; "
                    "use a ModelConfig (or build the whole config from a dict)"
                )


_converter = cattrs.Converter(forbid_extra_keys=True)


def _describe(exc: BaseException, type_: Any) -> str:
    if isinstance(exc, ConfigError):
        return str(exc)
    if isinstance(type_, type) and issubclass(type_, ModelProvider):
        return f"unknown provider; use one of {', '.join(p.value for p in ModelProvider)}"
    return cattrs.v.format_exception(exc, type_)


def load_config(
    source: GatewayConfig | Mapping[str, Any] | str | os.PathLike[str],
) -> GatewayConfig:
    """Build a :class:`GatewayConfig` from a dict, a TOML file path, or a config object.

    A dict is either the whole configuration (``{"models": {...}, "log_dir": ...}``) or, as in
    the first specification, a mapping of model id -> :class:`ModelConfig`.

    Raises:
        ConfigError: The configuration is invalid; the message names the field.
    """
    if isinstance(source, GatewayConfig):
        return source
    data: Any = source
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        try:
            with path.open("rb") as f:
                data = tomllib.load(f)
        except OSError as exc:
            raise ConfigError(
                f"cannot read the config file {str(path)!r}: {exc.strerror}"
            ) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"the config file {str(path)!r} is not valid TOML: {exc}") from None
    elif not isinstance(source, Mapping):
        raise ConfigError(
            f"cannot build a gateway configuration from a {type(source).__name__}; "
            "pass a dict, a TOML file path, or a GatewayConfig"
        )
    elif source and all(isinstance(v, ModelConfig) for v in source.values()):
        return GatewayConfig(models=dict(source))
    try:
        config: GatewayConfig = _converter.structure(data, GatewayConfig)
    except ClassValidationError as exc:
        problems = "; ".join(cattrs.transform_error(exc, format_exception=_describe))
        raise ConfigError(f"invalid configuration: {problems}") from None
    return config
