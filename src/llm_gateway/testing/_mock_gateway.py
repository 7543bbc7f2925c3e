"""MockLLMGateway: the real gateway, with the deterministic mock provider behind every model."""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator, Iterable, Mapping
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

from .._config import GatewayConfig, ModelConfig
from .._exceptions import ConfigError
from .._gateway import Gateway
from .._models import LLMRequest, LLMResponse, ModelProvider
from ..providers._base import Provider
from ..providers._mock import (
    CassetteMissError,
    MockError,
    MockFixture,
    MockFixtures,
    MockProvider,
    MockScript,
    OnMissing,
    as_fixtures,
)

__all__ = ["MockLLMGateway"]


class MockLLMGateway(Gateway):
    """A :class:`Gateway` whose every model is answered by the mock provider.

    Requests go through the real queues, batcher, cancellation and stats; only the provider is
    replaced, so agent tests exercise what production runs. Logging is off unless ``log_dir``
    is given.

    Without ``config`` or ``models`` it has one model, ``"mock"`` (or, replaying a cassette,
    the models the cassette was recorded with, under the same ids, providers and names). Pass
    the production configuration to keep its batching settings; providers and keys are ignored.

    Answers come, in order, from :meth:`answer_next`, then ``fixtures``, then ``cassette``, then
    the deterministic default (or a :class:`CassetteMissError`, see ``on_missing``); the same
    request gets the same answer on every run and on both backends.

    Args:
        config: Any configuration :class:`Gateway` takes; providers and keys are ignored.
        log_dir: Where to write logs; ``None`` (the default) writes none.
        models: Model id -> :class:`ModelConfig`, instead of ``config``.
        fixtures: Scripted answers: a :class:`MockFixtures`, its dict form, a JSON file path, or
            a list of :class:`MockFixture`.
        cassette: A cassette recorded with ``Gateway(..., record_to=...)`` (a path), to replay.
        on_missing: What a request nothing matches gets: ``"error"``, a
            :class:`CassetteMissError` naming it; ``"default"``, the deterministic default
            answer. ``None`` (the default): ``"error"`` with a cassette, else ``"default"``.
        latency_s: Simulated latency of every call (a fixture may set its own).
        keep_history: Keep every request that reached the provider (:attr:`received`) and
            every miss (:attr:`misses`); on by default. Turn it off for long runs (soak tests,
            benchmarks) that would otherwise hold every request until the gateway is dropped;
            reading ``received`` or ``misses`` then raises :class:`ConfigError`.

    Raises:
        ConfigError: The configuration, fixtures or cassette are invalid (naming the field).

    Attributes:
        script: The shared mock state: fixtures, latency, scripted failures, history.
    """

    def __init__(
        self,
        config: GatewayConfig | Mapping[str, Any] | str | os.PathLike[str] | None = None,
        log_dir: str | os.PathLike[str] | None = None,
        *,
        models: Mapping[str, ModelConfig] | None = None,
        fixtures: MockFixtures
        | Mapping[str, Any]
        | str
        | os.PathLike[str]
        | Iterable[MockFixture]
        | None = None,
        cassette: str | os.PathLike[str] | None = None,
        on_missing: OnMissing | None = None,
        latency_s: float = 0.0,
        keep_history: bool = True,
    ) -> None:
        if on_missing not in (None, "error", "default"):
            raise ConfigError(f"on_missing is {on_missing!r}; use 'error' or 'default'")
        if isinstance(latency_s, bool) or not isinstance(latency_s, int | float) or latency_s < 0:
            raise ConfigError(f"latency_s is {latency_s!r}; use a number of seconds >= 0")
        scripted = MockFixtures() if fixtures is None else as_fixtures(fixtures)
        source = os.fspath(fixtures) if isinstance(fixtures, str | os.PathLike) else None
        if cassette is not None:
            recorded = MockFixtures.load(cassette)
            scripted = scripted + recorded
            source = os.fspath(cassette)
            if config is None and models is None:
                models = {
                    model_id: ModelConfig(provider=provider, model_name=name)
                    for model_id, (provider, name) in recorded.recorded_models().items()
                } or None
        if config is None and models is None:
            models = {"mock": ModelConfig(provider=ModelProvider.MOCK, model_name="mock")}
        if not isinstance(keep_history, bool):
            raise ConfigError(f"keep_history is {keep_history!r}; use True or False")
        self.script = MockScript(
            fixtures=scripted,
            latency_s=float(latency_s),
            on_missing=on_missing or ("error" if cassette is not None else "default"),
            source=source,
            keep_history=keep_history,
        )
        super().__init__(
            config, log_dir, models=models, provider_factory=partial(_open_mock, self.script)
        )

    @property
    def received(self) -> list[LLMRequest]:
        """Every request that reached the provider, in order (cancelled-in-queue ones never do).

        Raises:
            ConfigError: The gateway was made with ``keep_history=False``.
        """
        return self.script.received

    def fail_next(
        self, count: int = 1, *, error: MockError | None = None, model: str | None = None
    ) -> None:
        """Make the next ``count`` provider calls (to ``model``, or any) fail with ``error``."""
        self.script.fail_next(count, error=error, model=model)

    def answer_next(
        self, *answers: MockFixture | LLMResponse | str, model: str | None = None
    ) -> None:
        """Answer the next provider calls (to ``model``, or any) with ``answers``, in order.

        They come before any fixture; see :meth:`MockScript.answer_next`.
        """
        self.script.answer_next(*answers, model=model)

    @property
    def misses(self) -> list[CassetteMissError]:
        """Every :class:`CassetteMissError` raised so far (even those the agent caught).

        Raises:
            ConfigError: The gateway was made with ``keep_history=False``.
        """
        return self.script.misses


@asynccontextmanager
async def _open_mock(
    script: MockScript, model_id: str, config: ModelConfig
) -> AsyncGenerator[Provider]:
    """The provider factory of a :class:`MockLLMGateway`: every model on the shared script."""
    yield MockProvider(model_id, config.model_name, script)
