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
from ._ratelimit import LimitGroup, RateLimitPolicy, check_window
from ._retry import CooldownPolicy, RetryPolicy

__all__ = ["GatewayConfig", "ModelConfig", "load_config"]


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
