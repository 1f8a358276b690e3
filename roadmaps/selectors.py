"""Reads of roadmaps and their content; every read is scoped to what the user may see."""

from django.core.files.storage import default_storage
from django.db.models import Count, QuerySet

from roadmaps.models import ConceptContent, ContentStatus, ContentType, Roadmap


def visible_roadmaps(*, user) -> QuerySet[Roadmap]:
    """Own roadmaps; staff see all. Anything else answers 404, never 403."""
    roadmaps = Roadmap.objects.all()
    return roadmaps if user.is_staff else roadmaps.filter(owner=user)


def content_url(content: ConceptContent) -> str | None:
    return default_storage.url(content.content_ref) if content.content_ref else None


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
