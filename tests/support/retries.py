"""Retries and batches through the API, and waiting for them to settle."""

import asyncio

from asgiref.sync import sync_to_async

from generation import services
from generation.models import GenerationTask
from notifications.models import Event
from roadmaps.models import ConceptContent
from tests.conftest import auth


def retry_url(roadmap, concept_id="c001", content_type="tutorial") -> str:
    return f"/api/v1/roadmaps/{roadmap.pk}/concepts/{concept_id}/{content_type}/retry"


def batch_url(roadmap) -> str:
    return f"/api/v1/roadmaps/{roadmap.pk}/concepts/retry-batch"


@sync_to_async
def content_of(roadmap, concept_id="c001", content_type="tutorial") -> ConceptContent:
    return ConceptContent.objects.get(
        roadmap=roadmap, concept__concept_id=concept_id, content_type=content_type
    )


@sync_to_async
def events_of(task_id: str) -> list[dict]:
    return [e.as_message() for e in Event.objects.filter(stream=task_id).order_by("seq")]


@sync_to_async
def statuses(roadmap) -> dict[tuple[str, str], str]:
    return {
        (concept_id, content_type): status
        for concept_id, content_type, status in ConceptContent.objects.filter(
            roadmap=roadmap
        ).values_list("concept__concept_id", "content_type", "status")
    }


@sync_to_async
def fail_contents(roadmap, count: int, content_types=("tutorial", "resources", "quiz")) -> None:
    contents = ConceptContent.objects.filter(
        roadmap=roadmap, content_type__in=content_types
    ).order_by("concept__order", "content_type")[:count]
    for content in contents:
        services.reset_status(content=content, status="failed")


async def wait_for(predicate, within: float = 10.0):
    """Poll an async predicate until it returns something truthy."""
    async with asyncio.timeout(within):
        while not (value := await predicate()):
            await asyncio.sleep(0.01)
    return value


async def settled(roadmap, concept_id="c001", content_type="tutorial") -> ConceptContent | None:
    content = await content_of(roadmap, concept_id, content_type)
    return content if content.status in ("completed", "failed") else None


async def task_finished(task_id: str) -> GenerationTask | None:
    task = await GenerationTask.objects.aget(pk=task_id)
    return task if task.status != "running" else None


async def retry_to_the_end(api, user, roadmap, content_type: str = "tutorial") -> ConceptContent:
    """POST the first concept's retry and wait until its pair is completed or failed."""
    response = await api.post(retry_url(roadmap, content_type=content_type), headers=auth(user))
    assert response.status_code == 202, response.text

    async def ended():
        content = await ConceptContent.objects.aget(roadmap=roadmap, content_type=content_type)
        return content if content.status in ("completed", "failed") else None

    return await wait_for(ended, within=30)
