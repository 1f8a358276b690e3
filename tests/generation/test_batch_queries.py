"""Starting and cancelling a batch cost a constant number of queries, whatever its
size: the roadmap lock is held for a handful of statements, not several
per pair."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from generation import services
from generation.models import GenerationItem, TaskKind
from notifications.models import Event
from roadmaps.models import ConceptContent

# In the test's transaction: nothing runs the work (no_runner) and nothing reads
# from another thread.
pytestmark = pytest.mark.django_db


def start(roadmap, user):
    contents = list(
        ConceptContent.objects.filter(roadmap=roadmap).select_related("concept", "roadmap")
    )
    return services.start_generation(
        roadmap=roadmap, user=user, kind=TaskKind.GENERATE, contents=contents
    ).task


def queries_to_start(roadmap, user) -> int:
    contents = list(
        ConceptContent.objects.filter(roadmap=roadmap).select_related("concept", "roadmap")
    )
    with CaptureQueriesContext(connection) as queries:
        result = services.start_generation(
            roadmap=roadmap, user=user, kind=TaskKind.GENERATE, contents=contents
        )
    assert result.task.total == len(contents)
    assert GenerationItem.objects.filter(task=result.task).count() == len(contents)
    return len(queries)


def test_starting_a_batch_takes_the_same_queries_whatever_its_size(alice, make_roadmap, no_runner):
    small = queries_to_start(make_roadmap(alice, concepts=3), alice)
    large = queries_to_start(make_roadmap(alice, concepts=200), alice)

    assert large == small, (small, large)
    assert ConceptContent.objects.exclude(status="generating").count() == 0


def queries_to_cancel(roadmap, user) -> int:
    task = start(roadmap, user)
    with CaptureQueriesContext(connection) as queries:
        services.cancel_task(task_id=task.pk, user=user)
    task.refresh_from_db()
    assert (task.status, task.cancelled) == ("cancelled", task.total)
    restored = Event.objects.filter(type="status_changed", body__task_id=task.pk)
    assert restored.count() == task.total
    return len(queries)


def test_cancelling_a_batch_takes_the_same_queries_whatever_its_size(
    alice, make_roadmap, no_runner
):
    small = queries_to_cancel(make_roadmap(alice, concepts=3), alice)
    large = queries_to_cancel(make_roadmap(alice, concepts=200), alice)

    assert large == small, (small, large)
    assert ConceptContent.objects.exclude(status="pending").count() == 0
