"""The status state machine: the only code that writes ConceptContent.status.

    pending -> generating -> completed
                         \\-> failed

Transitions only: each runs inside a transaction its caller opened (generation.
services for requests, generation.runner for a run, generation.liveness for the
sweep), which import it alone (ruff bans other imports); docs/generation.md
lists every edge, its event, invariant and test.

Every transition is a conditional UPDATE (compare-and-set) in the database (I1),
fenced by the attempt id (I4), and records its event in the same transaction (I5).
Every transition takes its locks in the one order that generation.ledger
documents (roadmap, owner, task, contents, event counters), so writers never
deadlock.
"""

import logging
import uuid
from datetime import datetime

from django.db.models import Q

from generation import events, ledger
from generation.errors import (
    AlreadyGenerating,
    Cancelled,
    GenerationError,
    MarkedFailed,
    Superseded,
    TaskNotRunning,
    WorkerLost,
)
from generation.models import (
    UNFINISHED_ITEM_STATES,
    GenerationItem,
    GenerationTask,
    ItemState,
    LeaseExpiry,
    TaskKind,
    TaskStatus,
)
from generation.results import ItemRun, Skipped, StartResult
from roadmaps.models import ConceptContent, ContentStatus, Roadmap, lease_expired

logger = logging.getLogger(__name__)

STARTABLE = (ContentStatus.PENDING, ContentStatus.FAILED, ContentStatus.COMPLETED)


# --- starting ------------------------------------------------------------------


def _claim_all(
    contents: list[ConceptContent], *, task_id: str, now: datetime, lease_until: datetime
) -> tuple[uuid.UUID, set[int]]:
    """Compare-and-set every pair to `generating` in one UPDATE (I1): the condition
    admits only a startable status or an expired lease, so a live generation never
    matches. Returns the attempt id and the pks that did not match (a lease renewed
    since the caller read it). All pairs of one start share the attempt id: the
    fence is always the (row, attempt) pair, and each item gets its own attempt
    when it begins."""
    attempt_id = uuid.uuid4()
    startable = Q(status__in=STARTABLE) | lease_expired(now)
    pks = [content.pk for content in contents]
    claimed = ConceptContent.objects.filter(startable, pk__in=pks).update(
        status=ContentStatus.GENERATING,
        attempt_id=attempt_id,
        task_id=task_id,
        lease_expires_at=lease_until,
        public_error="",
        updated_at=now,
    )
    if claimed == len(pks):
        return attempt_id, set()
    lost = ConceptContent.objects.filter(pk__in=pks).exclude(attempt_id=attempt_id)
    return attempt_id, set(lost.values_list("pk", flat=True))


def _already_generating(content: ConceptContent, kind: str) -> Skipped:
    """A single retry of a live pair is refused; a batch skips the pair."""
    if kind == TaskKind.RETRY:
        raise AlreadyGenerating(content.task_id)
    return Skipped(content.concept.concept_id, content.content_type, "already generating")


def _close_taken_over(content: ConceptContent) -> None:
    """A take-over of an expired generation: the dead attempt's item ends failed,
    so its task still finishes and its stream closes (I3)."""
    item = ledger.live_item(content.pk, content.attempt_id)
    if item is not None:
        ledger.close_item(
            ledger.locked_task(item.task_id), item, ItemState.FAILED, error=WorkerLost()
        )
    LeaseExpiry.objects.create(task_id=content.task_id, attempt_id=content.attempt_id)


def start(
    *,
    roadmap: Roadmap,
    user,
    kind: str,
    contents: list[ConceptContent],
    now: datetime,
    lease_until: datetime,
    reservations: dict[int, int],
    preferences: dict | None = None,
    statuses: list[str] | None = None,
) -> StartResult:
    """Flip every startable pair to `generating` (its lease until `lease_until`)
    and create the task and its items; no task when no pair could start. Each
    item holds its pair's reservation of the owner's daily tokens, by content pk
    in `reservations` (budgets.reservation, computed by the caller before its
    transaction: it is pure Python, and SQLite's write lock is held throughout).

    A single retry of a live pair raises AlreadyGenerating; a batch skips it, and
    skips a pair whose status left the selection's `statuses` since it was read."""
    skipped: list[Skipped] = []
    ledger.lock_roadmap(roadmap.pk)
    task = GenerationTask(
        id=GenerationTask.new_id(kind, contents[0] if contents else None),
        kind=kind,
        owner=user,
        roadmap=roadmap,
        preferences=preferences or {},
    )
    # One read and one UPDATE, whatever the size: the callers' copies may be
    # stale, so statuses are read again under the roadmap lock.
    fields = ("status", "attempt_id", "task_id", "lease_expires_at")
    current = (
        ConceptContent.objects.only(*fields)
        .annotate(lease_expired=lease_expired(now))
        .in_bulk([c.pk for c in contents])
    )
    startable: list[ConceptContent] = []
    for content in contents:
        for field in fields:
            setattr(content, field, getattr(current[content.pk], field))
        moved_on = statuses is not None and content.status not in statuses
        if moved_on and content.status != ContentStatus.GENERATING:
            skipped.append(
                Skipped(content.concept.concept_id, content.content_type, "status changed")
            )
        elif content.status in STARTABLE or current[content.pk].lease_expired:
            startable.append(content)
        else:
            skipped.append(_already_generating(content, kind))
    reserving = sum(reservations[content.pk] for content in startable)
    ledger.admit(user, starting=len(startable), reserving=reserving, now=now)
    attempt_id, lost = _claim_all(startable, task_id=task.id, now=now, lease_until=lease_until)
    claimed: list[GenerationItem] = []
    for content in startable:
        if content.pk in lost:
            skipped.append(_already_generating(content, kind))
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
                reserved_tokens=reservations[content.pk],
                reserved_for=user,
            )
        )
    if not claimed:
        return StartResult(task=None, skipped=skipped)
    task.total = len(claimed)
    task.save(force_insert=True)
    GenerationItem.objects.bulk_create(claimed)
    return StartResult(task=task, skipped=skipped)


