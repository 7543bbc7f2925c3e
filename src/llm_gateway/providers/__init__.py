"""Provider adapters: how the gateway reaches each kind of model."""

from .._public import publish as _publish
from ._base import Provider as Provider
from ._base import ProviderFactory as ProviderFactory
from ._mock import MockError as MockError
from ._mock import MockFixture as MockFixture
from ._mock import MockFixtures as MockFixtures
from ._mock import MockMatch as MockMatch
from ._mock import MockProvider as MockProvider
from ._mock import MockScript as MockScript
from ._open import open_provider as open_provider

__all__ = [
    "MockError",
    "MockFixture",
    "MockFixtures",
    "MockMatch",
    "MockProvider",
    "MockScript",
    "Provider",
    "ProviderFactory",
    "open_provider",
]

_publish(__name__, globals(), __all__)
