"""Configuration: per-model settings and the gateway's, from objects, dicts or TOML.

Every type validates on construction through the shared checks of :mod:`._validators` and
raises ``ConfigError`` naming the field and the fix. :func:`load_config` is exactly as strict:
it converts nothing (``batch_size = 2.5``, ``"10"`` or ``true`` are errors, not 2, 10 or 1; an
int is accepted where a float is expected), and its messages name the field by its path in the
file (``models.fast.batch_size``).

``repr`` never shows a secret: not the key, not a secret-looking header or option in
``provider_options``, not the user-info or a secret-looking query parameter of ``endpoint``.
"""

from __future__ import annotations

import os
import re
import tomllib
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs
import cattrs
from cattrs.errors import ClassValidationError, ForbiddenExtraKeysError, IterableValidationError

from ._batch_policy import BatchApiPolicy
from ._cost import ModelPricing
from ._exceptions import ConfigError
from ._models import ModelProvider, RequestPriority
from ._validators import CONFIG as V
from ._validators import Check, Item, api_key, described, did_you_mean, to_tuple

__all__ = [
    "BatchApiPolicy",
    "CooldownPolicy",
    "GatewayConfig",
    "LimitGroup",
    "ModelConfig",
    "RateLimitPolicy",
    "RetryPolicy",
    "load_config",
]


RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})

_SECONDS = V.finite_number(min=0)
_WINDOW = V.finite_number(
    min=0, max=60, allow_zero=False, fix="use a divisor of 60: 1, 2, 5, 10, 30 or 60"
)
_LIMIT = V.optional(V.positive_int, fix="None means no limit")


def _statuses(value: Iterable[int]) -> frozenset[int]:
    # A list (TOML has no sets) or any set works; a str or a number is left for the validator.
    if isinstance(value, list | tuple | set | frozenset):
        return frozenset(value)
    return value  # type: ignore[return-value]


def _status_problem(value: object) -> str | Item | None:
    if not isinstance(value, frozenset):
        return f"got {described(value)}"
    for status in sorted(value, key=repr):
        if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
            return f"got {described(status)} in it"
    return None


