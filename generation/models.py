"""A GenerationTask is one retry, batch or whole-roadmap generation; its items are
the (concept, content type) pairs it works on, in batch order."""

import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone

from roadmaps.models import ConceptContent, ContentStatus, ContentType, Roadmap


def ws_url(task_id: str) -> str:
    """The path of a task's event stream (the WebSocket route of roadmap_project.routing)."""
    return f"/api/v1/ws/{task_id}"


class TaskKind(models.TextChoices):
    RETRY = "retry", "Retry"
    BATCH = "batch", "Batch retry"
    GENERATE = "generate", "Generate"


class TaskStatus(models.TextChoices):
    RUNNING = "running", "Running"
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"
    PARTIAL = "partial", "Partial"
    CANCELLED = "cancelled", "Cancelled"


class ItemState(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    COMPLETED = "completed", "Completed"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


UNFINISHED_ITEM_STATES = (ItemState.QUEUED, ItemState.RUNNING)


class GenerationTask(models.Model):
    id = models.CharField(max_length=64, primary_key=True)
    kind = models.CharField(max_length=16, choices=TaskKind.choices)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="generation_tasks"
    )
    roadmap = models.ForeignKey(Roadmap, on_delete=models.CASCADE, related_name="generation_tasks")
    status = models.CharField(max_length=16, choices=TaskStatus.choices, default=TaskStatus.RUNNING)
    preferences = models.JSONField(default=dict, blank=True)
    total = models.PositiveIntegerField(default=0)
    completed = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    cancelled = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(status__in=TaskStatus.values), name="task_status_valid"
            ),
        ]
        indexes = [
            # Admission control sums a user's running tasks on every start.
            models.Index(
                fields=["owner"],
                condition=models.Q(status=TaskStatus.RUNNING),
                name="running_tasks_by_owner",
            ),
        ]

    def __str__(self) -> str:
        return self.id

    @staticmethod
    def new_id(kind: str, content: ConceptContent | None = None) -> str:
        """128 random bits, and a valid Channels group name (DESIGN §4)."""
        suffix = uuid.uuid4().hex
        if kind == TaskKind.RETRY:
            return f"retry-{content.content_type}-{content.concept.concept_id[:8]}-{suffix}"
        if kind == TaskKind.BATCH:
            return f"batch-retry-{suffix}"
        return f"generate-{suffix}"


class GenerationItem(models.Model):
    task = models.ForeignKey(GenerationTask, on_delete=models.CASCADE, related_name="items")
    content = models.ForeignKey(
        ConceptContent, on_delete=models.CASCADE, related_name="generation_items"
    )
    position = models.PositiveIntegerField(help_text="1-based place in the task")
    state = models.CharField(max_length=16, choices=ItemState.choices, default=ItemState.QUEUED)
    previous_status = models.CharField(
        max_length=16,
        choices=ContentStatus.choices,
        help_text="The content's status before this task, restored if cancelled unstarted.",
    )
    attempt_id = models.UUIDField()
    # The daily token budget's hold on this pair (generation.budgets).
    reserved_tokens = models.PositiveIntegerField(
        default=0, help_text="Reserved at the start: the most this pair's attempt may spend."
    )
    reserved_for = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        db_index=False,  # the partial index below
        related_name="+",
        help_text="Whose budget holds the reservation; empty once the attempt settled.",
    )
    reserved_until = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Set when the item ended while its attempt ran: the reservation "
        "lapses then unless the attempt settles first.",
    )

    class Meta:
        ordering = ["position"]
        constraints = [
            models.UniqueConstraint(fields=["task", "position"], name="unique_item_position"),
            models.UniqueConstraint(fields=["task", "content"], name="unique_item_content"),
        ]
        indexes = [
            # The scheduler's and the admission check's reads: only unfinished
            # items, however long the history grows.
            models.Index(
                fields=["state", "task"],
                condition=models.Q(state__in=UNFINISHED_ITEM_STATES),
                name="unfinished_items",
            ),
            # The budget check's read: a user's reservations still held.
            models.Index(
                fields=["reserved_for"],
                condition=models.Q(reserved_for__isnull=False),
                name="held_reservations",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.task_id} #{self.position}"


class LeaseExpiry(models.Model):
    """A generation failed because its lease ran out (its worker died, hung, or its
    message was lost), found by the sweep or by a start that took the pair over.
    One row each, never pruned, kept when the roadmap or task is deleted: the
    count (`roadmap_lease_expiries_total`, generation.metrics) must outlive
    restarts and event pruning. Inserted, never updated, so recording one takes
    no lock another transaction could wait for."""

    task_id = models.CharField(max_length=64, blank=True, default="")
    attempt_id = models.UUIDField()
    recorded_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name_plural = "lease expiries"

    def __str__(self) -> str:
        return f"{self.task_id or '-'} {self.attempt_id}"


class UsageOutcome(models.TextChoices):
    COMPLETED = "completed", "Completed"
    UNUSABLE = "unusable", "Unusable output (asked again)"
    TRUNCATED = "truncated", "Cut off at the token limit"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


class UsageRecord(models.Model):
    """One provider request of an attempt (DESIGN §6 "Usage"). Kept when its
    roadmap or task is deleted: what was spent stays spent."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        related_name="usage_records",
    )
    roadmap_id = models.UUIDField()
    task_id = models.CharField(max_length=64)
    attempt_id = models.UUIDField()
    content_type = models.CharField(max_length=16, choices=ContentType.choices)
    provider = models.CharField(max_length=64)
    model = models.CharField(max_length=128)
    prompt_tokens = models.PositiveIntegerField()
    completion_tokens = models.PositiveIntegerField()
    estimated = models.BooleanField(
        default=False, help_text="The server reported no usage: the tokens are an estimate."
    )
    first_token_seconds = models.FloatField(null=True, blank=True)
    duration_seconds = models.FloatField()
    outcome = models.CharField(max_length=16, choices=UsageOutcome.choices)
    cost = models.DecimalField(
        max_digits=20,
        decimal_places=10,
        null=True,
        blank=True,
        help_text="In GENERATION_PRICES' currency; empty where the model has no price.",
    )
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["user", "created_at"], name="usage_by_user_and_time")]

    def __str__(self) -> str:
        return f"{self.task_id} {self.provider}/{self.model} {self.outcome}"


class UserBudget(models.Model):
    """One user's daily token budget, instead of GENERATION_USER_DAILY_TOKENS
    (generation.budgets)."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        primary_key=True,
        related_name="token_budget",
    )
    daily_tokens = models.PositiveBigIntegerField(
        null=True,
        blank=True,
        help_text="Prompt and completion tokens per UTC day; empty: unlimited.",
    )

    class Meta:
        verbose_name = "user token budget"

    def __str__(self) -> str:
        limit = "unlimited" if self.daily_tokens is None else f"{self.daily_tokens} tokens"
        return f"{self.user}: {limit} a day"


class ProviderCircuit(models.Model):
    """One provider's circuit, shared by every process (generation.providers.circuit):
    open while `opened_until` is in the future; past it, one trial request decides."""

    name = models.CharField(max_length=100, primary_key=True)
    consecutive_failures = models.PositiveIntegerField(default=0)
    opened_until = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.name}: {self.consecutive_failures} failures"
