"""Admin operations on generation (DESIGN §7): ConceptContent actions, the
GenerationTask view, the usage records with their totals, users' own daily
token budgets, and the providers' circuits.

The ConceptContent list is defined in roadmaps/admin.py and registered here, once,
with the actions, so roadmaps never imports generation. Every action calls the
same services as the API (generation.services), so it emits the same events and
respects the same invariants."""

from collections import Counter

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.utils import flatten
from django.db.models import QuerySet
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from generation import budgets, services
from generation.models import (
    GenerationItem,
    GenerationTask,
    ProviderCircuit,
    UsageRecord,
    UserBudget,
)
from generation.providers import circuit
from generation.usage import currency
from generation.usage_report import usage_totals
from notifications.selectors import stream_events
from roadmaps.admin import ConceptContentAdmin, status_badge
from roadmaps.models import ConceptContent, ContentStatus

CONFIRM_TEMPLATE = "admin/roadmaps/conceptcontent/confirm_status_change.html"


@admin.register(ConceptContent)
class ConceptContentOperationsAdmin(ConceptContentAdmin):
    actions = ["reset_to_pending", "mark_failed", "retry_now"]

    def _set_status(self, request, queryset: QuerySet[ConceptContent], status: str):
        """Both resets are destructive (they fence out a running generation), so
        the first POST answers a confirmation page and only `post=yes` acts."""
        if request.POST.get("post") != "yes":
            return TemplateResponse(
                request,
                CONFIRM_TEMPLATE,
                {
                    **self.admin_site.each_context(request),
                    "title": f"Set {queryset.count()} content(s) to {status}?",
                    "opts": self.opts,
                    "queryset": queryset.select_related("concept", "roadmap"),
                    "status": status,
                    "action": request.POST["action"],
                    "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
                    "media": self.media,
                },
            )
        changed = sum(services.reset_status(content=content, status=status) for content in queryset)
        unchanged = len(queryset) - changed
        message = f"{changed} content(s) set to {status}."
        if unchanged:
            message += f" {unchanged} already {status} or changed meanwhile: left as they were."
        self.message_user(request, message, messages.SUCCESS)
        return None

    @admin.action(description="Reset selected to pending", permissions=["change"])
    def reset_to_pending(self, request, queryset):
        return self._set_status(request, queryset, ContentStatus.PENDING)

    @admin.action(description="Mark selected as failed", permissions=["change"])
    def mark_failed(self, request, queryset):
        return self._set_status(request, queryset, ContentStatus.FAILED)

    @admin.action(description="Retry selected now", permissions=["change"])
    def retry_now(self, request, queryset):
        """One batch task per roadmap; pairs already generating are skipped."""
        results = services.retry_contents(user=request.user, contents=queryset)
        task_ids = [result.task.pk for result in results if result.task is not None]
        skipped = Counter(skip.reason for result in results for skip in result.skipped)
        if task_ids:
            total = sum(result.task.total for result in results if result.task is not None)
            self.message_user(
                request,
                f"Started {total} generation(s) in task(s): {', '.join(task_ids)}.",
                messages.SUCCESS,
            )
        for reason, count in skipped.items():
            self.message_user(request, f"{count} content(s) skipped: {reason}.", messages.WARNING)


class ReadOnlyAdminMixin:
    """Tasks and usage are records of what happened: nothing here is added, edited
    or deleted."""

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


class GenerationItemInline(ReadOnlyAdminMixin, admin.TabularInline):
    model = GenerationItem
    fields = [
        "position",
        "concept",
        "content_type",
        "state_badge",
        "previous_status",
        "attempt_id",
        "reserved_tokens",
    ]
    readonly_fields = fields
    extra = 0
    can_delete = False

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("content__concept")

    @admin.display(description="Concept")
    def concept(self, item: GenerationItem) -> str:
        return f"{item.content.concept.name} ({item.content.concept.concept_id})"

    @admin.display(description="Content type")
    def content_type(self, item: GenerationItem) -> str:
        return item.content.content_type

    @admin.display(description="State")
    def state_badge(self, item: GenerationItem) -> SafeString:
        return status_badge(item.state)