_STATUSES = Check(
    V.error, "a set of HTTP statuses (ints from 100 to 599)", _status_problem, "e.g. [429, 503]"
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
        retry_statuses: The HTTP statuses that are retried (any set or list of them).
    """

    max_attempts: int = attrs.field(default=4, validator=V.positive_int)
    backoff_base_s: float = attrs.field(default=0.5, validator=_SECONDS)
    backoff_max_s: float = attrs.field(default=20.0, validator=_SECONDS)
    max_retry_after_s: float = attrs.field(default=60.0, validator=_SECONDS)
    retry_statuses: frozenset[int] = attrs.field(
        default=RETRYABLE_STATUSES, converter=_statuses, validator=_STATUSES
    )


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

    failure_threshold: int = attrs.field(default=5, validator=V.positive_int)
    cooldown_s: float = attrs.field(default=10.0, validator=_SECONDS)


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

    high_reserve: float = attrs.field(
        default=0.0, validator=V.finite_number(min=0, max=0.9, fix="give a share, e.g. 0.2")
    )
    default_output_tokens: int = attrs.field(default=1024, validator=V.non_negative_int)
    tokenizer: str = attrs.field(default="heuristic", validator=V.one_of("heuristic", "tiktoken"))
    window_s: float = attrs.field(default=60.0, validator=_WINDOW)


@attrs.frozen(kw_only=True)
class LimitGroup:
    """A budget several models share (one API key or organisation).

    Attributes:
        max_requests_per_minute: Requests per minute across the group's models.
        max_tokens_per_minute: Estimated tokens per minute across the group's models.
        window_s: The pacing window (see :attr:`RateLimitPolicy.window_s`).
    """

    max_requests_per_minute: int | None = attrs.field(default=None, validator=_LIMIT)
    max_tokens_per_minute: int | None = attrs.field(default=None, validator=_LIMIT)
    window_s: float = attrs.field(default=60.0, validator=_WINDOW)

    def __attrs_post_init__(self) -> None:
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


# --- Redaction: what repr shows of values that may hold secrets -------------------------------

_SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "x-api-key", "api-key", "cookie", "set-cookie"}
)
_SECRET_PARTS = ("key", "token", "secret", "auth", "password", "passwd", "session", "cookie")
_SECRET_WORDS = re.compile(
    r"(^|[^a-z0-9])(api_?key|key|token|secret|password|passwd|auth|authorization|credentials?"
    r"|cookie|session|signature|sig)($|[^a-z0-9])"
)
_SECRET_VALUE = re.compile(r"^\s*(bearer|basic)\s|^\s*sk[-_]", re.IGNORECASE)
_HEADER_MAPS = frozenset({"extra_headers", "headers", "default_headers"})
REDACTED = "***"


def secret_header(name: str) -> bool:
    """Whether an HTTP header of this name may carry a credential."""
    lower = name.lower()
    return lower in _SECRET_HEADERS or any(part in lower for part in _SECRET_PARTS)


def _secret_option(name: str) -> bool:
    # Options are named by words (``api_key``, ``accessToken``): match whole words, so that
    # ``default_max_tokens`` stays visible.
    lower = name.lower()
    return bool(_SECRET_WORDS.search(lower)) or lower.endswith(
        ("apikey", "token", "secret", "password")
    )


def _redacted(value: Any, *, headers: bool = False) -> Any:
    """A copy of ``value`` with secret-looking entries replaced by ``"***"``."""
    if isinstance(value, Mapping):
        result = {}
        for key, item in value.items():
            name = key if isinstance(key, str) else ""
            secret = secret_header(name) if headers else _secret_option(name)
            result[key] = (
                REDACTED if secret else _redacted(item, headers=name.lower() in _HEADER_MAPS)
            )
        return result
    if isinstance(value, list | tuple):
        return type(value)(_redacted(item) for item in value)
    if isinstance(value, str) and _SECRET_VALUE.search(value):
        return REDACTED
    return value


def redact_url(url: str) -> str:
    """``url`` without credentials: user-info and secret-looking query values become ``***``.

    ``https://user:pw@host/v1?api_key=k`` -> ``https://***@host/v1?api_key=***``.
    """
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return REDACTED
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}@{netloc.rpartition('@')[2]}"
    query = "&".join(
        f"{name}={REDACTED}" if sep and _secret_option(urllib.parse.unquote(name)) else pair
        for pair in parts.query.split("&")
        for name, sep, _ in [pair.partition("=")]
    )
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _secret_repr(value: str | None) -> str:
    return "None" if value is None else f"'{REDACTED}'"


def _endpoint_repr(value: str | None) -> str:
    return repr(value if not isinstance(value, str) else redact_url(value))


def _options_repr(value: Mapping[str, Any]) -> str:
    return repr(_redacted(value))


# --- ModelConfig ----------------------------------------------------------------------------


def _to_provider(value: ModelProvider | str) -> ModelProvider:
    # A known value becomes the enum; anything else is left for the validator to reject.
    if isinstance(value, str) and value in ModelProvider._value2member_map_:
        return ModelProvider(value)
    return value  # type: ignore[return-value]


_KNOWN_PROVIDER = V.one_of(*(p.value for p in ModelProvider))


def _provider_problem(value: object) -> str | Item | None:
    if value is None:
        return "but it is missing (None)"
    return _KNOWN_PROVIDER.problem(value)


_PROVIDER = Check(
    V.error,
    _KNOWN_PROVIDER.expected,
    _provider_problem,
    "e.g. 'anthropic', 'openai', 'openai-compatible' (see docs/providers.md)",
)


def _url_problem(value: object, schemes: tuple[str, ...], kind: str) -> str | Item | None:
    """What makes ``value`` not a URL of one of ``schemes`` with a host (None: nothing).

    The message never quotes the URL: it may hold a password in its user-info.
    """
    if value is None:
        return None
    problem = V.text(non_empty=True).problem(value)
    if problem is not None:
        return problem
    assert isinstance(value, str)
    if any(ch.isspace() or not ch.isprintable() for ch in value):
        return "got a URL with whitespace or control characters (the URL is not shown)"
    try:
        parts = urllib.parse.urlsplit(value)
        no_port = parts.port == 0  # reading the port raises ValueError for a bad one
    except ValueError:
        return "got a str that is not a URL, or with a bad port (the URL is not shown)"
    if parts.scheme not in schemes or not parts.hostname or no_port:
        return f"got a str that is not {kind} URL with a host (the URL is not shown)"
    return None


def _endpoint_problem(value: object) -> str | Item | None:
    return _url_problem(value, ("http", "https"), "an http(s)")


_ENDPOINT = Check(
    V.error,
    "an http:// or https:// URL, or None",
    _endpoint_problem,
    "e.g. 'http://localhost:8000/v1'",
)


def _shared_state_problem(value: object) -> str | Item | None:
    problem = _url_problem(value, ("redis", "rediss"), "a redis://")
    if problem is not None or not isinstance(value, str):
        return problem
    db = urllib.parse.urlsplit(value).path.strip("/")
    if db and not (db.isascii() and db.isdigit()):
        return f"got a database {db!r} that is not a number"
    return None


_SHARED_STATE = Check(
    V.error,
    "a redis:// or rediss:// URL, or None",
    _shared_state_problem,
    "e.g. 'redis://localhost:6379/0' (a password goes in the user-info: redis://:pw@host:6379/0)",
)


def _prefix_problem(value: object) -> str | Item | None:
    problem = V.text(non_empty=True).problem(value)
    if problem is not None:
        return problem
    assert isinstance(value, str)
    if len(value) > 100 or not all(ch.isascii() and (ch.isalnum() or ch in "_-.:") for ch in value):
        return f"got {value!r}"
    return None


_SHARED_PREFIX = Check(
    V.error,
    "at most 100 letters, digits and _-.:",
    _prefix_problem,
    "e.g. 'llm_gateway' or 'prod:team-a'",
)


def _fallbacks(value: Iterable[str]) -> tuple[str, ...]:
    result: tuple[str, ...] = to_tuple(value)
    return result


BATCH_FILLS = ("eager", "wait")


@attrs.frozen(kw_only=True)
class ModelConfig:
    """How the gateway reaches one model, and how it queues and batches its requests.

    Attributes:
        provider: Which kind of provider serves the model.
        model_name: The provider's name for the model (e.g. ``"claude-haiku-4-5"``).
        endpoint: Base URL override (a proxy, an Azure-style gateway, a local server): an
            ``http://`` or ``https://`` URL. ``repr`` hides its user-info.
        api_key: The key; read from the provider's environment variable when ``None``.
            Printable ASCII without whitespace (strip a key read from a file). Never shown by
            ``repr``, in error messages, or written to logs.
        max_requests_per_minute: Request budget per minute, or ``None`` for no limit.
        max_tokens_per_minute: Token budget per minute, or ``None`` for no limit.
        batch_size: The most requests in one batch.
        batch_fill: When a batch leaves (see :data:`BATCH_FILLS`).

            - ``"eager"`` (default): work-conserving. A batch leaves at once while the model
              has free capacity and rate budget; requests gather into batches (up to
              ``batch_size``, in priority order) only while the model is saturated or
              throttled (under a backlog, freed slots wait for a whole batch for at most
              ``batch_timeout_ms``, unless a HIGH request heads the queue). An idle model
              adds no wait.
            - ``"wait"``: the fixed window. A batch leaves when ``batch_size`` requests wait
              or the oldest reaches its priority's maximum wait (``high_max_wait_s``,
              ``batch_timeout_ms``, ``low_max_wait_s``): the original behaviour.
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
            ``repr`` hides secret-looking headers in ``extra_headers`` (``authorization``,
            ``x-api-key``, any name with key, token, secret, auth, password or session) and
            secret-looking options.
        retry: When and how failed calls are retried (see :class:`RetryPolicy`).
        cooldown: When the model pauses after failures (see :class:`CooldownPolicy`).
        fallbacks: Model ids to try, in order, when a request has used up its retries here
            or this model is cooling down past the request's deadline.
        rate_limit: How the per-minute limits are applied (see :class:`RateLimitPolicy`).
        limit_group: The name of a shared budget in ``GatewayConfig.limit_groups``.
        pricing: The model's prices (see :class:`ModelPricing`), for the cost ledger
            (``LLMResponse.cost_usd``, ``ModelStats.cost_usd``); ``None``: no cost is counted.
        first_token_timeout_s: Streams only: how long an attempt may wait for its first content
            delta before it counts as failed (retried, or sent to a fallback, like a timeout);
            ``None`` for no limit besides ``timeout_s``. ``LLMRequest.first_token_timeout_s``
            overrides it per request.
        batch_api: The model's batch lane (see :class:`BatchApiPolicy` and
            ``docs/batch-api.md``): LOW requests through the provider's batch API, at half
            price. Off by default.
    """

    provider: ModelProvider = attrs.field(converter=_to_provider, validator=_PROVIDER)
    model_name: str = attrs.field(
        validator=V.text(non_empty=True, fix="give the provider's model name")
    )
    endpoint: str | None = attrs.field(default=None, validator=_ENDPOINT, repr=_endpoint_repr)
    api_key: str | None = attrs.field(default=None, validator=api_key, repr=_secret_repr)
    max_requests_per_minute: int | None = attrs.field(default=None, validator=_LIMIT)
    max_tokens_per_minute: int | None = attrs.field(default=None, validator=_LIMIT)
    batch_size: int = attrs.field(default=10, validator=V.positive_int)
    batch_fill: str = attrs.field(default="eager", validator=V.one_of(*BATCH_FILLS))
    batch_timeout_ms: float = attrs.field(default=100.0, validator=_SECONDS)
    high_max_wait_s: float = attrs.field(default=0.0, validator=_SECONDS)
    low_max_wait_s: float = attrs.field(default=1.0, validator=_SECONDS)
    aging_s: float = attrs.field(default=10.0, validator=V.finite_number(min=0, allow_zero=False))
    max_concurrency: int = attrs.field(default=32, validator=V.positive_int)
    queue_capacity: int = attrs.field(default=10_000, validator=V.positive_int)
    timeout_s: float | None = attrs.field(
        default=600.0,
        validator=V.optional(
            V.finite_number(min=0, allow_zero=False), fix="give seconds, or None for no deadline"
        ),
    )
    provider_options: Mapping[str, Any] = attrs.field(
        factory=dict, validator=V.str_mapping(), repr=_options_repr
    )
    retry: RetryPolicy = attrs.field(factory=RetryPolicy, validator=V.instance_of(RetryPolicy))
    cooldown: CooldownPolicy = attrs.field(
        factory=CooldownPolicy, validator=V.instance_of(CooldownPolicy)
    )
    fallbacks: tuple[str, ...] = attrs.field(
        default=(), converter=_fallbacks, validator=V.str_tuple(fix="give a list of model ids")
    )
    rate_limit: RateLimitPolicy = attrs.field(
        factory=RateLimitPolicy, validator=V.instance_of(RateLimitPolicy)
    )
    limit_group: str | None = attrs.field(
        default=None, validator=V.optional(V.text(non_empty=True))
    )
    pricing: ModelPricing | None = attrs.field(
        default=None, validator=V.optional(V.instance_of(ModelPricing))
    )
    first_token_timeout_s: float | None = attrs.field(
        default=None,
        validator=V.optional(
            V.finite_number(min=0, allow_zero=False), fix="give seconds, or None for no limit"
        ),
    )
    batch_api: BatchApiPolicy = attrs.field(
        factory=BatchApiPolicy, validator=V.instance_of(BatchApiPolicy)
    )

    def __attrs_post_init__(self) -> None:
        check_window(
            "ModelConfig.rate_limit",
            self.rate_limit.window_s,
            self.max_requests_per_minute,
            self.max_tokens_per_minute,
        )

    def max_wait_s(self, priority: RequestPriority) -> float:
        """The longest a request of ``priority`` waits for its batch to fill, in seconds."""
        if priority is RequestPriority.HIGH:
            return self.high_max_wait_s
        if priority is RequestPriority.NORMAL:
            return self.batch_timeout_ms / 1000.0
        return self.low_max_wait_s


def _models_problem(value: object) -> str | Item | None:
    if not isinstance(value, Mapping):
        return f"got {described(value)}"
    for model_id, model in value.items():
        if not isinstance(model_id, str) or not model_id:
            return f"got a model id {described(model_id) if model_id != '' else repr('')}"
        if not isinstance(model, ModelConfig):
            return Item(
                f"[{model_id!r}]",
                "a ModelConfig",
                f"got {described(model)}; build it with ModelConfig(...), or pass the whole "
                "configuration as a dict to load_config",
            )
    return None


TELEMETRY_MODES = ("auto", "on", "off")


JOURNAL_FILE = "batch_journal.sqlite3"
"""The batch journal's file name in ``GatewayConfig.journal_dir``."""


