"""Starting a batch costs a constant number of queries, whatever its size (issue
10): the roadmap lock is held for a handful of statements, not one per pair."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from generation import services
from generation.models import GenerationItem, TaskKind
from roadmaps.models import ConceptContent

pytestmark = pytest.mark.django_db(transaction=True)


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
