"""The status state machine: the only code that writes ConceptContent.status.

    pending -> generating -> completed
                         \\-> failed

Every transition is a conditional UPDATE (compare-and-set) in the database (I1),
fenced by the attempt id (I4), and records its event in the same transaction (I5).
Every transaction first locks the roadmap row, then the task row, then contents and
event counters: one order everywhere, so concurrent writers queue and never deadlock.
"""

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from generation import events
from generation.errors import Cancelled, GenerationError, MarkedFailed, Superseded, WorkerLost
from generation.models import (
    UNFINISHED_ITEM_STATES,
    GenerationItem,
    GenerationTask,
    ItemState,
    TaskKind,
    TaskStatus,
)
from generation.schemas import Quiz, ResourceList, TutorialDraft
from notifications.services import open_stream
from roadmaps.models import ConceptContent, ContentStatus, ContentType, Roadmap

logger = logging.getLogger(__name__)

STARTABLE = (ContentStatus.PENDING, ContentStatus.FAILED, ContentStatus.COMPLETED)


class AlreadyGenerating(Exception):
    """The pair has a live generation; `task_id` names it."""

    def __init__(self, task_id: str) -> None:
        super().__init__(task_id)
        self.task_id = task_id


class TaskNotRunning(Exception):
    """The task already finished, so it cannot be cancelled."""


@dataclass(frozen=True)
class Skipped:
    concept_id: str
    content_type: str
    reason: str


@dataclass(frozen=True)
class StartResult:
    task: GenerationTask | None
    skipped: list[Skipped]


@dataclass(frozen=True)
class ItemRun:
    """What a runner needs to generate one item, and the attempt that fences it."""

    item_id: int
    task_id: str
    task_kind: str
    content_id: int
    attempt_id: uuid.UUID
    content_type: str


def lease_deadline(now: datetime | None = None) -> datetime:
    return (now or timezone.now()) + timedelta(seconds=settings.GENERATION_LEASE_SECONDS)


def new_task_id(kind: str, content: ConceptContent | None = None) -> str:
    """128 random bits, and a valid Channels group name (DESIGN §4)."""
    suffix = uuid.uuid4().hex
    if kind == TaskKind.RETRY:
        return f"retry-{content.content_type}-{content.concept.concept_id[:8]}-{suffix}"
    if kind == TaskKind.BATCH:
        return f"batch-retry-{suffix}"
    return f"generate-{suffix}"


def _lock_roadmap(roadmap_id) -> None:
    list(Roadmap.objects.select_for_update().filter(pk=roadmap_id).values_list("pk"))


def _locked_task(task_id: str) -> GenerationTask:
    _lock_roadmap(GenerationTask.objects.values_list("roadmap_id", flat=True).get(pk=task_id))
    return (
        GenerationTask.objects.select_for_update(of=("self",))
        .select_related("roadmap")
        .get(pk=task_id)
    )


def _item(item_id: int) -> GenerationItem:
    return GenerationItem.objects.select_related("content__concept", "task").get(pk=item_id)


def _live_item(content_id: int, attempt_id) -> GenerationItem | None:
    """The unfinished item that owns this attempt, if any."""
    return (
        GenerationItem.objects.filter(
            content_id=content_id, attempt_id=attempt_id, state__in=UNFINISHED_ITEM_STATES
        )
        .select_related("content__concept", "task")
        .first()
    )


# --- starting ------------------------------------------------------------------


def _claim(content: ConceptContent, *, task_id: str, now: datetime) -> uuid.UUID | None:
    """Compare-and-set one pair to `generating` (I1). The condition includes the
    status and attempt we read, so what we supersede is exactly known; a live
    generation (lease not expired) never matches."""
    attempt_id = uuid.uuid4()
    startable = Q(status__in=STARTABLE) | Q(
        status=ContentStatus.GENERATING, lease_expires_at__lt=now
    )
    claimed = ConceptContent.objects.filter(
        startable, pk=content.pk, status=content.status, attempt_id=content.attempt_id
    ).update(
        status=ContentStatus.GENERATING,
        attempt_id=attempt_id,
        task_id=task_id,
        lease_expires_at=lease_deadline(now),
        public_error="",
        updated_at=now,
    )
    return attempt_id if claimed else None