def journal_in_use(config: GatewayConfig) -> bool:
    """Whether a gateway on ``config`` opens the batch journal.

    It does when a model uses the batch lane, or when the state directory already holds a
    journal (its results stay collectable). One stat, on the loop: a worker thread would let a
    virtual clock jump while the gateway opens.
    """
    directory = config.journal_dir
    if directory is None:
        return False
    return any(m.batch_api.enabled for m in config.models.values()) or os.path.exists(
        os.path.join(directory, JOURNAL_FILE)
    )


def _log_dir(value: str | os.PathLike[str] | None) -> str | None:
    return os.fspath(value) if isinstance(value, os.PathLike) else value


@attrs.frozen(kw_only=True)
class GatewayConfig:
    """The whole gateway's configuration.

    Attributes:
        models: Model id -> its configuration. Requests name a model by its id.
        log_dir: Where ``gateway/batches.jsonl`` and ``gateway/errors.jsonl`` go (a path);
            ``None`` turns logging off.
        limit_groups: Budgets shared by several models (one API key or organisation), by
            name; a model joins one with ``limit_group``.
        telemetry: OpenTelemetry spans and metrics (see ``docs/telemetry.md``): ``"auto"``
            (default: on when ``opentelemetry-api`` is installed, e.g. with the ``otel``
            extra), ``"on"`` (the same, and the gateway refuses to start without it) or
            ``"off"``. The gateway uses the application's tracer and meter providers and never
            configures exporters: with none configured, telemetry costs next to nothing.
        telemetry_content: Opt-in: also put the prompt and completion text on each span
            (``gen_ai.input.messages``, ``gen_ai.output.messages``). Off by default: spans
            and metrics then hold metadata only, never message text.
        state_dir: Where the batch journal (``batch_journal.sqlite3``) lives, a path; ``None``
            (default): ``04_state`` beside ``log_dir`` (in the same parent directory). A model
            with ``batch_api`` enabled needs one of the two. See ``docs/batch-api.md``.
        shared_state: A Redis (or Valkey) URL, ``redis://host:port/db`` (``rediss://`` for
            TLS; a password goes in the user-info and is never shown). When set, every
            model's and limit group's books, 429 pauses and provider header hints are shared
            by every gateway using the same server and ``shared_prefix`` (see
            ``docs/ratelimits.md``; needs the redis extra: ``pip install -e '.[redis]'``).
            ``None`` (the default) keeps them in this process.
        shared_prefix: The key prefix of the shared books: gateways share budgets exactly
            when they use the same server and prefix (and the same model ids and groups).
        expected_processes: How many gateways share the limits. While Redis is unreachable,
            each paces with its local books at the limits divided by this; ``None`` keeps
            the whole limits locally.
    """

    models: Mapping[str, ModelConfig] = attrs.field(
        validator=Check(V.error, "a dict of model id -> ModelConfig", _models_problem)
    )
    log_dir: str | None = attrs.field(
        default="04_logs", converter=_log_dir, validator=V.optional(V.text(non_empty=True))
    )
    limit_groups: Mapping[str, LimitGroup] = attrs.field(
        factory=dict, validator=V.str_mapping(values=V.instance_of(LimitGroup))
    )
    telemetry: str = attrs.field(default="auto", validator=V.one_of(*TELEMETRY_MODES))
    telemetry_content: bool = attrs.field(
        default=False, validator=V.check("a bool", lambda v: isinstance(v, bool))
    )
    state_dir: str | None = attrs.field(
        default=None, converter=_log_dir, validator=V.optional(V.text(non_empty=True))
    )
    shared_state: str | None = attrs.field(
        default=None, validator=_SHARED_STATE, repr=_endpoint_repr
    )
    shared_prefix: str = attrs.field(default="llm_gateway", validator=_SHARED_PREFIX)
    expected_processes: int | None = attrs.field(
        default=None, validator=V.optional(V.positive_int, fix="None keeps the whole limits")
    )

    @property
    def journal_dir(self) -> str | None:
        """The batch journal's directory: ``state_dir``, else ``04_state`` beside ``log_dir``."""
        if self.state_dir is not None:
            return self.state_dir
        if self.log_dir is None:
            return None
        return os.path.join(os.path.dirname(os.path.normpath(self.log_dir)), "04_state")

    def __attrs_post_init__(self) -> None:
        if not self.models:
            raise V.fail(self, "models", "is empty; configure at least one model")
        if self.journal_dir is None:
            for model_id, model in self.models.items():
                if model.batch_api.enabled:
                    raise ConfigError(
                        f"models.{model_id}.batch_api is enabled, but the gateway has no "
                        "state_dir for its batch journal (and no log_dir to put it beside); "
                        "set state_dir"
                    )
        for model_id, model in self.models.items():
            group = model.limit_group
            if group is not None and group not in self.limit_groups:
                known = sorted(self.limit_groups)
                raise ConfigError(
                    f"models.{model_id}.limit_group is {group!r}{did_you_mean(group, known)}, "
                    "which is not in limit_groups; "
                    + (f"define it there (known: {known})" if known else "define it there")
                )
            for fallback in model.fallbacks:
                if fallback == model_id:
                    raise ConfigError(
                        f"models.{model_id}.fallbacks names the model itself; a fallback must "
                        "be another configured model"
                    )
                if fallback not in self.models:
                    others = sorted(set(self.models) - {model_id})
                    raise ConfigError(
                        f"models.{model_id}.fallbacks names {fallback!r}"
                        f"{did_you_mean(fallback, others)}, which is not a configured model; "
                        + (
                            f"the other configured models are {others}"
                            if others
                            else f"{model_id!r} is the only configured model: configure the "
                            "fallback model under models, or remove the fallback"
                        )
                    )


