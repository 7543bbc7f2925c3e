"""Helpers for testing code that uses the gateway (like ``trio.testing``)."""

from ..providers._mock import MockError as MockError
from ..providers._mock import MockFixture as MockFixture
from ..providers._mock import MockFixtures as MockFixtures
from ..providers._mock import MockMatch as MockMatch
from ..providers._mock import MockScript as MockScript
from ._mock_gateway import MockLLMGateway as MockLLMGateway

__all__ = ["MockError", "MockFixture", "MockFixtures", "MockLLMGateway", "MockMatch", "MockScript"]
