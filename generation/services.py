"""The one write entry point of generation: what views, admin actions, management
commands and tests call to start, stop, reset and recover work, so every entry
point behaves the same and emits the same events.

Services take keyword arguments and own the write: the transaction each
transition of generation.state runs in, the enqueue of work once a start commits
(I2), and the error policy (generation.errors' ServiceError subclasses for
requests they refuse; a broker that refuses work fails nothing here)."""

import functools
from collections.abc import Callable
from datetime import datetime
from itertools import groupby

from django.conf import settings
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from generation import budgets, liveness, selectors, state
from generation.errors import BudgetExceeded, SelectionTooLarge, TooManyActive
from generation.models import GenerationTask, TaskKind
from generation.results import Skipped, StartResult
from generation.tasks import generate_content
from roadmaps.models import ConceptContent, ContentStatus, Roadmap

__all__ = [
    "Skipped",
    "StartResult",
    "cancel_task",
    "generate_new_roadmap",
    "generate_roadmap",
    "recover_stale",
    "reset_status",
    "retry_batch",
    "retry_content",
    "retry_contents",
    "start_generation",
]


def starts_work[**P](start: Callable[P, StartResult]) -> Callable[P, StartResult]:
    """A service that starts work (it calls state.start) runs in one transaction,
    rolled back when nothing could start, and enqueues one unit of work per item
    once that transaction commits (I2). A broker that refuses a unit must not turn
    the already-sent 202 into an error: `robust` logs the refusal, and the item's
    lease fails it (I3)."""

    @functools.wraps(start)
    def starting(*args: P.args, **kwargs: P.kwargs) -> StartResult:
        with transaction.atomic():
            result = start(*args, **kwargs)
            if result.task is None:
                transaction.set_rollback(True)
                return result
            for _ in range(result.task.total):
                transaction.on_commit(generate_content.enqueue, robust=True)
        return result

    return starting


def reservations(
    contents: list[ConceptContent], *, roadmap: Roadmap, preferences: dict | None
) -> dict[int, int]:
    """What each pair reserves of its user's daily token budget (generation.budgets)."""
    return {
        content.pk: budgets.reservation(content, roadmap=roadmap, preferences=preferences or {})
        for content in contents
    }


@starts_work
def start_generation(
    *,
    roadmap: Roadmap,
    user,
    kind: str,
    contents: list[ConceptContent],
    preferences: dict | None = None,
    statuses: list[str] | None = None,
    now: datetime | None = None,
) -> StartResult:
    """Start a task of any kind over exactly the given pairs, in their order
    (the other starts, seed_demo, tests). A single retry of a live pair raises
    AlreadyGenerating, other kinds skip it. `now` is the time of the start (the
    daily token budget's day)."""
    now = now or timezone.now()
    return state.start(
        roadmap=roadmap, user=user, kind=kind, contents=contents, now=now,
        lease_until=liveness.deadline(now), preferences=preferences, statuses=statuses,
        reservations=reservations(contents, roadmap=roadmap, preferences=preferences),
    )  # fmt: skip


@starts_work
def retry_content(*, content: ConceptContent, user, preferences: dict | None = None) -> StartResult:
    """Regenerate one pair; raises AlreadyGenerating if it is live, and (as every
    start does) TooManyActive at GENERATION_MAX_ACTIVE_PER_USER, BudgetExceeded
    past the user's daily token budget."""
    now = timezone.now()
    return state.start(
        roadmap=content.roadmap, user=user, kind=TaskKind.RETRY, contents=[content], now=now,
        lease_until=liveness.deadline(now), preferences=preferences,
        reservations=reservations([content], roadmap=content.roadmap, preferences=preferences),
    )  # fmt: skip


def retry_batch(
    *,
    roadmap: Roadmap,
    user,
    concept_ids: list[str] | None = None,
    content_types: list[str] | None = None,
    statuses: list[str] | None = None,
    preferences: dict | None = None,
) -> StartResult:
    """Retry a selection of one roadmap, at most BATCH_MAX_PAIRS pairs; raises
    SelectionTooLarge above that."""
    statuses = statuses or [ContentStatus.FAILED]
    contents = selectors.select_contents(
        roadmap=roadmap, concept_ids=concept_ids, content_types=content_types, statuses=statuses
    )
    selection = list(contents[: settings.BATCH_MAX_PAIRS + 1])
    if len(selection) > settings.BATCH_MAX_PAIRS:
        raise SelectionTooLarge(contents.count(), settings.BATCH_MAX_PAIRS)
    return start_generation(
        roadmap=roadmap, user=user, kind=TaskKind.BATCH, contents=selection,
        preferences=preferences, statuses=statuses,
    )  # fmt: skip


def generate_roadmap(*, roadmap: Roadmap, user) -> StartResult:
    """Generate every pending pair of a roadmap. Not capped like a batch selection:
    a roadmap's size is already bounded by ROADMAP_MAX_CONCEPTS."""
    pending = [ContentStatus.PENDING]
    contents = selectors.select_contents(roadmap=roadmap, statuses=pending)
    return start_generation(
        roadmap=roadmap, user=user, kind=TaskKind.GENERATE, contents=list(contents),
        statuses=pending,
    )  # fmt: skip


def generate_new_roadmap(*, roadmap: Roadmap, user) -> str | None:
    """The roadmaps app's hook (roadmaps.hooks.start_generation) for a roadmap created
    with `"generate": true`: the task id, or None when nothing is pending."""
    task = generate_roadmap(roadmap=roadmap, user=user).task
    return task.pk if task else None


# Why a roadmap of retry_contents was skipped whole, as its callers report it.
REFUSALS = {
    TooManyActive: "over the active limit",
    BudgetExceeded: "over the daily token budget",
}


def retry_contents(*, contents: QuerySet[ConceptContent], user=None) -> list[StartResult]:
    """Retry a selection that may span roadmaps (admin, retry_content command):
    one batch task per roadmap, in batch order, owned by `user` or else by the
    roadmap's owner. A roadmap whose start admission refuses (the cap on active
    work, the daily token budget) is reported with all its pairs skipped, the
    reason given; the other roadmaps still start."""
    ordered = selectors.contents_in_batch_order(contents.select_related("roadmap__owner"))
    results = []
    for _, group in groupby(ordered, key=lambda content: content.roadmap_id):
        group = list(group)
        roadmap = group[0].roadmap
        try:
            result = start_generation(
                roadmap=roadmap, user=user or roadmap.owner, kind=TaskKind.BATCH, contents=group
            )
        except (TooManyActive, BudgetExceeded) as refusal:
            reason = REFUSALS[type(refusal)]
            skipped = [Skipped(c.concept.concept_id, c.content_type, reason) for c in group]
            result = StartResult(task=None, skipped=skipped)
        results.append(result)
    return results


def cancel_task(*, task_id: str, user) -> GenerationTask:
    """Cancel a task the user may see (404 otherwise); raises TaskNotRunning when
    it already ended."""
    task = selectors.task_for(task_id=task_id, user=user)
    with transaction.atomic():
        return state.cancel_task(task_id=task.pk)


def reset_status(*, content: ConceptContent, status: str) -> bool:
    """An operator's reset to `pending` or `failed`, outside any task: a live
    generation of the pair is fenced out. False when it already had that status."""
    with transaction.atomic():
        return state.set_status_outside_task(content=content, status=status)


def recover_stale() -> int:
    """Fail every generation whose lease expired (I3), as a round of the sweep loop
    does (manage.py recover_stale, tests); how many were failed."""
    return liveness.sweep()
