"""Leases: how live work proves it is alive (I3).

A `generating` row carries `lease_expires_at`. A running attempt renews it with
each heartbeat; queued work is renewed while it is known to be waiting (its task
makes progress, its engine holds it, or its broker still has messages). A row
whose lease runs out is failed by the sweeper (generation.state.recover_stale).
Renewals never change a status, so they are not transitions of the state machine."""

from collections.abc import Iterable
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from generation import ledger
from generation.models import GenerationItem, ItemState
from generation.results import ItemRun
from roadmaps.models import ConceptContent, ContentStatus


def deadline(now: datetime | None = None) -> datetime:
    return (now or timezone.now()) + timedelta(seconds=settings.GENERATION_LEASE_SECONDS)


def heartbeat(run: ItemRun) -> bool:
    """Renew the lease of a running attempt and of its task's queued items.
    False means the attempt was fenced out (cancelled, reset, taken over)."""
    renewed_until = deadline()
    with transaction.atomic():
        ledger.locked_task(run.task_id)
        alive = (
            ConceptContent.objects.filter(pk=run.content_id)
            .held_by(run.attempt_id)
            .update(lease_expires_at=renewed_until)
        )
        if alive:
            renew_queued(task_id=run.task_id, until=renewed_until)
    return bool(alive)


def renew_queued(
    *,
    task_id: str | None = None,
    item_ids: Iterable[int] | None = None,
    enqueued_since: datetime | None = None,
    until: datetime | None = None,
) -> int:
    """Renew the leases of queued items (of one task, these items, or every task
    enqueued since a time). Rows another transaction is changing are skipped, not
    waited for, so renewals never take part in a deadlock."""
    items = GenerationItem.objects.filter(state=ItemState.QUEUED)
    if task_id is not None:
        items = items.filter(task_id=task_id)
    if item_ids is not None:
        items = items.filter(pk__in=list(item_ids))
    if enqueued_since is not None:
        items = items.filter(task__created_at__gte=enqueued_since)
    with transaction.atomic():
        renewable = ConceptContent.objects.select_for_update(skip_locked=True).filter(
            status=ContentStatus.GENERATING, attempt_id__in=items.values("attempt_id")
        )
        return ConceptContent.objects.filter(pk__in=renewable.values("pk")).update(
            lease_expires_at=until or deadline()
        )
