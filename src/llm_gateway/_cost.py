"""The cost ledger's prices: what one model's tokens cost, and what a response cost.

Prices are configuration (``ModelConfig.pricing``), never fetched from the network: the
gateway cannot know a contract's discounts, and a price that changes under a running program
would make its figures disagree with themselves. A model without prices has no cost
(``LLMResponse.cost_usd`` is ``None``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from ._validators import CONFIG as V

if TYPE_CHECKING:
    from ._models import Usage

__all__ = ["ModelPricing"]

PER_MILLION = 1_000_000.0

_PRICE = V.finite_number(min=0, fix="give US dollars per million tokens, e.g. 3.0")
_OPTIONAL_PRICE = V.optional(_PRICE, fix="None means the input price")


@attrs.frozen(kw_only=True)
class ModelPricing:
    """One model's prices, in US dollars per million tokens.

    Cached prompt tokens have their own prices where the provider gives them (Anthropic's cache
    reads and writes; OpenAI's cached input). A price left ``None`` is the input price.

    Attributes:
        input_usd_per_mtok: Prompt tokens that were neither read from nor written to the cache.
        output_usd_per_mtok: Completion tokens.
        cache_read_usd_per_mtok: Prompt tokens read from the provider's cache (``None``: the
            input price).
        cache_write_usd_per_mtok: Prompt tokens written to the provider's cache (``None``: the
            input price).
        batch_discount: The share of the price a provider batch does not charge: 0.5 (half
            price, both providers' batch APIs today) by default; 0 for none. A response from
            the batch lane costs ``(1 - batch_discount)`` of the price, and the difference is
            counted in ``ModelStats.batch_savings_usd``.
    """

    input_usd_per_mtok: float = attrs.field(validator=_PRICE)
    output_usd_per_mtok: float = attrs.field(validator=_PRICE)
    cache_read_usd_per_mtok: float | None = attrs.field(default=None, validator=_OPTIONAL_PRICE)
    cache_write_usd_per_mtok: float | None = attrs.field(default=None, validator=_OPTIONAL_PRICE)
    batch_discount: float = attrs.field(
        default=0.5,
        validator=V.finite_number(min=0, max=1, fix="give a share, e.g. 0.5 for half price"),
    )

    def list_cost_usd(self, usage: Usage) -> float:
        """What ``usage`` costs at the full (realtime) price, in US dollars."""
        cache_read, cache_write = usage.cache_read_tokens, usage.cache_write_tokens
        # Usage.input_tokens includes the cache reads and writes; each part has its own price.
        fresh = max(0, usage.input_tokens - cache_read - cache_write)
        read_price = self.cache_read_usd_per_mtok
        write_price = self.cache_write_usd_per_mtok
        total = (
            fresh * self.input_usd_per_mtok
            + cache_read * (self.input_usd_per_mtok if read_price is None else read_price)
            + cache_write * (self.input_usd_per_mtok if write_price is None else write_price)
            + usage.output_tokens * self.output_usd_per_mtok
        )
        return total / PER_MILLION

    def cost_usd(self, usage: Usage, *, batch: bool = False) -> float:
        """What ``usage`` costs, in US dollars; ``batch``: answered by a provider batch."""
        full = self.list_cost_usd(usage)
        return full * (1.0 - self.batch_discount) if batch else full
