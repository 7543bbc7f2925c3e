"""MockLLMGateway: the real gateway, with the deterministic mock provider behind every model."""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

from .._config import GatewayConfig, ModelConfig
from .._gateway import Gateway
from .._models import LLMRequest, ModelProvider
from ..providers._base import Provider
from ..providers._mock import MockError, MockFixtures, MockProvider, MockScript

__all__ = ["MockLLMGateway"]


class MockLLMGateway(Gateway):
    """A :class:`Gateway` whose every model is answered by the mock provider.

    Requests go through the real queues, batcher, cancellation and stats; only the provider is
    replaced, so agent tests exercise what production runs. Without a configuration it has one
    model, ``"mock"``. Logging is off unless ``log_dir`` is given.

    Args:
        config: Any configuration :class:`Gateway` takes; providers and keys are ignored.
        log_dir: Where to write logs; ``None`` (the default) writes none.
        models: Model id -> :class:`ModelConfig`, instead of ``config``.
        fixtures: Scripted answers: a :class:`MockFixtures`, its dict form, or a JSON file path.
        latency_s: Simulated latency of every call (a fixture may set its own).

    Attributes:
        script: The shared mock state: fixtures, latency, scripted failures, received requests.
    """

    def __init__(
        self,
        config: GatewayConfig | Mapping[str, Any] | str | os.PathLike[str] | None = None,
        log_dir: str | os.PathLike[str] | None = None,
        *,
        models: Mapping[str, ModelConfig] | None = None,
        fixtures: MockFixtures | Mapping[str, Any] | str | os.PathLike[str] | None = None,
        latency_s: float = 0.0,
    ) -> None:
        if config is None and models is None:
            models = {"mock": ModelConfig(provider=ModelProvider.MOCK, model_name="mock")}
        super().__init__(config, log_dir, models=models)
        if fixtures is None:
            fixtures = MockFixtures()
        elif isinstance(fixtures, str | os.PathLike):
            fixtures = MockFixtures.load(Path(fixtures))
        elif not isinstance(fixtures, MockFixtures):
            fixtures = MockFixtures.from_dict(fixtures)
        self.script = MockScript(fixtures=fixtures, latency_s=latency_s)

    @property
    def received(self) -> list[LLMRequest]:
        """Every request that reached the provider, in order (cancelled-in-queue ones never do)."""
        return self.script.received

    def fail_next(
        self, count: int = 1, *, error: MockError | None = None, model: str | None = None
    ) -> None:
        """Make the next ``count`` provider calls (to ``model``, or any) fail with ``error``."""
        self.script.fail_next(count, error=error, model=model)

    def _open_provider(
        self, model_id: str, config: ModelConfig
    ) -> AbstractAsyncContextManager[Provider]:
        return _opened(MockProvider(model_id, config.model_name, self.script))


@asynccontextmanager
async def _opened(provider: Provider) -> AsyncGenerator[Provider]:
    yield provider