@admin.register(GenerationTask)
class GenerationTaskAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = [
        "id",
        "kind",
        "roadmap",
        "owner",
        "status_badge",
        "outcome",
        "created_at",
        "finished_at",
    ]
    list_filter = ["status", "kind", "created_at"]
    list_select_related = ["roadmap", "owner"]
    search_fields = ["id", "roadmap__title", "owner__username"]
    date_hierarchy = "created_at"
    fields = [
        "id",
        "kind",
        "status",
        "roadmap",
        "owner",
        "preferences",
        ("total", "completed", "failed", "cancelled"),
        ("created_at", "finished_at"),
        "events",
    ]
    readonly_fields = flatten(fields)
    inlines = [GenerationItemInline]

    @admin.display(description="Status", ordering="status")
    def status_badge(self, task: GenerationTask) -> SafeString:
        return status_badge(task.status)

    @admin.display(description="Items")
    def outcome(self, task: GenerationTask) -> str:
        return (
            f"{task.completed} completed, {task.failed} failed, {task.cancelled} cancelled "
            f"of {task.total}"
        )

    @admin.display(description="Events (the task's stream, in seq order)")
    def events(self, task: GenerationTask) -> SafeString:
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    event.seq,
                    event.type,
                    event.created_at.isoformat(timespec="seconds"),
                    event.body.get("message", ""),
                    event.body.get("error", ""),
                )
                for event in stream_events(stream=task.pk)
            ),
        )
        return format_html(
            "<table><thead><tr><th>seq</th><th>type</th><th>time</th><th>message</th>"
            "<th>error</th></tr></thead><tbody>{}</tbody></table>",
            rows,
        )


@admin.register(UsageRecord)
class UsageRecordAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Every provider request, filtered by who, what and when; the changelist adds
    the totals of the whole filtered selection (all its pages), from the same
    reader as GET /usage/ (generation.usage_report)."""

    list_display = [
        "created_at",
        "user",
        "content_type",
        "provider",
        "model",
        "prompt_tokens",
        "completion_tokens",
        "estimated",
        "outcome",
        "cost",
        "duration_seconds",
        "task_id",
    ]
    list_filter = [
        ("user", admin.RelatedOnlyFieldListFilter),
        "provider",
        "model",
        "content_type",
        "outcome",
        "estimated",
        "created_at",
    ]
    list_select_related = ["user"]
    search_fields = ["task_id", "user__username"]
    date_hierarchy = "created_at"

    def changelist_view(self, request, extra_context=None):
        response = super().changelist_view(request, extra_context)
        changelist = getattr(response, "context_data", {}).get("cl")
        if changelist is not None:  # not a redirect or an error page
            response.context_data["usage_totals"] = usage_totals(changelist.queryset)
            response.context_data["usage_currency"] = currency()
        return response


@admin.register(UserBudget)
class UserBudgetAdmin(admin.ModelAdmin):
    """A user's own daily token budget, instead of GENERATION_USER_DAILY_TOKENS
    (an empty limit: unlimited); deleting it returns the user to the default."""

    list_display = ["user", "daily_tokens"]
    search_fields = ["user__username"]
    autocomplete_fields = ["user"]
    readonly_fields = ["today"]

    @admin.display(description="Today (UTC)")
    def today(self, own: UserBudget) -> str:
        if own.pk is None:
            return "-"
        budget = budgets.budget_for(own.user, now=timezone.now())
        remaining = "unlimited" if budget.remaining is None else f"{budget.remaining} left"
        return (
            f"{budget.used} tokens used, {budget.reserved} reserved by work in progress; "
            f"{remaining} until {budget.resets_at:%Y-%m-%d %H:%M} UTC"
        )


@admin.register(ProviderCircuit)
class ProviderCircuitAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Each provider's circuit as every process sees it (a row appears at its first
    failure); an operator who fixed a provider closes its circuit here rather than
    wait out the cool-off."""

    list_display = ["name", "state", "consecutive_failures", "opened_until"]
    actions = ["close_circuits"]

    @admin.display(description="State")
    def state(self, row: ProviderCircuit) -> str:
        if row.opened_until is None:
            return "closed"
        return "open" if row.opened_until > timezone.now() else "half-open: next request is a trial"

    def has_close_permission(self, request) -> bool:
        return request.user.has_perm("generation.change_providercircuit")

    @admin.action(description="Close the selected circuits", permissions=["close"])
    def close_circuits(self, request, queryset: QuerySet) -> None:
        closed = circuit.close(list(queryset.values_list("name", flat=True)))
        self.message_user(request, f"Closed {closed} circuit(s).", messages.SUCCESS)
