"""The record of a task: its items' outcomes, counters, terminal events and end,
and the row locks every transition takes, always in one order:

    roadmap row -> owner (user) row -> task row -> content rows -> event counter rows

so concurrent writers queue and never deadlock (PostgreSQL). Internal to
generation.state, which calls it inside its transactions; it never writes a
content's status (the state machine does, then tells the ledger the outcome)."""

from datetime import datetime

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection
from django.db.models import F, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from generation import budgets, events
from generation.errors import GenerationError, TooManyActive
from generation.models import (
    UNFINISHED_ITEM_STATES,
    GenerationItem,
    GenerationTask,
    ItemState,
    TaskKind,
    TaskStatus,
)
from roadmaps.models import Roadmap

ITEM_COUNTERS = {
    ItemState.COMPLETED: "completed",
    ItemState.FAILED: "failed",
    ItemState.CANCELLED: "cancelled",
}


def lock_roadmap(roadmap_id) -> None:
    """SQLite has no row locks (its writers are serialised at BEGIN IMMEDIATE), so
    there the query would only cost a round trip."""
    if connection.features.has_select_for_update:
        list(Roadmap.objects.select_for_update().filter(pk=roadmap_id).values_list("pk"))


def lock_owner(user) -> None:
    """Lock the user's row (FOR NO KEY UPDATE: it does not block the user's foreign
    keys) for a start's admission checks, the cap on active work and the daily
    budget, so two starts of one user on different roadmaps cannot both pass on
    the same reading. SQLite serialises its writers at BEGIN IMMEDIATE instead."""
    if connection.features.has_select_for_update:
        users = get_user_model().objects.select_for_update(no_key=True)
        list(users.filter(pk=user.pk).values_list("pk"))


def active_items_of(user) -> int:
    """How many pairs the user has queued or running (the caller holds lock_owner).
    Summed from the counters of the user's running tasks (an index of those), not
    counted over items: the cost follows the user's own tasks, not everyone's work."""
    unfinished = F("total") - F("completed") - F("failed") - F("cancelled")
    running = GenerationTask.objects.filter(owner=user, status=TaskStatus.RUNNING)
    return running.aggregate(active=Coalesce(Sum(unfinished), 0))["active"]


def locked_task(task_id: str, *, roadmap_id=None) -> GenerationTask:
    """The task, with its roadmap row and then its own row locked (`roadmap_id`,
    when the caller knows it, saves looking it up)."""
    tasks = GenerationTask.objects.select_related("roadmap")
    if connection.features.has_select_for_update:
        if roadmap_id is None:
            roadmap_id = GenerationTask.objects.values_list("roadmap_id", flat=True).get(pk=task_id)
        lock_roadmap(roadmap_id)
        tasks = tasks.select_for_update(of=("self",))
    return tasks.get(pk=task_id)


def item(item_id: int, *, task: GenerationTask | None = None) -> GenerationItem:
    """An item with its pair; with `task` (already read and locked) not read again."""
    if task is None:
        return GenerationItem.objects.select_related("content__concept", "task").get(pk=item_id)
    item = GenerationItem.objects.select_related("content__concept").get(pk=item_id, task=task)
    item.task = task
    return item


def live_item(content_id: int, attempt_id) -> GenerationItem | None:
    """The unfinished item that owns this attempt, if any."""
    return (
        GenerationItem.objects.filter(
            content_id=content_id, attempt_id=attempt_id, state__in=UNFINISHED_ITEM_STATES
        )
        .select_related("content__concept", "task")
        .first()
    )


def count(task: GenerationTask, outcome: str, items: int = 1) -> None:
    """`items` more items ended with `outcome`, in the row and in the caller's copy."""
    counter = ITEM_COUNTERS[outcome]
    GenerationTask.objects.filter(pk=task.pk).update(**{counter: F(counter) + items})
    setattr(task, counter, getattr(task, counter) + items)


def close_item(
    task: GenerationTask,
    item: GenerationItem,
    outcome: str,
    *,
    error: GenerationError | None = None,
    ends_task: bool = True,
) -> None:
    """End one item whose pair the caller already moved (or left to its new
    owner): counters, the item's terminal event, and the task's end if it was the
    last. `ends_task=False` when the caller ends the task itself (cancel)."""
    ended_from, item.state = item.state, outcome
    released = budgets.release(item, ended_from=ended_from, now=timezone.now())
    item.save(update_fields=["state", *released])
    count(task, outcome)
    # A single retry's stream ends with its concept event, a batch's with task_complete.
    final = ends_task and task.kind == TaskKind.RETRY
    if outcome == ItemState.COMPLETED:
        events.concept_complete(task, item, final=final)
    else:
        events.concept_failed(task, item, error, final=final)
    if ends_task:
        finish_task_if_done(task)


def finish_task_if_done(task: GenerationTask) -> None:
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
    close_task(task, status)
    if task.kind != TaskKind.RETRY:
        events.task_complete(task, final=True)


def close_task(task: GenerationTask, status: str) -> None:
    task.status = status
    task.finished_at = timezone.now()
    task.save(update_fields=["status", "finished_at"])


def admit(user, *, starting: int, reserving: int, now: datetime) -> None:
    """Admission control, under the owner's row lock and before anything is
    written: refuse a start of `starting` pairs that would take the user past the
    cap on active work (GENERATION_MAX_ACTIVE_PER_USER), or whose `reserving`
    tokens would take them past their daily budget (generation.budgets)."""
    if not starting:
        return
    lock_owner(user)
    limit = settings.GENERATION_MAX_ACTIVE_PER_USER
    active = active_items_of(user)
    if active + starting > limit:
        raise TooManyActive(active=active, starting=starting, limit=limit)
    budgets.admit(user, starting=reserving, now=now)
