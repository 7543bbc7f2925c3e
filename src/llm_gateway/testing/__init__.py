"""Helpers for testing code that uses the gateway (like ``trio.testing``)."""

from .._public import publish as _publish
from ..providers._mock import CassetteMissError as CassetteMissError
from ..providers._mock import MockError as MockError
from ..providers._mock import MockFixture as MockFixture
from ..providers._mock import MockFixtures as MockFixtures
from ..providers._mock import MockMatch as MockMatch
from ..providers._mock import MockRecording as MockRecording
from ..providers._mock import MockScript as MockScript
from ..providers._mock import RequestContent as RequestContent
from ..providers._mock import request_digest as request_digest
from ._fake_batch_api import FakeBatch as FakeBatch
from ._fake_batch_api import FakeBatchApi as FakeBatchApi
from ._fake_server import FakeLLMApi as FakeLLMApi
from ._fake_server import FakeLLMServer as FakeLLMServer
from ._fake_server import FakeReply as FakeReply
from ._fake_server import ReceivedRequest as ReceivedRequest
from ._fake_server import fake_answer as fake_answer
from ._fake_server import open_fake_llm_server as open_fake_llm_server
from ._fake_sse import StreamFault as StreamFault
from ._fake_sse import StreamRecord as StreamRecord
from ._faults import Fault as Fault
from ._faults import FaultCall as FaultCall
from ._faults import FaultPlan as FaultPlan
from ._faults import prompt_key as prompt_key
from ._mock_gateway import MockLLMGateway as MockLLMGateway

__all__ = [
    "CassetteMissError",
    "FakeBatch",
    "FakeBatchApi",
    "FakeLLMApi",
    "FakeLLMServer",
    "FakeReply",
    "Fault",
    "FaultCall",
    "FaultPlan",
    "MockError",
    "MockFixture",
    "MockFixtures",
    "MockLLMGateway",
    "MockMatch",
    "MockRecording",
    "MockScript",
    "ReceivedRequest",
    "RequestContent",
    "StreamFault",
    "StreamRecord",
    "fake_answer",
    "open_fake_llm_server",
    "prompt_key",
    "request_digest",
]

_publish(__name__, globals(), __all__)
