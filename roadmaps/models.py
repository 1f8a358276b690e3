"""A roadmap is stages -> modules -> concepts; each concept has one ConceptContent
row per content type, which carries that pair's generation status."""

import uuid
from datetime import datetime

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class ContentType(models.TextChoices):
    TUTORIAL = "tutorial", _("Tutorial")
    RESOURCES = "resources", _("Resources")
    QUIZ = "quiz", _("Quiz")


class ContentStatus(models.TextChoices):
    PENDING = "pending", _("Pending")
    GENERATING = "generating", _("Generating")
    COMPLETED = "completed", _("Completed")
    FAILED = "failed", _("Failed")


def roadmap_topic(roadmap_id: uuid.UUID | str) -> str:
    """The event topic of a roadmap (notifications): generation stores every event
    of the roadmap under it, and the roadmap stream and page read it."""
    return f"roadmap-{roadmap_id}"


class Roadmap(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="roadmaps"
    )
    title = models.CharField(max_length=200)
    goal = models.TextField(blank=True, default="")
    preferences = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["owner", "-created_at"])]

    def __str__(self) -> str:
        return self.title

    @property
    def language(self) -> str:
        """The language of this roadmap's event messages (DESIGN §5)."""
        language = str(self.preferences.get("language") or "")
        return "zh-hans" if language.lower().startswith("zh") else settings.LANGUAGE_CODE


class Stage(models.Model):
    roadmap = models.ForeignKey(Roadmap, on_delete=models.CASCADE, related_name="stages")
    stage_id = models.CharField(max_length=64)
    name = models.CharField(max_length=200)
    order = models.PositiveIntegerField()

    class Meta:
        ordering = ["order"]
        constraints = [
            models.UniqueConstraint(fields=["roadmap", "stage_id"], name="unique_stage_id"),
        ]

    def __str__(self) -> str:
        return self.name


class Module(models.Model):
    stage = models.ForeignKey(Stage, on_delete=models.CASCADE, related_name="modules")
    module_id = models.CharField(max_length=64)
    name = models.CharField(max_length=200)
    order = models.PositiveIntegerField()

    class Meta:
        ordering = ["order"]

    def __str__(self) -> str:
        return self.name


class Concept(models.Model):
    roadmap = models.ForeignKey(Roadmap, on_delete=models.CASCADE, related_name="concepts")
    module = models.ForeignKey(Module, on_delete=models.CASCADE, related_name="concepts")
    concept_id = models.CharField(max_length=64)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True, default="")
    order = models.PositiveIntegerField()

    class Meta:
        ordering = ["order"]
        constraints = [
            models.UniqueConstraint(fields=["roadmap", "concept_id"], name="unique_concept_id"),
        ]

    def __str__(self) -> str:
        return self.name


def lease_expired(now: datetime) -> models.Q:
    """The expiry condition, as a Q for the queries that combine it with others
    (a start's claim); everything else filters with `ConceptContent.objects.expired`."""
    return models.Q(status=ContentStatus.GENERATING, lease_expires_at__lt=now)


class ConceptContentQuerySet(models.QuerySet):
    """The fence every generation transition writes through (I1, I4)."""

    def held_by(self, attempt_id) -> "ConceptContentQuerySet":
        """Rows still `generating` under this attempt. A row another attempt took
        over, or that an operator reset, no longer matches, so a superseded
        attempt's write changes nothing."""
        return self.filter(status=ContentStatus.GENERATING, attempt_id=attempt_id)

    def expired(self, now: datetime) -> "ConceptContentQuerySet":
        """Rows `generating` whose lease ran out before `now`: no live attempt
        vouches for them any more, so a start may take them over and the sweep
        fails them (I3)."""
        return self.filter(lease_expired(now))

    def release(self, *, status: str, **fields) -> int:
        """End the attempt holding these rows: set `status` (and `fields`) and clear
        the attempt and its lease, in one conditional UPDATE. Returns the row count."""
        return self.update(
            status=status,
            attempt_id=None,
            lease_expires_at=None,
            updated_at=timezone.now(),
            **fields,
        )


class ConceptContent(models.Model):
    """One (concept, content type) pair. The last completed version's fields
    (version, content_ref, summary, payload) change only on completion, so they
    stay readable while a regeneration runs or after it fails (I9).

    `status`, `attempt_id`, `task_id` and `lease_expires_at` are written only by
    generation.state (the state machine)."""

    concept = models.ForeignKey(Concept, on_delete=models.CASCADE, related_name="contents")
    roadmap = models.ForeignKey(Roadmap, on_delete=models.CASCADE, related_name="contents")
    content_type = models.CharField(max_length=16, choices=ContentType.choices)
    status = models.CharField(
        max_length=16, choices=ContentStatus.choices, default=ContentStatus.PENDING
    )
    # Last completed version.
    version = models.PositiveIntegerField(default=0)
    title = models.CharField(max_length=300, blank=True, default="")
    content_ref = models.CharField(max_length=500, blank=True, default="")
    summary = models.TextField(blank=True, default="")
    payload = models.JSONField(default=dict, blank=True)
    model = models.CharField(max_length=100, blank=True, default="")
    provider = models.CharField(max_length=64, blank=True, default="")
    # What writing the last completed version took, all its attempt's requests.
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    generated_at = models.DateTimeField(null=True, blank=True)
    # Current or last attempt.
    public_error = models.CharField(max_length=300, blank=True, default="")
    task_id = models.CharField(max_length=64, blank=True, default="", db_index=True)
    attempt_id = models.UUIDField(null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ConceptContentQuerySet.as_manager()

    class Meta:
        ordering = ["concept__order", "content_type"]
        verbose_name = "concept content"
        constraints = [
            models.UniqueConstraint(fields=["concept", "content_type"], name="unique_content"),
            models.CheckConstraint(
                condition=models.Q(status__in=ContentStatus.values), name="content_status_valid"
            ),
            models.CheckConstraint(
                condition=models.Q(content_type__in=ContentType.values),
                name="content_type_valid",
            ),
            models.CheckConstraint(
                condition=~models.Q(status=ContentStatus.GENERATING)
                | models.Q(attempt_id__isnull=False, lease_expires_at__isnull=False),
                name="generating_has_attempt_and_lease",
            ),
        ]
        indexes = [
            models.Index(fields=["roadmap", "content_type", "status"]),
            models.Index(fields=["status", "lease_expires_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.concept} · {self.content_type}"
