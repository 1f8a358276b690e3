"""Admin for roadmaps and their content statuses (DESIGN §7).

This app only *shows* data: statuses are written by generation's state machine
alone, so nothing here is editable. ConceptContentAdmin is defined here but
registered by generation/admin.py, once, with the actions that change statuses
(reset, mark failed, retry): generation depends on roadmaps, never the reverse."""

from django.contrib import admin
from django.db.models import Count, Q, QuerySet
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from roadmaps.models import ConceptContent, ContentStatus, ContentType, Roadmap, Stage
from roadmaps.selectors import status_counts

BADGE_COLOURS = {
    # Content statuses
    "pending": "#6c757d",
    "generating": "#0d6efd",
    "completed": "#198754",
    "failed": "#dc3545",
    # Task statuses and item states (generation)
    "running": "#0d6efd",
    "queued": "#6c757d",
    "partial": "#fd7e14",
    "cancelled": "#6c757d",
}


def status_badge(status: str, label: str | None = None) -> SafeString:
    """A coloured pill; the text stays readable without colour."""
    return format_html(
        '<span class="status-badge status-{}" style="background:{};color:#fff;'
        'padding:1px 8px;border-radius:9px;white-space:nowrap">{}</span>',
        status,
        BADGE_COLOURS.get(status, "#6c757d"),
        label if label is not None else status,
    )


def status_counts_table(counts: dict[str, dict[str, int]]) -> SafeString:
    """{content_type: {status: n}} as a small table of badges."""
    rows = format_html_join(
        "",
        "<tr><th>{}</th><td>{}</td></tr>",
        (
            (
                content_type,
                format_html_join(
                    " ",
                    "{}",
                    ((status_badge(status, f"{status} {n}"),) for status, n in by_status.items()),
                ),
            )
            for content_type, by_status in counts.items()
        ),
    )
    return format_html("<table>{}</table>", rows)


@admin.register(Roadmap)
class RoadmapAdmin(admin.ModelAdmin):
    """Roadmaps with their status counts; the structure is shown read-only
    (it is created from a framework through the API, not edited by hand)."""

    list_display = ["title", "owner", "created_at", "status_summary"]
    list_filter = ["created_at"]
    list_select_related = ["owner"]
    search_fields = ["title", "goal", "owner__username", "id"]
    date_hierarchy = "created_at"
    fields = [
        "id",
        "owner",
        "title",
        "goal",
        "preferences",
        "created_at",
        "updated_at",
        "status_counts",
        "structure",
    ]
    readonly_fields = [
        "id", "owner", "preferences", "created_at", "updated_at", "status_counts", "structure",
    ]  # fmt: skip

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj: Roadmap | None = None) -> bool:
        """Roadmaps are deleted through the API (roadmaps.services.delete_roadmap),
        which refuses while content is being generated; content rows, which a
        cascade would remove, are not deletable here either."""
        return False

    def get_queryset(self, request) -> QuerySet[Roadmap]:
        """One aggregate query for the whole page's status summary."""
        return (
            super()
            .get_queryset(request)
            .annotate(
                **{
                    f"{status}_count": Count("contents", filter=Q(contents__status=status))
                    for status in ContentStatus.values
                }
            )
        )

    @admin.display(description="Content statuses (all types)")
    def status_summary(self, roadmap: Roadmap) -> SafeString:
        return format_html_join(
            " ",
            "{}",
            (
                (status_badge(status, f"{status} {getattr(roadmap, f'{status}_count')}"),)
                for status in ContentStatus.values
            ),
        )

    @admin.display(description="Status counts")
    def status_counts(self, roadmap: Roadmap) -> SafeString:
        return status_counts_table(status_counts(roadmap_ids=[roadmap.pk])[roadmap.pk])

    @admin.display(description="Structure")
    def structure(self, roadmap: Roadmap) -> SafeString:
        stages = Stage.objects.filter(roadmap=roadmap).prefetch_related(
            "modules__concepts__contents"
        )
        return format_html(
            "<ol>{}</ol>",
            format_html_join(
                "",
                "<li><strong>{}</strong> <code>{}</code><ol>{}</ol></li>",
                ((stage.name, stage.stage_id, self._modules(stage)) for stage in stages),
            ),
        )

    def _modules(self, stage: Stage) -> SafeString:
        return format_html_join(
            "",
            "<li>{} <code>{}</code><ul>{}</ul></li>",
            (
                (module.name, module.module_id, self._concepts(module))
                for module in stage.modules.all()
            ),
        )

    def _concepts(self, module) -> SafeString:
        def badges(concept) -> SafeString:
            by_type = {content.content_type: content for content in concept.contents.all()}
            return format_html_join(
                " ",
                "{}",
                (
                    (status_badge(by_type[t].status, f"{t}: {by_type[t].status}"),)
                    for t in ContentType.values
                    if t in by_type
                ),
            )

        return format_html_join(
            "",
            "<li>{} <code>{}</code> {}</li>",
            ((c.name, c.concept_id, badges(c)) for c in module.concepts.all()),
        )


class ConceptContentAdmin(admin.ModelAdmin):
    """Every (concept, content type) pair with its status. Read-only: statuses
    change only through generation's services (the actions of the subclass that
    generation/admin.py registers)."""

    list_display = [
        "concept_name",
        "concept_id",
        "content_type",
        "status_badge",
        "version",
        "roadmap",
        "task_id",
        "public_error",
        "updated_at",
    ]
    list_filter = ["status", "content_type", "roadmap"]
    search_fields = ["concept__name", "concept__concept_id", "roadmap__title", "task_id"]
    list_select_related = ["concept", "roadmap"]
    readonly_fields = [field.name for field in ConceptContent._meta.fields if field.name != "id"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        """The changelist (obj None) may run actions; a single row is never saved
        from a form, because a stale form would overwrite the state machine."""
        return obj is None and super().has_change_permission(request)

    @admin.display(description="Concept", ordering="concept__name")
    def concept_name(self, content: ConceptContent) -> str:
        return content.concept.name

    @admin.display(description="Concept id", ordering="concept__concept_id")
    def concept_id(self, content: ConceptContent) -> str:
        return content.concept.concept_id

    @admin.display(description="Status", ordering="status")
    def status_badge(self, content: ConceptContent) -> SafeString:
        return status_badge(content.status)