def _close_taken_over(content: ConceptContent) -> None:
    """A take-over of an expired generation: the dead attempt's item ends failed,
    so its task still finishes and its stream closes (I3)."""
    item = _live_item(content.pk, content.attempt_id)
    if item is not None:
        _close_item(_locked_task(item.task_id), item, ItemState.FAILED, error=WorkerLost())


def start_generation(
    *,
    roadmap: Roadmap,
    user,
    kind: str,
    contents: list[ConceptContent],
    preferences: dict | None = None,
    statuses: list[str] | None = None,
) -> StartResult:
    """Flip every startable pair to `generating`, create the task and its items,
    and enqueue the work when the transaction commits (I2).

    A single retry of a live pair raises AlreadyGenerating; a batch skips it, and
    skips a pair whose status left the selection's `statuses` since it was read."""
    from generation.tasks import enqueue_items

    now = timezone.now()
    skipped: list[Skipped] = []
    with transaction.atomic():
        _lock_roadmap(roadmap.pk)
        task = GenerationTask(
            id=new_task_id(kind, contents[0] if contents else None),
            kind=kind,
            owner=user,
            roadmap=roadmap,
            preferences=preferences or {},
        )
        claimed: list[GenerationItem] = []
        for content in contents:
            # Fresh under the roadmap lock: the caller's copy may be stale.
            content.refresh_from_db(fields=["status", "attempt_id", "task_id"])
            moved_on = statuses is not None and content.status not in statuses
            if moved_on and content.status != ContentStatus.GENERATING:
                skipped.append(
                    Skipped(content.concept.concept_id, content.content_type, "status changed")
                )
                continue
            attempt_id = _claim(content, task_id=task.id, now=now)
            if attempt_id is None:
                if kind == TaskKind.RETRY:
                    raise AlreadyGenerating(content.task_id)
                skipped.append(
                    Skipped(content.concept.concept_id, content.content_type, "already generating")
                )
                continue
            previous_status = content.status
            if previous_status == ContentStatus.GENERATING:
                _close_taken_over(content)
                previous_status = ContentStatus.FAILED
            claimed.append(
                GenerationItem(
                    task=task,
                    content=content,
                    position=len(claimed) + 1,
                    previous_status=previous_status,
                    attempt_id=attempt_id,
                )
            )
        if not claimed:
            transaction.set_rollback(True)
            return StartResult(task=None, skipped=skipped)
        task.total = len(claimed)
        task.save(force_insert=True)
        items = GenerationItem.objects.bulk_create(claimed)
        open_stream(task.id)
        item_ids = [item.pk for item in items]
        transaction.on_commit(lambda: enqueue_items(item_ids))
    return StartResult(task=task, skipped=skipped)


# --- running -------------------------------------------------------------------


def begin_item(*, item_id: int) -> ItemRun | None:
    """Mark a queued item running, renew its lease and emit `concept_start`.

    An item found `running` was redelivered after its worker died: it is taken
    over with a new attempt id, which fences the old attempt out (I4). Returns
    None when there is nothing to do (finished, cancelled or superseded)."""
    now = timezone.now()
    with transaction.atomic():
        task = _locked_task(
            GenerationItem.objects.values_list("task_id", flat=True).get(pk=item_id)
        )
        item = _item(item_id)
        if item.state not in UNFINISHED_ITEM_STATES or task.status != TaskStatus.RUNNING:
            return None
        attempt_id = uuid.uuid4()
        moved = ConceptContent.objects.filter(
            pk=item.content_id, status=ContentStatus.GENERATING, attempt_id=item.attempt_id
        ).update(attempt_id=attempt_id, lease_expires_at=lease_deadline(now), updated_at=now)
        if not moved:
            _close_item(task, item, ItemState.CANCELLED, error=Superseded())
            return None
        item.state = ItemState.RUNNING
        item.attempt_id = attempt_id
        item.save(update_fields=["state", "attempt_id"])
        renew_queued_leases(task_id=task.pk, deadline=lease_deadline(now))
        events.concept_start(task, item)
    return ItemRun(
        item_id=item.pk,
        task_id=task.pk,
        task_kind=task.kind,
        content_id=item.content_id,
        attempt_id=attempt_id,
        content_type=item.content.content_type,
    )


