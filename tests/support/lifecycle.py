"""Helpers for tests that drive generations through the services directly."""

import time
from datetime import timedelta

from django.utils import timezone

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


def wait_until(predicate, timeout: float = 10.0, message: str = "condition not reached"):
    """Poll `predicate` until it returns something truthy, and return that."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"{message} within {timeout} s")


def wait_until_finished(task_id: str, timeout: float) -> GenerationTask:
    """The task once it has ended (any status but `running`)."""
    return wait_until(
        lambda: (task := GenerationTask.objects.get(pk=task_id)).status != "running" and task,
        timeout=timeout,
        message=f"task {task_id} still running",
    )


def expire_lease(content: ConceptContent) -> None:
    """The pair's lease runs out now, as if its holder had stopped beating a lease
    ago: the lease is back-dated, so no test sleeps through one."""
    expired = timezone.now() - timedelta(seconds=1)
    assert ConceptContent.objects.filter(pk=content.pk, status="generating").update(
        lease_expires_at=expired
    ), "only a generating pair holds a lease"


def event_types(task_id: str) -> list[str]:
    return list(Event.objects.filter(stream=task_id).order_by("seq").values_list("type", flat=True))


TERMINAL_EVENTS = {"concept_complete", "concept_failed"}


def stored_stream(task_id: str) -> list[Event]:
    return list(Event.objects.filter(stream=task_id).order_by("seq"))


def assert_coherent_stream(task: GenerationTask) -> list[Event]:
    """seq 1..n without gaps, one terminal event per item, task_complete last."""
    events = stored_stream(task.pk)
    assert [event.seq for event in events] == list(range(1, len(events) + 1))
    terminal = [event for event in events if event.type in TERMINAL_EVENTS]
    assert len(terminal) == task.total, [event.type for event in events]
    assert len({(e.body["concept_id"], e.body["content_type"]) for e in terminal}) == task.total
    assert events[-1].type == "task_complete" and events[-1].final
    assert [event.final for event in events].count(True) == 1
    return events