# --- Loading: dicts and TOML through cattrs, exactly as strict as the constructors -----------


def _strict(expected: str, valid: Callable[[Any], bool]) -> Callable[[Any, type[Any]], Any]:
    def structure(value: Any, _: type[Any]) -> Any:
        # Only the type is named, never the value: it may be a key.
        if not valid(value):
            raise ConfigError(f"must be {expected}, got {type(value).__name__}")
        return value

    return structure


def _not_bool_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_converter = cattrs.Converter(forbid_extra_keys=True)
_converter.register_structure_hook(int, _strict("an int", _not_bool_int))
_converter.register_structure_hook(
    float,
    _strict("a number", lambda v: isinstance(v, int | float) and not isinstance(v, bool)),
)
_converter.register_structure_hook(str, _strict("a str", lambda v: isinstance(v, str)))
_converter.register_structure_hook(bool, _strict("a bool", lambda v: isinstance(v, bool)))
# Lists become tuples and sets here; the constructors' converters and validators check them
# (a str is not split into characters).
_converter.register_structure_hook_func(
    lambda t: t == tuple[str, ...], _strict("a list", lambda v: isinstance(v, list | tuple))
)
_converter.register_structure_hook_func(
    lambda t: t == frozenset[int],
    _strict("a list", lambda v: isinstance(v, list | tuple | set | frozenset)),
)
# The constructor's converter and validator decide, with the constructor's message.
_converter.register_structure_hook(ModelProvider, lambda value, _: value)

