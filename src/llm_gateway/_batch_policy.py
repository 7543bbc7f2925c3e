"""``BatchApiPolicy``: when a model's LOW requests ride the provider's batch API (half price)."""

from __future__ import annotations

import attrs

from ._validators import CONFIG as V

__all__ = ["EXPIRED_ACTIONS", "BatchApiPolicy"]

EXPIRED_ACTIONS = ("realtime", "fail")

_POSITIVE_SECONDS = V.finite_number(min=0, allow_zero=False, fix="give seconds")


@attrs.frozen(kw_only=True)
class BatchApiPolicy:
    """The batch lane of one model (see ``docs/batch-api.md``); off unless ``enabled``.

    On such a model, LOW requests whose ``timeout_s`` is ``None`` or at least
    ``min_timeout_s`` go to the provider's batch API (Anthropic Message Batches, OpenAI Batch):
    half price, answered within 24 hours. HIGH and NORMAL requests, and LOW ones with a shorter
    deadline, stay realtime.

    Attributes:
        enabled: Whether the model has a batch lane.
        window_s: How long the lane gathers requests (from the first one) before it submits a
            batch.
        max_batch_requests: A batch is submitted as soon as this many requests have gathered;
            larger batches are split (as are batches over the provider's own limits: Anthropic
            100,000 requests or 256 MB, OpenAI 50,000 requests or 200 MB).
        max_batch_bytes: The largest batch body in bytes; ``None``: the provider's limit.
        poll_interval_s: The first wait before asking the provider whether a batch has ended;
            each further poll waits twice as long, up to ``max_poll_interval_s``.
        max_poll_interval_s: The longest wait between polls.
        min_timeout_s: The shortest ``LLMRequest.timeout_s`` that goes to the batch lane (a
            request with ``timeout_s=None`` goes too, and has no deadline there: the provider
            answers within 24 hours). Shorter LOW requests stay realtime.
        on_expired: What happens to a request the provider did not process before its batch
            expired (24 hours): ``"realtime"`` (default) sends it again as an ordinary request;
            ``"fail"`` fails it with ``BatchExpiredError``.
    """

    enabled: bool = attrs.field(default=False, validator=V.instance_of(bool))
    window_s: float = attrs.field(default=60.0, validator=_POSITIVE_SECONDS)
    max_batch_requests: int = attrs.field(default=10_000, validator=V.positive_int)
    max_batch_bytes: int | None = attrs.field(
        default=None, validator=V.optional(V.positive_int, fix="None means the provider's limit")
    )
    poll_interval_s: float = attrs.field(default=30.0, validator=_POSITIVE_SECONDS)
    max_poll_interval_s: float = attrs.field(default=300.0, validator=_POSITIVE_SECONDS)
    min_timeout_s: float = attrs.field(default=3600.0, validator=V.finite_number(min=0))
    on_expired: str = attrs.field(default="realtime", validator=V.one_of(*EXPIRED_ACTIONS))

    def __attrs_post_init__(self) -> None:
        if self.max_poll_interval_s < self.poll_interval_s:
            raise V.fail(
                self,
                "max_poll_interval_s",
                f"is {self.max_poll_interval_s:g}, below poll_interval_s "
                f"({self.poll_interval_s:g}); make it at least poll_interval_s",
            )
