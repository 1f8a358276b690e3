"""Reads of roadmaps and their content; every read is scoped to what the user may see."""

import logging
import uuid

from django.core.files import File
from django.core.files.storage import default_storage
from django.db.models import Count, Prefetch, QuerySet
from django.urls import reverse

from roadmaps.models import (
    Concept,
    ConceptContent,
    ContentStatus,
    ContentType,
    Module,
    Roadmap,
    Stage,
)

logger = logging.getLogger(__name__)


def visible_roadmaps(*, user) -> QuerySet[Roadmap]:
    """Own roadmaps; staff see all. Anything else answers 404, never 403."""
    roadmaps = Roadmap.objects.all()
    return roadmaps if user.is_staff else roadmaps.filter(owner=user)


def tutorial_url(*, roadmap_id, concept_id: str, version: int) -> str:
    """The path of one tutorial version's Markdown, served by an authenticated
    view (roadmaps.views.TutorialFileView), never by a public file route."""
    return reverse(
        "tutorial-file",
        kwargs={"roadmap_id": roadmap_id, "concept_id": concept_id, "version": version},
    )


def content_url(content: ConceptContent) -> str | None:
    """`content_url`/`content_ref` of a tutorial: its current version's path, or
    None before a first completed version. Reads `content.concept` (prefetch it)."""
    if not content.content_ref:
        return None
    return tutorial_url(
        roadmap_id=content.roadmap_id,
        concept_id=content.concept.concept_id,
        version=content.version,
    )


def tutorial_file(*, roadmap_id, concept_id: str, version: int, user) -> File:
    """The stored Markdown of a tutorial version, opened, if the user may see the
    roadmap and `version` is the tutorial's current one (the only version a
    response names; older files are not tracked by the database). Raises
    ConceptContent.DoesNotExist otherwise, or when storage lost the file: every
    case answers 404, so nobody learns that someone else's roadmap exists."""
    name = (
        ConceptContent.objects.filter(
            roadmap__in=visible_roadmaps(user=user).filter(pk=roadmap_id),
            concept__concept_id=concept_id,
            content_type=ContentType.TUTORIAL,
            version=version,
        )
        .exclude(content_ref="")
        .values_list("content_ref", flat=True)
        .first()
    )
    if name is None:
        raise ConceptContent.DoesNotExist(concept_id)
    try:
        return default_storage.open(name)
    except FileNotFoundError:
        logger.warning("Tutorial file %s is missing from storage", name)
        raise ConceptContent.DoesNotExist(concept_id) from None


def status_counts(*, roadmap_ids) -> dict:
    """{roadmap_id: {content_type: {status: n}}} with every key present, one query."""
    counts = {
        roadmap_id: {t: dict.fromkeys(ContentStatus.values, 0) for t in ContentType.values}
        for roadmap_id in roadmap_ids
    }
    rows = (
        ConceptContent.objects.filter(roadmap_id__in=list(counts))
        .values_list("roadmap_id", "content_type", "status")
        .annotate(n=Count("id"))
        .order_by()
    )
    for roadmap_id, content_type, status, n in rows:
        counts[roadmap_id][content_type][status] = n
    return counts


def roadmap_list(*, user) -> QuerySet[Roadmap]:
    """The roadmaps a user may list, newest first."""
    return visible_roadmaps(user=user).order_by("-created_at", "pk")


def roadmap_detail(*, roadmap_id, user) -> Roadmap:
    """One visible roadmap with its whole tree prefetched: a constant number of
    queries whatever its size. Raises Roadmap.DoesNotExist when the roadmap is
    unknown, not the user's, or the id is not a UUID (all answer 404)."""
    try:
        roadmap_uuid = uuid.UUID(str(roadmap_id))
    except ValueError:
        raise Roadmap.DoesNotExist(roadmap_id) from None
    return (
        visible_roadmaps(user=user)
        .prefetch_related(
            Prefetch("stages", queryset=Stage.objects.order_by("order")),
            Prefetch("stages__modules", queryset=Module.objects.order_by("order")),
            Prefetch("stages__modules__concepts", queryset=Concept.objects.order_by("order")),
            Prefetch(
                "stages__modules__concepts__contents", queryset=ConceptContent.objects.order_by()
            ),
        )
        .get(pk=roadmap_uuid)
    )


def has_generation_in_flight(*, roadmap: Roadmap) -> bool:
    return roadmap.contents.filter(status=ContentStatus.GENERATING).exists()