_structure_model_fields = _converter.gen_structure_attrs_fromdict(ModelConfig)
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def _join(path: str, key: object) -> str:
    if isinstance(key, str) and _KEY.fullmatch(key):
        return f"{path}.{key}" if path else key
    return f"{path}[{key!r}]"


def _field_problem(exc: BaseException, path: str, cls: Any) -> str:
    """One problem's message, naming the field by its path (``models.fast.batch_size``)."""
    where = path or "the configuration"
    if isinstance(exc, ConfigError):
        message = str(exc)
        # The constructors' messages start "ModelConfig.batch_size ...": name the path instead.
        prefix = f"{getattr(cls, '__name__', '')}."
        if isinstance(cls, type) and message.startswith(prefix):
            return f"{path}.{message[len(prefix) :]}" if path else message[len(prefix) :]
        if message.startswith("must be"):
            return f"{where} {message}"
        return message
    if isinstance(exc, ForbiddenExtraKeysError):
        known = [a.name for a in attrs.fields(exc.cl)] if attrs.has(exc.cl) else []
        hints = [f"{name!r}{did_you_mean(name, known)}" for name in sorted(exc.extra_fields)]
        return f"{where} has unknown keys {', '.join(hints)}; known keys: {', '.join(known)}"
    if isinstance(exc, KeyError):
        if path.endswith(".provider"):
            return (
                f"{where} is missing; every model needs a provider, e.g. provider = 'anthropic', "
                "'openai', 'openai-compatible' or 'mock'"
            )
        return f"{where} is required"
    if isinstance(cls, type) and attrs.has(cls):
        return f"{where} must be a table (dict) of {cls.__name__} fields"
    return f"{where} must be {getattr(cls, '__name__', None) or 'valid'}"


