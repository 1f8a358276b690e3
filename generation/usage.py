"""What generations cost: every provider request of an attempt as a usage record
(generation.models.UsageRecord), priced with GENERATION_PRICES, written in the
transaction that writes the attempt's outcome, so a record exists if and only if
the outcome it belongs to does. A worker killed mid-attempt loses its records
with its outcome (the sweep fails the pair; docs/operations.md)."""

from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import transaction

from generation.models import UsageRecord
from generation.providers.metering import RequestUsage
from generation.results import ItemRun

PER_TOKENS = Decimal(1_000_000)


def prices() -> dict[str, Any]:
    return settings.GENERATION_PRICES.get("models", {})


def currency() -> str:
    return settings.GENERATION_PRICES.get("currency", "")


def price_of(model: str) -> tuple[Decimal, Decimal] | None:
    """(prompt, completion) per million tokens: the model's own price, or that of
    the longest priced name it starts with (a dated snapshot of a priced model:
    "gpt-4o-mini-2024-07-18" is priced as "gpt-4o-mini"); None if unpriced."""
    table = prices()
    name = (
        model
        if model in table
        else max((n for n in table if model.startswith(n)), key=len, default=None)
    )
    if name is None:
        return None
    return Decimal(str(table[name]["prompt"])), Decimal(str(table[name]["completion"]))


def cost_of(model: str, *, prompt_tokens: int, completion_tokens: int) -> Decimal | None:
    """Exact: integers times decimal prices, never a float."""
    price = price_of(model)
    if price is None:
        return None
    return (prompt_tokens * price[0] + completion_tokens * price[1]) / PER_TOKENS


@dataclass
class AttemptUsage:
    """The requests of one attempt, as they end; stored with its outcome."""

    run: ItemRun
    user_id: int | None
    roadmap_id: Any
    requests: list[RequestUsage] = field(default_factory=list)

    def add(self, usage: RequestUsage) -> None:
        self.requests.append(usage)

    @property
    def tokens(self) -> tuple[int, int]:
        """(prompt, completion) of all the requests."""
        return (
            sum(u.prompt_tokens for u in self.requests),
            sum(u.completion_tokens for u in self.requests),
        )

    def record(self) -> None:
        """Store the requests in the caller's transaction (one INSERT), once."""
        if not transaction.get_connection().in_atomic_block:
            raise RuntimeError("usage is recorded in the transaction of its attempt's outcome")
        requests, self.requests = self.requests, []
        if requests:
            UsageRecord.objects.bulk_create([self._record(usage) for usage in requests])

    def _record(self, usage: RequestUsage) -> UsageRecord:
        return UsageRecord(
            **asdict(usage),
            user_id=self.user_id,
            roadmap_id=self.roadmap_id,
            task_id=self.run.task_id,
            attempt_id=self.run.attempt_id,
            content_type=self.run.content_type,
            cost=cost_of(
                usage.model,
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
            ),
        )