def heartbeat(run: ItemRun) -> bool:
    """Renew the lease of a running attempt and of its task's queued items.
    False means the attempt was fenced out (cancelled, reset, taken over)."""
    deadline = lease_deadline()
    with transaction.atomic():
        _locked_task(run.task_id)
        alive = ConceptContent.objects.filter(
            pk=run.content_id, status=ContentStatus.GENERATING, attempt_id=run.attempt_id
        ).update(lease_expires_at=deadline)
        if alive:
            renew_queued_leases(task_id=run.task_id, deadline=deadline)
    return bool(alive)


def renew_queued_leases(
    *,
    task_id: str | None = None,
    item_ids=None,
    enqueued_since: datetime | None = None,
    deadline: datetime | None = None,
) -> int:
    """Queued work is alive while its task makes progress, its engine holds it, or
    (Celery) its broker still has messages. Rows another transaction is changing
    are skipped, not waited for, so renewals never take part in a deadlock."""
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
            lease_expires_at=deadline or lease_deadline()
        )


# --- ending --------------------------------------------------------------------


def _save_tutorial(content: ConceptContent, draft: TutorialDraft, version: int) -> str:
    name = f"tutorials/{content.roadmap_id}/{content.concept.concept_id}/v{version}.md"
    return default_storage.save(name, ContentFile(draft.markdown.encode()))


def complete_item(
    run: ItemRun, *, draft: TutorialDraft | ResourceList | Quiz, model_name: str
) -> bool:
    """Store the new version and mark the pair completed, unless this attempt was
    superseded, in which case the result is dropped (I4). Returns whether it landed.

    The tutorial file is written before the transaction, so no storage I/O runs
    under the roadmap lock; a result that does not land deletes its file."""
    now = timezone.now()
    content = ConceptContent.objects.select_related("concept").get(pk=run.content_id)
    version = content.version + 1
    fields = {"version": version, "model": model_name, "generated_at": now}
    if run.content_type == ContentType.TUTORIAL:
        fields |= {
            "title": draft.title,
            "summary": draft.summary,
            "content_ref": _save_tutorial(content, draft, version),
            "payload": {},
        }
    else:
        fields |= {"payload": draft.model_dump(mode="json"), "summary": ""}
    landed = 0
    try:
        with transaction.atomic():
            task = _locked_task(run.task_id)
            landed = ConceptContent.objects.filter(
                pk=run.content_id,
                status=ContentStatus.GENERATING,
                attempt_id=run.attempt_id,
                version=version - 1,
            ).update(
                **fields,
                status=ContentStatus.COMPLETED,
                attempt_id=None,
                lease_expires_at=None,
                public_error="",
                updated_at=now,
            )
            item = _item(run.item_id)
            if landed:
                content.refresh_from_db()
                _close_item(task, item, ItemState.COMPLETED, content=content)
            elif item.state in UNFINISHED_ITEM_STATES and item.attempt_id == run.attempt_id:
                _close_item(task, item, ItemState.CANCELLED, error=Superseded())
    finally:
        if not landed and "content_ref" in fields:
            default_storage.delete(fields["content_ref"])  # dropped or rolled back
    if not landed:
        logger.info("Dropped the late result of attempt %s (task %s)", run.attempt_id, run.task_id)
    return bool(landed)


def fail_item(run: ItemRun, *, error: GenerationError) -> bool:
    """Mark the pair failed with a public message, fenced like complete_item."""
    with transaction.atomic():
        task = _locked_task(run.task_id)
        item = _item(run.item_id)
        if item.state not in UNFINISHED_ITEM_STATES or item.attempt_id != run.attempt_id:
            return False
        return _fail(task, item, error)


