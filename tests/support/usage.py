"""Usage records made directly, for the tests of what reads them (the API, the
admin, the command): the writing side has its own tests (test_usage.py)."""

import datetime as dt
import uuid
from decimal import Decimal

from generation.models import UsageRecord

PRICES = {"currency": "EUR", "models": {"fake-gpt": {"prompt": "0.15", "completion": "0.60"}}}
DAY = dt.date(2025, 3, 10)


def at(day: dt.date, hour: int = 12, minute: int = 0) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour, minute), tzinfo=dt.UTC)


def record(
    user,
    *,
    created_at: dt.datetime,
    prompt: int = 100,
    completion: int = 50,
    cost: Decimal | None = Decimal("0.0001"),
    model: str = "fake-gpt",
    content_type: str = "tutorial",
    attempt_id: uuid.UUID | None = None,
    roadmap_id: uuid.UUID | None = None,
    provider: str = "openai",
    outcome: str = "completed",
) -> UsageRecord:
    """An unsaved record; save many at once with UsageRecord.objects.bulk_create."""
    return UsageRecord(
        user=user,
        roadmap_id=roadmap_id or uuid.UUID(int=1),
        task_id="retry-tutorial-c001-" + "0" * 32,
        attempt_id=attempt_id or uuid.uuid4(),
        content_type=content_type,
        provider=provider,
        model=model,
        prompt_tokens=prompt,
        completion_tokens=completion,
        duration_seconds=1.0,
        outcome=outcome,
        cost=cost,
        created_at=created_at,
    )


def save(*records: UsageRecord) -> list[UsageRecord]:
    return UsageRecord.objects.bulk_create(records)