def _problems(exc: BaseException, path: str, cls: Any) -> list[str]:
    """Every problem under ``exc`` (cattrs groups them by field and by item), by path."""
    if isinstance(exc, IterableValidationError):
        items, rest = exc.group_exceptions()
        found = [p for e, n in items for p in _problems(e, _join(path, n.index), n.type)]
        return found + [_field_problem(e, path, cls) for e in rest]
    if isinstance(exc, ClassValidationError):
        fields, rest = exc.group_exceptions()
        found = [p for e, a in fields for p in _problems(e, _join(path, a.name), a.type)]
        return found + [_field_problem(e, path, exc.cl) for e in rest]
    return [_field_problem(exc, path, cls)]


_GATEWAY_KEYS = frozenset(a.name for a in attrs.fields(GatewayConfig))
_MODEL_KEYS = frozenset(a.name for a in attrs.fields(ModelConfig))


def _is_models(source: Mapping[Any, Any]) -> bool:
    """Whether a dict is a mapping of model id -> model rather than the whole configuration.

    It is when no key is one of :class:`GatewayConfig`'s and every value is a ModelConfig or a
    dict, except that a dict with no ModelConfig field under a near-miss of a GatewayConfig
    key (``modles = {...}``) makes it the whole configuration, so the typo gets its "did you
    mean" hint.
    """
    if not source or any(key in _GATEWAY_KEYS for key in source):
        return False
    for key, value in source.items():
        if isinstance(value, ModelConfig):
            continue
        if not isinstance(value, Mapping):
            return False
        if value and _MODEL_KEYS.isdisjoint(value) and did_you_mean(key, _GATEWAY_KEYS):
            return False
    return True