def _fail(
    task: GenerationTask,
    item: GenerationItem,
    error: GenerationError,
    *,
    stale_before: datetime | None = None,
) -> bool:
    """Fail the item's pair if its attempt still owns it (and, for the sweeper,
    its lease is still expired); otherwise the item was superseded. Returns whether
    the pair failed; a lease renewed meanwhile leaves everything as it was."""
    failed = _fail_content(item, error, stale_before=stale_before)
    if not failed and stale_before is not None:
        return False
    if failed:
        _close_item(task, item, ItemState.FAILED, error=error)
    else:
        _close_item(task, item, ItemState.CANCELLED, error=Superseded())
    return failed


def _fail_content(
    item: GenerationItem, error: GenerationError, *, stale_before: datetime | None = None
) -> bool:
    owned = ConceptContent.objects.filter(
        pk=item.content_id, status=ContentStatus.GENERATING, attempt_id=item.attempt_id
    )
    if stale_before is not None:
        owned = owned.filter(lease_expires_at__lt=stale_before)
    return bool(
        owned.update(
            status=ContentStatus.FAILED,
            public_error=events.public_text(error, item.task.roadmap),
            attempt_id=None,
            lease_expires_at=None,
            updated_at=timezone.now(),
        )
    )


ITEM_COUNTERS = {
    ItemState.COMPLETED: "completed",
    ItemState.FAILED: "failed",
    ItemState.CANCELLED: "cancelled",
}


def _close_item(
    task: GenerationTask,
    item: GenerationItem,
    outcome: str,
    *,
    error: GenerationError | None = None,
    content: ConceptContent | None = None,
    ends_task: bool = True,
) -> None:
    """End one item whose pair the caller already moved (or left to its new
    owner): counters, the item's terminal event, and the task's end if it was the
    last. `ends_task=False` when the caller ends the task itself (cancel)."""
    item.state = outcome
    item.save(update_fields=["state"])
    counter = ITEM_COUNTERS[outcome]
    GenerationTask.objects.filter(pk=task.pk).update(**{counter: F(counter) + 1})
    setattr(task, counter, getattr(task, counter) + 1)
    # A single retry's stream ends with its concept event, a batch's with task_complete.
    final = ends_task and task.kind == TaskKind.RETRY
    if outcome == ItemState.COMPLETED:
        events.concept_complete(task, item, content, final=final)
    else:
        events.concept_failed(task, item, error, final=final)
    if ends_task:
        _finish_task_if_done(task)


def _finish_task_if_done(task: GenerationTask) -> None:
    if task.status != TaskStatus.RUNNING:
        return
    if task.items.filter(state__in=UNFINISHED_ITEM_STATES).exists():
        return
    if task.completed == task.total:
        status = TaskStatus.COMPLETED
    elif task.completed == task.failed == 0:
        status = TaskStatus.CANCELLED
    elif task.completed == 0:
        status = TaskStatus.FAILED
    else:
        status = TaskStatus.PARTIAL
    _close_task(task, status)
    if task.kind != TaskKind.RETRY:
        events.task_complete(task, final=True)


def _close_task(task: GenerationTask, status: str) -> None:
    task.status = status
    task.finished_at = timezone.now()
    task.save(update_fields=["status", "finished_at"])


def cancel_task(*, task_id: str) -> GenerationTask:
    """Unstarted pairs go back to their previous status; in-flight ones end
    `failed` with "Cancelled"; the task ends `cancelled` with `task_complete`."""
    with transaction.atomic():
        task = _locked_task(task_id)
        if task.status != TaskStatus.RUNNING:
            raise TaskNotRunning(task_id)
        now = timezone.now()
        unfinished = task.items.filter(state__in=UNFINISHED_ITEM_STATES).select_related(
            "content__concept", "content__roadmap", "task__roadmap"
        )
        for item in unfinished:
            if item.state == ItemState.RUNNING:
                if _fail_content(item, Cancelled()):
                    _close_item(task, item, ItemState.CANCELLED, error=Cancelled(), ends_task=False)
                else:
                    _close_item(
                        task, item, ItemState.CANCELLED, error=Superseded(), ends_task=False
                    )
                continue
            restored = ConceptContent.objects.filter(
                pk=item.content_id, status=ContentStatus.GENERATING, attempt_id=item.attempt_id
            ).update(
                status=item.previous_status,
                attempt_id=None,
                lease_expires_at=None,
                updated_at=now,
            )
            item.state = ItemState.CANCELLED
            item.save(update_fields=["state"])
            GenerationTask.objects.filter(pk=task.pk).update(cancelled=F("cancelled") + 1)
            task.cancelled += 1
            if restored:
                events.status_changed(
                    item.content,
                    status=item.previous_status,
                    previous_status=ContentStatus.GENERATING,
                    task_id=task.pk,
                )
        _close_task(task, TaskStatus.CANCELLED)
        events.task_complete(task, final=True)
    return task


