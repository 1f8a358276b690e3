"""Leases: how live work proves it is alive (I3).

A `generating` row carries `lease_expires_at`. A running attempt renews it with
each heartbeat that follows progress (a request sent, bytes received); queued work
is renewed by maintenance while it is known to be waiting (a process still holds
work to run, or the broker still has messages). A row whose lease runs out is
failed by the sweeper (generation.state.recover_stale).
Renewals never change a status, so they are not transitions of the state machine."""

from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from generation.models import GenerationItem, ItemState
from generation.results import ItemRun
from roadmaps.models import ConceptContent, ContentStatus


def deadline(now: datetime | None = None) -> datetime:
    return (now or timezone.now()) + timedelta(seconds=settings.GENERATION_LEASE_SECONDS)


def heartbeat(run: ItemRun, *, progressed: bool) -> bool:
    """Renew the lease of a running attempt if it made progress since the last
    beat (one row, whatever its task's size); without progress the lease runs
    down, so a hung call is failed by the sweep even while its process lives.
    False means the attempt was fenced out (cancelled, reset, taken over)."""
    held = ConceptContent.objects.filter(pk=run.content_id).held_by(run.attempt_id)
    if progressed:
        return bool(held.update(lease_expires_at=deadline()))
    return held.exists()


def renew_queued(*, enqueued_since: datetime) -> int:
    """Renew the leases of the queued items of every task started since a time:
    one statement per maintenance round, however many items wait. Rows another
    transaction is changing are skipped, not waited for, so renewals never take
    part in a deadlock."""
    items = GenerationItem.objects.filter(
        state=ItemState.QUEUED, task__created_at__gte=enqueued_since
    )
    with transaction.atomic():
        renewable = ConceptContent.objects.select_for_update(skip_locked=True).filter(
            status=ContentStatus.GENERATING, attempt_id__in=items.values("attempt_id")
        )
        return ConceptContent.objects.filter(pk__in=renewable.values("pk")).update(
            lease_expires_at=deadline()
        )
