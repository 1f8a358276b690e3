"""The event schema of DESIGN §5 (docs/events.md, docs/event.schema.json).

Each function records one event in the caller's transaction; messages are written
in the roadmap's language."""

from typing import Any

from django.utils import timezone, translation
from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop

from generation.errors import GenerationError
from generation.models import GenerationItem, GenerationTask
from notifications.services import publish_live, record_event, record_topic_events
from roadmaps.models import ConceptContent, ContentStatus, ContentType, Roadmap, roadmap_topic


def public_text(error: GenerationError, roadmap: Roadmap) -> str:
    with translation.override(roadmap.language):
        return str(error.public_message)


def _base(type_: str, *, task_id: str | None, roadmap: Roadmap) -> dict[str, Any]:
    return {
        "type": type_,
        "task_id": task_id,
        "roadmap_id": str(roadmap.pk),
        "timestamp": timezone.localtime().isoformat(),
    }


def _concept_event(
    type_: str,
    task: GenerationTask,
    item: GenerationItem,
    message: str,
    *,
    final: bool = False,
    **fields: Any,
) -> None:
    """Record one of the three concept events: the common fields, the message
    (a translatable template with %(name)s) in the roadmap's language, and the
    event's own `fields`."""
    concept = item.content.concept
    with translation.override(task.roadmap.language):
        text = _(message) % {"name": concept.name}
    _record(
        task,
        {
            **_base(type_, task_id=task.pk, roadmap=task.roadmap),
            "concept_id": concept.concept_id,
            "concept_name": concept.name,
            "content_type": item.content.content_type,
            "progress": _progress(item.position, task.total),
            "message": text,
            **fields,
        },
        final=final,
    )


def _progress(current: int, total: int) -> dict[str, Any]:
    return {"current": current, "total": total, "percentage": round(current / total * 100, 1)}


def _record(task: GenerationTask, body: dict[str, Any], *, final: bool = False) -> None:
    record_event(
        topic=roadmap_topic(task.roadmap_id),
        stream=task.pk,
        type=body["type"],
        body=body,
        final=final,
    )


# Marked for translation here, translated into the roadmap's language when recorded.
STARTED = gettext_noop("Started generating: %(name)s")
FINISHED = gettext_noop("Finished generating: %(name)s")
FAILED = gettext_noop("Generation failed: %(name)s")


def concept_start(task: GenerationTask, item: GenerationItem) -> None:
    _concept_event("concept_start", task, item, STARTED)


def concept_complete(task: GenerationTask, item: GenerationItem, *, final: bool) -> None:
    """The item's pair, read after its release, is the new version it names."""
    _concept_event(
        "concept_complete", task, item, FINISHED, final=final, data=completed_data(item.content)
    )


def completed_data(content: ConceptContent) -> dict[str, Any]:
    """The `data` of concept_complete: what the new version is, per content type.
    The content comes with its concept (ledger.item), so nothing is read again
    under the lock."""
    from roadmaps.selectors import tutorial_url

    key = f"{content.content_type}_id"
    data: dict[str, Any] = {key: content_public_id(content), "content_version": content.version}
    if content.content_type == ContentType.TUTORIAL:
        data |= {
            "title": content.title,
            "content_url": tutorial_url(
                roadmap_id=content.roadmap_id,
                concept_id=content.concept.concept_id,
                version=content.version,
            ),
            "summary": content.summary,
        }
    elif content.content_type == ContentType.RESOURCES:
        data["resources_count"] = len(content.payload.get("items", []))
    else:
        data["quiz_questions_count"] = len(content.payload.get("questions", []))
    return data


def content_public_id(content: ConceptContent) -> str:
    return f"{content.content_type}-{content.pk}-v{content.version}"


def concept_failed(
    task: GenerationTask, item: GenerationItem, error: GenerationError, *, final: bool
) -> None:
    _concept_event(
        "concept_failed",
        task,
        item,
        FAILED,
        final=final,
        error=public_text(error, task.roadmap),
        retryable=error.retryable,
    )


def task_complete(task: GenerationTask, *, final: bool) -> None:
    summary = {"total": task.total, "completed": task.completed, "failed": task.failed}
    if task.cancelled:
        summary["cancelled"] = task.cancelled
    with translation.override(task.roadmap.language):
        message = _("Task finished: %(completed)d of %(total)d completed") % summary
    _record(
        task,
        {
            **_base("task_complete", task_id=task.pk, roadmap=task.roadmap),
            "status": task.status,
            "summary": summary,
            "message": message,
        },
        final=final,
    )


def status_changed(
    content: ConceptContent, *, status: str, previous_status: str, task_id: str | None
) -> None:
    """A change made outside a task's own flow (admin, cancel, sweep): roadmap stream only."""
    statuses_changed(
        content.roadmap,
        [(content, status)],
        previous_status=previous_status,
        task_id=task_id,
    )


def statuses_changed(
    roadmap: Roadmap,
    changes: list[tuple[ConceptContent, str]],
    *,
    previous_status: str,
    task_id: str | None,
) -> None:
    """`status_changed` for each (content, new status) of one roadmap, stored with
    one counter lock and one insert however many there are (a cancel restores
    up to a whole roadmap's pairs)."""
    bodies = []
    with translation.override(roadmap.language):
        for content, status in changes:
            concept = content.concept
            message = _("%(name)s (%(type)s) is now %(status)s") % {
                "name": concept.name,
                "type": ContentType(content.content_type).label,
                "status": ContentStatus(status).label,
            }
            bodies.append(
                {
                    **_base("status_changed", task_id=task_id, roadmap=roadmap),
                    "concept_id": concept.concept_id,
                    "concept_name": concept.name,
                    "content_type": content.content_type,
                    "status": status,
                    "previous_status": previous_status,
                    "message": message,
                }
            )
    record_topic_events(topic=roadmap_topic(roadmap.pk), type="status_changed", bodies=bodies)


async def concept_progress(
    *,
    task_id: str,
    roadmap: Roadmap,
    concept_id: str,
    concept_name: str,
    content_type: str,
    position: int,
    total: int,
    percentage: int,
) -> None:
    """Live-only (never stored or replayed), so it has no id or seq; to the task's
    stream and to its roadmap's (DESIGN §5)."""
    with translation.override(roadmap.language):
        message = _("Generating %(name)s: %(percentage)d%%") % {
            "name": concept_name,
            "percentage": percentage,
        }
    body = {
        **_base("concept_progress", task_id=task_id, roadmap=roadmap),
        "id": None,
        "seq": None,
        "concept_id": concept_id,
        "concept_name": concept_name,
        "content_type": content_type,
        "progress": _progress(position, total),
        "step": "content_generation",
        "status": "processing",
        "progress_percentage": percentage,
        "message": message,
    }
    await publish_live(topic=roadmap_topic(roadmap.pk), stream=task_id, message=body)