# --- recovery and operators ----------------------------------------------------------


def recover_stale(*, now: datetime | None = None) -> int:
    """Fail every generation whose lease expired: its worker died, its message
    was lost, or it hung (I3). Safe to run anywhere, any number of times."""
    now = now or timezone.now()
    stale = ConceptContent.objects.filter(
        status=ContentStatus.GENERATING, lease_expires_at__lt=now
    ).values_list("pk", "roadmap_id", "attempt_id")
    recovered = 0
    for content_id, roadmap_id, attempt_id in stale:
        with transaction.atomic():
            _lock_roadmap(roadmap_id)
            still_stale = ConceptContent.objects.filter(
                pk=content_id,
                attempt_id=attempt_id,
                status=ContentStatus.GENERATING,
                lease_expires_at__lt=now,
            ).exists()
            if not still_stale:
                continue
            logger.warning("Lease expired for content %s (attempt %s)", content_id, attempt_id)
            item = _live_item(content_id, attempt_id)
            if item is None:
                recovered += _fail_orphan(content_id, attempt_id, now)
            else:
                task = _locked_task(item.task_id)
                recovered += _fail(task, item, WorkerLost(), stale_before=now)
    return recovered


def _fail_orphan(content_id: int, attempt_id, now: datetime) -> int:
    """A generating row without a live item (should not happen): fail it anyway."""
    content = ConceptContent.objects.select_related("concept", "roadmap").get(pk=content_id)
    updated = ConceptContent.objects.filter(
        pk=content_id,
        attempt_id=attempt_id,
        status=ContentStatus.GENERATING,
        lease_expires_at__lt=now,
    ).update(
        status=ContentStatus.FAILED,
        public_error=events.public_text(WorkerLost(), content.roadmap),
        attempt_id=None,
        lease_expires_at=None,
        updated_at=now,
    )
    if updated:
        events.status_changed(
            content,
            status=ContentStatus.FAILED,
            previous_status=ContentStatus.GENERATING,
            task_id=content.task_id or None,
        )
    return updated


def set_status_outside_task(*, content: ConceptContent, status: str) -> bool:
    """An operator's reset (admin): move one pair to `pending` or `failed`. A live
    generation of the pair is fenced out and its task item closed as cancelled."""
    if status not in (ContentStatus.PENDING, ContentStatus.FAILED):
        raise ValueError(f"Cannot set status {status!r} by hand")
    with transaction.atomic():
        _lock_roadmap(content.roadmap_id)
        current = ConceptContent.objects.select_related("concept", "roadmap").get(pk=content.pk)
        if current.status == status:
            return False
        item = None
        if current.status == ContentStatus.GENERATING:
            item = _live_item(current.pk, current.attempt_id)
        ConceptContent.objects.filter(
            pk=current.pk, status=current.status, attempt_id=current.attempt_id
        ).update(
            status=status,
            attempt_id=None,
            lease_expires_at=None,
            updated_at=timezone.now(),
            public_error=events.public_text(MarkedFailed(), current.roadmap)
            if status == ContentStatus.FAILED
            else "",
        )
        events.status_changed(current, status=status, previous_status=current.status, task_id=None)
        if item is not None:
            _close_item(_locked_task(item.task_id), item, ItemState.CANCELLED, error=Cancelled())
    return True
