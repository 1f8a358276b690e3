"""Helpers for tests that drive generations through the services directly."""

import time

from generation import services
from generation.models import GenerationTask
from notifications.models import Event
from roadmaps.models import ConceptContent


def tutorial_of(roadmap, concept_id="c001") -> ConceptContent:
    return ConceptContent.objects.select_related("concept", "roadmap").get(
        roadmap=roadmap, concept__concept_id=concept_id, content_type="tutorial"
    )


def retry(roadmap, content=None) -> GenerationTask:
    content = content or tutorial_of(roadmap)
    return services.retry_content(content=content, user=roadmap.owner).task


def wait_until(predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def event_types(task_id: str) -> list[str]:
    return list(Event.objects.filter(stream=task_id).order_by("seq").values_list("type", flat=True))