# --- running -------------------------------------------------------------------


def begin_item(
    *,
    item_id: int,
    now: datetime,
    lease_until: datetime,
    task_id: str | None = None,
    roadmap_id=None,
) -> ItemRun | None:
    """Claim a queued item: mark it running with a new attempt id (which fences out
    anything older, I4), renew its lease and emit `concept_start`. Returns None
    when the item is no longer queued (another slot claimed it, or it ended).
    The scheduler passes the item's task and roadmap ids, saving their lookups."""
    if task_id is None:
        task_id = GenerationItem.objects.values_list("task_id", flat=True).get(pk=item_id)
    task = ledger.locked_task(task_id, roadmap_id=roadmap_id)
    item = ledger.item(item_id, task=task)
    if item.state != ItemState.QUEUED or task.status != TaskStatus.RUNNING:
        return None
    attempt_id = uuid.uuid4()
    moved = (
        ConceptContent.objects.filter(pk=item.content_id)
        .held_by(item.attempt_id)
        .update(attempt_id=attempt_id, lease_expires_at=lease_until, updated_at=now)
    )
    if not moved:
        ledger.close_item(task, item, ItemState.CANCELLED, error=Superseded())
        return None
    item.state = ItemState.RUNNING
    item.attempt_id = attempt_id
    item.save(update_fields=["state", "attempt_id"])
    events.concept_start(task, item)
    return ItemRun(
        item_id=item.pk,
        task_id=task.pk,
        task_kind=task.kind,
        content_id=item.content_id,
        attempt_id=attempt_id,
        content_type=item.content.content_type,
        reserved_tokens=item.reserved_tokens,
    )


# --- ending --------------------------------------------------------------------


def complete_item(run: ItemRun, *, version: int, fields: dict, roadmap_id=None) -> bool:
    """Store version `version` (its `fields`) and mark the pair completed, unless
    this attempt was superseded, in which case nothing changes (I4). Returns
    whether it landed. `roadmap_id`, when the caller knows it, saves looking it up."""
    task = ledger.locked_task(run.task_id, roadmap_id=roadmap_id)
    landed = (
        ConceptContent.objects.filter(pk=run.content_id, version=version - 1)
        .held_by(run.attempt_id)
        .release(status=ContentStatus.COMPLETED, public_error="", version=version, **fields)
    )
    item = ledger.item(run.item_id, task=task)  # read after the release: its new version
    if landed:
        ledger.close_item(task, item, ItemState.COMPLETED)
    elif item.state in UNFINISHED_ITEM_STATES and item.attempt_id == run.attempt_id:
        ledger.close_item(task, item, ItemState.CANCELLED, error=Superseded())
    return bool(landed)


def fail_item(run: ItemRun, *, error: GenerationError) -> bool:
    """Mark the pair failed with a public message, fenced like complete_item."""
    task = ledger.locked_task(run.task_id)
    item = ledger.item(run.item_id)
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
        ledger.close_item(task, item, ItemState.FAILED, error=error)
    else:
        ledger.close_item(task, item, ItemState.CANCELLED, error=Superseded())
    return failed


def _fail_content(
    item: GenerationItem, error: GenerationError, *, stale_before: datetime | None = None
) -> bool:
    owned = ConceptContent.objects.filter(pk=item.content_id).held_by(item.attempt_id)
    if stale_before is not None:
        owned = owned.expired(stale_before)
    return bool(
        owned.release(
            status=ContentStatus.FAILED,
            public_error=events.public_text(error, item.task.roadmap),
        )
    )