def _structure_model(value: Any, cls: type[Any]) -> Any:
    # A ModelConfig among dicts (Gateway(models={"a": ModelConfig(...), "b": {...}})) is
    # already built and validated.
    return value if isinstance(value, ModelConfig) else _structure_model_fields(value, cls)


_converter.register_structure_hook(ModelConfig, _structure_model)


def load_config(
    source: GatewayConfig | Mapping[str, Any] | str | os.PathLike[str],
) -> GatewayConfig:
    """Build a :class:`GatewayConfig` from a dict, a TOML file path, or a config object.

    A dict is either the whole configuration (``{"models": {...}, "log_dir": ...}``) or a
    mapping of model id -> model, each a :class:`ModelConfig` or a dict of its fields
    (``{"fast": {"provider": "anthropic", "model_name": "claude-haiku-4-5"}}``), as
    ``Gateway(models=...)`` passes it. A dict or TOML file is exactly as strict as the
    constructors: no value is converted to another type.

    Raises:
        ConfigError: The configuration is invalid; the message names each wrong field by its
            path (``models.fast.batch_size``).
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
    elif _is_models(source):
        if all(isinstance(v, ModelConfig) for v in source.values()):
            return GatewayConfig(models=dict(source))
        data = {"models": dict(source)}
    try:
        config: GatewayConfig = _converter.structure(data, GatewayConfig)
    except (ClassValidationError, IterableValidationError, ConfigError) as exc:
        problems = "; ".join(_problems(exc, "", GatewayConfig))
        raise ConfigError(f"invalid configuration: {problems}") from None
    return config
