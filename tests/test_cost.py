"""The cost ledger: prices in ModelConfig, LLMResponse.cost_usd, cost and savings in stats."""

from __future__ import annotations

import math

import pytest

from llm_gateway import ConfigError, LLMResponse, ModelPricing, Usage, load_config
from llm_gateway._observe import Finished
from llm_gateway._stats import LiveFigures, StatsObserver

from ._support import RecordingGateway, ask, mock_model

PRICING = ModelPricing(
    input_usd_per_mtok=3.0,
    output_usd_per_mtok=15.0,
    cache_read_usd_per_mtok=0.3,
    cache_write_usd_per_mtok=3.75,
)


def test_cost_prices_each_kind_of_token() -> None:
    # 1000 input tokens of which 200 cache reads and 100 cache writes, 500 output tokens.
    usage = Usage(
        input_tokens=1000, output_tokens=500, cache_read_tokens=200, cache_write_tokens=100
    )
    expected = (700 * 3.0 + 200 * 0.3 + 100 * 3.75 + 500 * 15.0) / 1e6
    assert math.isclose(PRICING.cost_usd(usage), expected)
    assert math.isclose(PRICING.cost_usd(usage, batch=True), expected / 2)


def test_cache_prices_default_to_the_input_price() -> None:
    pricing = ModelPricing(input_usd_per_mtok=2.0, output_usd_per_mtok=0.0)
    usage = Usage(input_tokens=1000, cache_read_tokens=400, cache_write_tokens=100)
    assert math.isclose(pricing.cost_usd(usage), 1000 * 2.0 / 1e6)


def test_batch_discount_is_configurable() -> None:
    pricing = ModelPricing(input_usd_per_mtok=1.0, output_usd_per_mtok=1.0, batch_discount=0.25)
    usage = Usage(input_tokens=1_000_000)
    assert math.isclose(pricing.cost_usd(usage, batch=True), 0.75)
    assert math.isclose(pricing.list_cost_usd(usage), 1.0)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"input_usd_per_mtok": -1.0, "output_usd_per_mtok": 1.0}, "input_usd_per_mtok"),
        ({"input_usd_per_mtok": 1.0, "output_usd_per_mtok": math.nan}, "output_usd_per_mtok"),
        (
            {"input_usd_per_mtok": 1.0, "output_usd_per_mtok": 1.0, "batch_discount": 1.5},
            "batch_discount",
        ),
        (
            {
                "input_usd_per_mtok": 1.0,
                "output_usd_per_mtok": 1.0,
                "cache_read_usd_per_mtok": True,
            },
            "cache_read_usd_per_mtok",
        ),
    ],
)
def test_bad_prices_are_refused_naming_the_field(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=f"ModelPricing.{message}"):
        ModelPricing(**fields)  # type: ignore[arg-type]


def test_pricing_loads_strictly_from_a_dict_naming_the_path() -> None:
    model = {"provider": "mock", "model_name": "m"}
    good = load_config(
        {
            "models": {
                "fast": {**model, "pricing": {"input_usd_per_mtok": 1, "output_usd_per_mtok": 2.5}}
            }
        }
    )
    assert good.models["fast"].pricing == ModelPricing(
        input_usd_per_mtok=1, output_usd_per_mtok=2.5
    )
    with pytest.raises(
        ConfigError, match=r"models\.fast\.pricing\.input_usd_per_mtok must be a number"
    ):
        load_config(
            {
                "models": {
                    "fast": {
                        **model,
                        "pricing": {"input_usd_per_mtok": "1", "output_usd_per_mtok": 2},
                    }
                }
            }
        )
    with pytest.raises(
        ConfigError, match=r"'output_usd_per_mtk'.*did you mean 'output_usd_per_mtok'"
    ):
        load_config(
            {
                "models": {
                    "fast": {**model, "pricing": {"input_usd_per_mtok": 1, "output_usd_per_mtk": 2}}
                }
            }
        )
    with pytest.raises(
        ConfigError, match=r"models\.fast\.pricing\.output_usd_per_mtok is required"
    ):
        load_config({"models": {"fast": {**model, "pricing": {"input_usd_per_mtok": 1}}}})


@pytest.mark.anyio
async def test_responses_carry_their_cost_and_stats_sum_it_per_model_and_in_total() -> None:
    models = {"priced": mock_model(pricing=PRICING), "free": mock_model()}
    usage = Usage(input_tokens=1000, output_tokens=100)
    async with RecordingGateway(models, usage=lambda r: usage) as gw:
        priced = [await gw.request(ask("priced")) for _ in range(3)]
        free = await gw.request(ask("free"))
    one = PRICING.cost_usd(usage)
    assert one > 0
    assert all(r.cost_usd is not None and math.isclose(r.cost_usd, one) for r in priced)
    assert free.cost_usd is None  # no prices: no cost, not a cost of 0
    stats = gw.get_stats()
    assert math.isclose(stats.models["priced"].cost_usd, 3 * one)
    assert stats.models["free"].cost_usd == 0.0
    assert math.isclose(stats.total.cost_usd, 3 * one)
    assert stats.total.batch_savings_usd == 0.0  # nothing came from a batch
    assert math.isclose(stats.to_dict()["total"]["cost_usd"], 3 * one)


def test_stats_count_what_a_batch_answer_saved() -> None:
    stats = StatsObserver(["m"], {"m": PRICING})
    usage = Usage(input_tokens=2_000_000, output_tokens=0)
    for batch_id in ("batch-1", None):
        response = LLMResponse(
            request_id="r",
            content="",
            model="m",
            usage=usage,
            cost_usd=PRICING.cost_usd(usage, batch=batch_id is not None),
            batch_id=batch_id,
        )
        stats.observe(Finished("m", None, response, None, "queued", 0.0))  # type: ignore[arg-type]
    live = LiveFigures(0, 0, 0, 0.0, None, None)
    figures = stats.model("m", live)
    assert math.isclose(figures.cost_usd, 3.0 + 6.0)  # half price, then the full price
    assert math.isclose(figures.batch_savings_usd, 3.0)