def cancel_task(*, task_id: str) -> GenerationTask:
    """Unstarted pairs go back to their previous status; in-flight ones end
    `failed` with "Cancelled"; the task ends `cancelled` with `task_complete`."""
    task = ledger.locked_task(task_id)
    if task.status != TaskStatus.RUNNING:
        raise TaskNotRunning(task_id)
    running = task.items.filter(state=ItemState.RUNNING).select_related(
        "content__concept", "content__roadmap", "task__roadmap"
    )
    for item in running:  # at most the engines' concurrency
        error = Cancelled() if _fail_content(item, Cancelled()) else Superseded()
        ledger.close_item(task, item, ItemState.CANCELLED, error=error, ends_task=False)
    _restore_queued(task)
    ledger.close_task(task, TaskStatus.CANCELLED)
    events.task_complete(task, final=True)
    return task


def _restore_queued(task: GenerationTask) -> None:
    """Every unstarted pair back to the status it had before the task, in a constant
    number of queries: one read, one UPDATE per previous status, one for the items,
    and the events in one insert."""
    queued = list(task.items.filter(state=ItemState.QUEUED).select_related("content__concept"))
    if not queued:
        return
    # Attempt ids are unique to their start, so a row whose attempt is one of this
    # task's queued items' is held by this task (I4: taken-over rows are not).
    held = set(
        ConceptContent.objects.filter(
            pk__in=[item.content_id for item in queued],
            status=ContentStatus.GENERATING,
            attempt_id__in={item.attempt_id for item in queued},
        ).values_list("pk", flat=True)
    )
    restored = [item for item in queued if item.content_id in held]
    for status in {item.previous_status for item in restored}:
        pks = [item.content_id for item in restored if item.previous_status == status]
        ConceptContent.objects.filter(pk__in=pks).release(status=status)
    # They never ran: their reservations end with them, there is nothing to settle.
    task.items.filter(pk__in=[item.pk for item in queued]).update(
        state=ItemState.CANCELLED, reserved_for=None
    )
    ledger.count(task, ItemState.CANCELLED, items=len(queued))
    events.statuses_changed(
        task.roadmap,
        [(item.content, item.previous_status) for item in restored],
        previous_status=ContentStatus.GENERATING,
        task_id=task.pk,
    )


# --- recovery and operators ----------------------------------------------------


def fail_expired(*, content_id: int, roadmap_id, attempt_id, now: datetime) -> bool:
    """Fail a pair whose lease expired before `now`, if it still has (the sweep
    read it before taking the roadmap lock: a renewal meanwhile wins). Returns
    whether it failed."""
    ledger.lock_roadmap(roadmap_id)
    still_stale = ConceptContent.objects.filter(pk=content_id).expired(now).held_by(attempt_id)
    if not still_stale.exists():
        return False
    logger.warning("Lease expired for content %s (attempt %s)", content_id, attempt_id)
    item = ledger.live_item(content_id, attempt_id)
    if item is not None:
        if not _fail(ledger.locked_task(item.task_id), item, WorkerLost(), stale_before=now):
            return False
        LeaseExpiry.objects.create(task_id=item.task_id, attempt_id=attempt_id)
        return True
    # A generating row without a live item (should not happen): fail it anyway.
    content = still_stale.select_related("concept", "roadmap").get()
    public_error = events.public_text(WorkerLost(), content.roadmap)
    if not still_stale.release(status=ContentStatus.FAILED, public_error=public_error):
        return False
    LeaseExpiry.objects.create(task_id=content.task_id, attempt_id=attempt_id)
    events.status_changed(
        content,
        status=ContentStatus.FAILED,
        previous_status=ContentStatus.GENERATING,
        task_id=content.task_id or None,
    )
    return True


def set_status_outside_task(*, content: ConceptContent, status: str) -> bool:
    """An operator's reset (admin): move one pair to `pending` or `failed`. A live
    generation of the pair is fenced out and its task item closed as cancelled."""
    if status not in (ContentStatus.PENDING, ContentStatus.FAILED):
        raise ValueError(f"Cannot set status {status!r} by hand")
    ledger.lock_roadmap(content.roadmap_id)
    current = ConceptContent.objects.select_related("concept", "roadmap").get(pk=content.pk)
    if current.status == status:
        return False
    item = None
    if current.status == ContentStatus.GENERATING:
        item = ledger.live_item(current.pk, current.attempt_id)
    ConceptContent.objects.filter(
        pk=current.pk, status=current.status, attempt_id=current.attempt_id
    ).release(
        status=status,
        public_error=events.public_text(MarkedFailed(), current.roadmap)
        if status == ContentStatus.FAILED
        else "",
    )
    events.status_changed(current, status=status, previous_status=current.status, task_id=None)
    if item is not None:
        ledger.close_item(
            ledger.locked_task(item.task_id), item, ItemState.CANCELLED, error=Cancelled()
        )
    return True
