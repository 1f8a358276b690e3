"""What every entry point (REST, admin, management command) calls to start or stop
work, so all of them behave the same and emit the same events."""

from itertools import groupby

from django.conf import settings
from django.db.models import QuerySet

from generation import selectors, state
from generation.models import TaskKind
from roadmaps.models import ConceptContent, ContentStatus, Roadmap


class SelectionTooLarge(Exception):
    def __init__(self, size: int, cap: int) -> None:
        super().__init__(
            f"The selection has {size} pairs, more than the limit of {cap}: narrow it "
            "with concept_ids, content_types or statuses."
        )
        self.size, self.cap = size, cap


def retry_content(
    *, content: ConceptContent, user, preferences: dict | None = None
) -> state.StartResult:
    """Regenerate one pair; raises state.AlreadyGenerating if it is live."""
    return state.start_generation(
        roadmap=content.roadmap,
        user=user,
        kind=TaskKind.RETRY,
        contents=[content],
        preferences=preferences,
    )


def retry_batch(
    *,
    roadmap: Roadmap,
    user,
    concept_ids: list[str] | None = None,
    content_types: list[str] | None = None,
    statuses: list[str] | None = None,
    preferences: dict | None = None,
) -> state.StartResult:
    """Retry a selection of one roadmap, at most BATCH_MAX_PAIRS pairs."""
    statuses = statuses or [ContentStatus.FAILED]
    contents = selectors.select_contents(
        roadmap=roadmap, concept_ids=concept_ids, content_types=content_types, statuses=statuses
    )
    selection = list(contents[: settings.BATCH_MAX_PAIRS + 1])
    if len(selection) > settings.BATCH_MAX_PAIRS:
        raise SelectionTooLarge(contents.count(), settings.BATCH_MAX_PAIRS)
    return state.start_generation(
        roadmap=roadmap, user=user, kind=TaskKind.BATCH, contents=selection,
        preferences=preferences, statuses=statuses,
    )  # fmt: skip


def start_roadmap_generation(*, roadmap: Roadmap, user) -> state.StartResult:
    """Generate every pending pair of a roadmap. Not capped like a batch selection:
    a roadmap's size is already bounded by ROADMAP_MAX_CONCEPTS."""
    pending = [ContentStatus.PENDING]
    contents = selectors.select_contents(roadmap=roadmap, statuses=pending)
    return state.start_generation(
        roadmap=roadmap, user=user, kind=TaskKind.GENERATE, contents=list(contents),
        statuses=pending,
    )  # fmt: skip


def generate_new_roadmap(*, roadmap: Roadmap, user) -> str | None:
    """The roadmaps app's hook for `POST /roadmaps/` with `"generate": true`."""
    task = start_roadmap_generation(roadmap=roadmap, user=user).task
    return task.pk if task else None


def retry_contents(*, contents: QuerySet[ConceptContent], user=None) -> list[state.StartResult]:
    """Retry a selection that may span roadmaps (admin, retry_content command):
    one batch task per roadmap, in batch order, owned by `user` or else by the
    roadmap's owner."""
    ordered = selectors.contents_in_batch_order(contents.select_related("roadmap__owner"))
    results = []
    for _, group in groupby(ordered, key=lambda content: content.roadmap_id):
        group = list(group)
        roadmap = group[0].roadmap
        results.append(
            state.start_generation(
                roadmap=roadmap, user=user or roadmap.owner, kind=TaskKind.BATCH, contents=group
            )
        )
    return results


def cancel(*, task_id: str, user):
    """Cancel a visible task; raises state.TaskNotRunning when it already ended."""
    task = selectors.task_for(task_id=task_id, user=user)
    return state.cancel_task(task_id=task.pk)
