"""llm_gateway: a structured-concurrency gateway through which AI agents reach LLMs."""

from ._batch_policy import BatchApiPolicy as BatchApiPolicy
from ._config import CooldownPolicy as CooldownPolicy
from ._config import GatewayConfig as GatewayConfig
from ._config import LimitGroup as LimitGroup
from ._config import ModelConfig as ModelConfig
from ._config import RateLimitPolicy as RateLimitPolicy
from ._config import RetryPolicy as RetryPolicy
from ._config import load_config as load_config
from ._cost import ModelPricing as ModelPricing
from ._exceptions import AuthenticationError as AuthenticationError
from ._exceptions import BatchError as BatchError
from ._exceptions import BatchExpiredError as BatchExpiredError
from ._exceptions import BatchPendingError as BatchPendingError
from ._exceptions import ConfigError as ConfigError
from ._exceptions import GatewayClosedError as GatewayClosedError
from ._exceptions import GatewayError as GatewayError
from ._exceptions import ProviderConnectionError as ProviderConnectionError
from ._exceptions import ProviderError as ProviderError
from ._exceptions import ProviderResponseError as ProviderResponseError
from ._exceptions import ProviderStatusError as ProviderStatusError
from ._exceptions import ProviderTimeoutError as ProviderTimeoutError
from ._exceptions import QueueFullError as QueueFullError
from ._exceptions import RateLimitError as RateLimitError
from ._exceptions import RequestCancelledError as RequestCancelledError
from ._exceptions import RequestTimeoutError as RequestTimeoutError
from ._exceptions import RequestValidationError as RequestValidationError
from ._exceptions import RetriesExhaustedError as RetriesExhaustedError
from ._exceptions import StreamInterruptedError as StreamInterruptedError
from ._exceptions import UnknownModelError as UnknownModelError
from ._exceptions import UnknownRequestError as UnknownRequestError
from ._future import ResponseFuture as ResponseFuture
from ._gateway import Gateway as Gateway
from ._gateway import LLMGateway as LLMGateway
from ._models import LLMMessage as LLMMessage
from ._models import LLMRequest as LLMRequest
from ._models import LLMResponse as LLMResponse
from ._models import LLMTool as LLMTool
from ._models import ModelProvider as ModelProvider
from ._models import RequestPriority as RequestPriority
from ._models import ToolCall as ToolCall
from ._models import Usage as Usage
from ._public import publish as _publish
from ._stats import GatewayStats as GatewayStats
from ._stats import LatencySummary as LatencySummary
from ._stats import LimitGroupStats as LimitGroupStats
from ._stats import ModelStats as ModelStats
from ._stats import SharedStateStats as SharedStateStats
from ._stream import LLMStream as LLMStream
from ._stream import StreamChunk as StreamChunk
from ._stream import ToolCallDelta as ToolCallDelta

__version__ = "0.1.0"

__all__ = [
    "AuthenticationError",
    "BatchApiPolicy",
    "BatchError",
    "BatchExpiredError",
    "BatchPendingError",
    "ConfigError",
    "CooldownPolicy",
    "Gateway",
    "GatewayClosedError",
    "GatewayConfig",
    "GatewayError",
    "GatewayStats",
    "LLMGateway",
    "LimitGroup",
    "LimitGroupStats",
    "LLMMessage",
    "LLMRequest",
    "LLMResponse",
    "LLMStream",
    "LLMTool",
    "LatencySummary",
    "ModelConfig",
    "ModelPricing",
    "ModelProvider",
    "ModelStats",
    "SharedStateStats",
    "ProviderConnectionError",
    "ProviderError",
    "ProviderResponseError",
    "ProviderStatusError",
    "ProviderTimeoutError",
    "QueueFullError",
    "RateLimitError",
    "RateLimitPolicy",
    "RequestCancelledError",
    "RequestPriority",
    "RequestTimeoutError",
    "RequestValidationError",
    "ResponseFuture",
    "RetriesExhaustedError",
    "RetryPolicy",
    "StreamChunk",
    "StreamInterruptedError",
    "ToolCall",
    "ToolCallDelta",
    "UnknownModelError",
    "UnknownRequestError",
    "Usage",
    "load_config",
]

_publish(__name__, globals(), __all__)
