"""Which queued item a free provider slot runs next (docs/decisions/0006-fair-scheduling.md).

Fair share, from the database, so it holds across processes and engines: among
the users with queued work, the one with the fewest items running (ties: whose
oldest queued item is oldest), then that user's task with the fewest running
(ties: the oldest), then that task's first queued item. One user's 1,500-pair
backlog takes the free slots only while nobody else waits: a single retry of
another user is next as soon as a slot frees."""

from dataclasses import dataclass

from django.db.models import Count, Min, Q, QuerySet

from generation.models import UNFINISHED_ITEM_STATES, GenerationItem, ItemState, TaskStatus

SHARE = {
    "running": Count("pk", filter=Q(state=ItemState.RUNNING)),
    # Items are created in position order, so the smallest queued pk of a task is
    # its next item, and of a user the longest waiting one.
    "next_item": Min("pk", filter=Q(state=ItemState.QUEUED)),
}


@dataclass(frozen=True)
class NextItem:
    """The item to begin, with the ids its transaction locks first (ledger)."""

    item_id: int
    task_id: str
    roadmap_id: object


def _fairest(items: QuerySet[GenerationItem], *group: str) -> dict | None:
    return (
        items.values(*group)
        .annotate(**SHARE)
        .filter(next_item__isnull=False)
        .order_by("running", "next_item")
        .first()
    )


def next_item(*, exclude: set[int] = frozenset()) -> NextItem | None:
    """The queued item to run next, or None when nothing waits; `exclude` holds
    items a caller found taken meanwhile."""
    unfinished = GenerationItem.objects.filter(
        state__in=UNFINISHED_ITEM_STATES, task__status=TaskStatus.RUNNING
    ).exclude(pk__in=exclude)
    user = _fairest(unfinished, "task__owner_id")
    if user is None:
        return None
    mine = unfinished.filter(task__owner_id=user["task__owner_id"])
    task = _fairest(mine, "task_id", "task__roadmap_id")  # one roadmap per task
    return NextItem(task["next_item"], task["task_id"], task["task__roadmap_id"])
