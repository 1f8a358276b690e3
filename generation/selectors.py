"""Reads for the generation API: what a user may act on, in batch order, and which
event streams a user may read (the hook notifications asks, registered in
generation.apps)."""

import uuid
from typing import Any

from django.db.models import Case, IntegerField, QuerySet, Value, When
from django.shortcuts import get_object_or_404

from generation import drafts
from generation.errors import NotGenerating
from generation.models import GenerationTask
from generation.providers import circuit, config, get_provider
from notifications import live_store
from roadmaps.models import ConceptContent, ContentStatus, ContentType, Roadmap, roadmap_topic
from roadmaps.selectors import visible_roadmaps

CONTENT_TYPE_ORDER = Case(
    *(When(content_type=t, then=Value(i)) for i, t in enumerate(ContentType.values)),
    output_field=IntegerField(),
)


def roadmap_for(*, roadmap_id, user) -> Roadmap:
    """The roadmap, or 404 when unknown or not the user's (never 403)."""
    return get_object_or_404(visible_roadmaps(user=user), pk=roadmap_id)


def content_for(*, roadmap_id, concept_id: str, content_type: str, user) -> ConceptContent:
    """One pair of a roadmap the user may see, or 404 (never 403): one query, the
    ownership check joined in (the retry endpoint's hot path)."""
    return get_object_or_404(
        ConceptContent.objects.select_related("concept", "roadmap"),
        roadmap__in=visible_roadmaps(user=user).filter(pk=roadmap_id),
        concept__concept_id=concept_id,
        content_type=content_type,
    )


def contents_in_batch_order(contents: QuerySet[ConceptContent]) -> QuerySet[ConceptContent]:
    return contents.select_related("concept", "roadmap").order_by(
        "roadmap_id", "concept__order", CONTENT_TYPE_ORDER
    )


def select_contents(
    *,
    roadmap: Roadmap,
    concept_ids: list[str] | None = None,
    content_types: list[str] | None = None,
    statuses: list[str] | None = None,
) -> QuerySet[ConceptContent]:
    contents = ConceptContent.objects.filter(roadmap=roadmap)
    if concept_ids:
        contents = contents.filter(concept__concept_id__in=concept_ids)
    if content_types:
        contents = contents.filter(content_type__in=content_types)
    if statuses:
        contents = contents.filter(status__in=statuses)
    return contents_in_batch_order(contents)


def visible_tasks(*, user) -> QuerySet[GenerationTask]:
    tasks = GenerationTask.objects.select_related("roadmap")
    return tasks if user.is_staff else tasks.filter(roadmap__owner=user)


def task_for(*, task_id: str, user) -> GenerationTask:
    return get_object_or_404(visible_tasks(user=user), pk=task_id)


def authorize_stream(*, user, kind: str, key: str) -> str | None:
    """The store key to subscribe to, or None when the stream is unknown or not
    the user's (both answer 4404, so existence is never revealed). A roadmap is
    named by its canonical UUID, however the client spelled it (upper case, no
    dashes): the events are stored under that name."""
    if kind == "topic":
        try:
            roadmap_id = uuid.UUID(key)
        except ValueError:  # not a UUID
            return None
        exists = visible_roadmaps(user=user).filter(pk=roadmap_id).exists()
        return roadmap_topic(roadmap_id) if exists else None
    tasks = GenerationTask.objects.filter(pk=key)
    if not user.is_staff:
        tasks = tasks.filter(roadmap__owner=user)
    return key if tasks.exists() else None


def draft_of(content: ConceptContent) -> dict[str, Any]:
    """What the model has written so far for a generating pair (DESIGN §4 "Live
    draft"): the live document of its attempt, or an empty one before the first
    token (or where the live store cannot be read); NotGenerating otherwise."""
    if content.status != ContentStatus.GENERATING or content.attempt_id is None:
        raise NotGenerating(content.status)
    document = drafts.draft_of(content.attempt_id)
    kind = drafts.kind_of(content.content_type)  # the answer's key: "text" or "items"
    provider = get_provider()
    draft = {
        "status": content.status,
        "task_id": content.task_id,
        "attempt_id": str(content.attempt_id),
        "provider": provider.name,
        "model": provider.model,
        "offset": 0,
        kind: "" if kind == live_store.TEXT else [],
    }
    if document is not None:
        draft |= {
            "provider": document.fields.get("provider"),
            "model": document.fields.get("model"),
            "offset": document.size,
            kind: document.content,
        }
    return draft


def provider_states() -> dict[str, dict[str, Any]]:
    """Each configured provider's circuit, for the operators' health view."""
    return circuit.states(config.names())
