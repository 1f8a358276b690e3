"""Input and output shapes of the generation API (DESIGN §4). Every answer a
generation endpoint gives is declared here (GET /usage/'s in
generation.usage_serializers), so the OpenAPI schema types it."""

from drf_spectacular.utils import (
    PolymorphicProxySerializer,
    extend_schema_field,
)
from pydantic import RootModel
from rest_framework import serializers

from generation import events
from generation.models import GenerationItem, GenerationTask, ItemState, TaskStatus, ws_url
from generation.schemas import Question, Resource
from generation.tutorial_files import read_tutorial
from roadmaps.models import ConceptContent, ContentStatus, ContentType
from roadmaps.selectors import content_url
from roadmaps.serializers import PreferencesSerializer


class StrictSerializer(serializers.Serializer):
    """Rejects unknown top-level fields instead of silently ignoring them."""

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({field: ["Unknown field."] for field in unknown})
        return super().to_internal_value(data)


class RetryInputSerializer(StrictSerializer):
    preferences = PreferencesSerializer(required=False)


class BatchInputSerializer(StrictSerializer):
    concept_ids = serializers.ListField(
        child=serializers.RegexField(r"^[A-Za-z0-9_-]{1,64}$"), required=False, max_length=5000
    )
    content_types = serializers.ListField(
        child=serializers.ChoiceField(ContentType.choices), required=False
    )
    statuses = serializers.ListField(
        child=serializers.ChoiceField(ContentStatus.choices), required=False
    )
    preferences = PreferencesSerializer(required=False)


# --- Starting work ------------------------------------------------------------


class StartedTaskSerializer(serializers.Serializer):
    """The task now generating a pair (or the one already generating it)."""

    task_id = serializers.CharField()
    status = serializers.ChoiceField(ContentStatus.choices, default=ContentStatus.GENERATING)
    ws_url = serializers.SerializerMethodField()

    def get_ws_url(self, task) -> str:
        return ws_url(task["task_id"])


class AnswerSerializer(serializers.Serializer):
    """The envelope of every answer that starts work: whether it started, a
    human message in the request's language, and `data`."""

    success = serializers.BooleanField()
    message = serializers.CharField()


class RetryAnswerSerializer(AnswerSerializer):
    """202 when the retry started, 409 (`success: false`) when the pair was
    already generating: `data.task_id` then names the task in flight."""

    concept_id = serializers.CharField()
    content_type = serializers.ChoiceField(ContentType.choices)
    data = StartedTaskSerializer()


class SkippedSerializer(serializers.Serializer):
    concept_id = serializers.CharField()
    content_type = serializers.ChoiceField(ContentType.choices)
    reason = serializers.CharField()


class StartedBatchSerializer(StartedTaskSerializer):
    total = serializers.IntegerField(help_text="Pairs the task generates.")
    skipped = SkippedSerializer(many=True)


class BatchStartedSerializer(AnswerSerializer):
    """202: a batch or whole-roadmap task started."""

    data = StartedBatchSerializer()


class NothingStartedSerializer(serializers.Serializer):
    task_id = serializers.CharField(allow_null=True, help_text="Always null: no task started.")
    total = serializers.IntegerField(help_text="Always 0.")
    skipped = SkippedSerializer(many=True)


class NothingToDoSerializer(AnswerSerializer):
    """200: the selection was empty, or every pair in it was already generating."""

    data = NothingStartedSerializer()


# --- Tasks ----------------------------------------------------------------------


class TaskStateSerializer(serializers.Serializer):
    task_id = serializers.CharField()
    status = serializers.ChoiceField(TaskStatus.choices)


class CancelledSerializer(serializers.Serializer):
    """202: the task is cancelled."""

    success = serializers.BooleanField()
    data = TaskStateSerializer()


class TaskRefSerializer(serializers.Serializer):
    task_id = serializers.CharField()


class CancelConflictSerializer(serializers.Serializer):
    """409: the task had already finished; nothing changed."""

    success = serializers.BooleanField()
    detail = serializers.CharField()
    data = TaskRefSerializer()


class TaskItemSerializer(serializers.ModelSerializer):
    concept_id = serializers.CharField(source="content.concept.concept_id")
    content_type = serializers.CharField(source="content.content_type")
    status = serializers.ChoiceField(ItemState.choices, source="state")

    class Meta:
        model = GenerationItem
        fields = ["concept_id", "content_type", "status"]


class EventSerializer(serializers.Serializer):
    """A stored event (DESIGN §5, docs/event.schema.json). Every event has these
    fields; each type adds its own (concept_id, progress, data, error, summary …)."""

    type = serializers.CharField()
    id = serializers.IntegerField()
    seq = serializers.IntegerField(allow_null=True)
    task_id = serializers.CharField(allow_null=True)
    roadmap_id = serializers.UUIDField()
    timestamp = serializers.DateTimeField()
    message = serializers.CharField()

    def to_representation(self, event) -> dict:
        return event.as_message()


class TaskSerializer(serializers.ModelSerializer):
    """The polling fallback: the task, its items and its events after `?after=`.
    `events` comes from the context (a page of notifications.selectors.stream_events)."""

    task_id = serializers.CharField(source="id")
    roadmap_id = serializers.UUIDField()
    items = TaskItemSerializer(many=True)
    events = serializers.SerializerMethodField()
    ws_url = serializers.SerializerMethodField()

    class Meta:
        model = GenerationTask
        fields = [
            "task_id",
            "kind",
            "roadmap_id",
            "status",
            "total",
            "completed",
            "failed",
            "cancelled",
            "created_at",
            "finished_at",
            "ws_url",
            "items",
            "events",
        ]

    @extend_schema_field(EventSerializer(many=True))
    def get_events(self, task) -> list[dict]:
        return EventSerializer(self.context["events"], many=True).data

    def get_ws_url(self, task) -> str:
        return ws_url(task.id)


# --- Content ----------------------------------------------------------------------


class ResourceItems(RootModel[list[Resource]]):
    """The schema of `items`: the provider's validated output, as stored."""


class DraftItems(RootModel[list[Resource | Question]]):
    """The schema of a draft's `items`: resources or questions, validated one by one."""


class QuizQuestions(RootModel[list[Question]]):
    """The schema of `questions`: the provider's validated output, as stored."""


class ContentPublicIdField(serializers.CharField):
    """`tutorial_id`, `resources_id` or `quiz_id`: names one completed version."""

    def __init__(self, **kwargs) -> None:
        super().__init__(source="*", read_only=True, **kwargs)

    def to_representation(self, content: ConceptContent) -> str:
        return events.content_public_id(content)


class ContentVersionSerializer(serializers.ModelSerializer):
    """The fields every content type's last completed version shares."""

    content_version = serializers.IntegerField(source="version")

    class Meta:
        model = ConceptContent
        fields = [
            "content_version",
            "generated_at",
            "provider",
            "model",
            "prompt_tokens",
            "completion_tokens",
        ]
        extra_kwargs = {
            "provider": {"help_text": "The configured provider that wrote this version."},
            "prompt_tokens": {
                "help_text": "Prompt tokens of every request of the attempt that wrote it."
            },
            "completion_tokens": {
                "help_text": "Completion tokens of every request of the attempt that wrote it."
            },
        }


class TutorialSerializer(ContentVersionSerializer):
    tutorial_id = ContentPublicIdField()
    content_url = serializers.SerializerMethodField()
    markdown = serializers.SerializerMethodField()

    class Meta(ContentVersionSerializer.Meta):
        fields = [
            "tutorial_id",
            "title",
            "summary",
            "content_url",
            "markdown",
            *ContentVersionSerializer.Meta.fields,
        ]

    def get_content_url(self, content) -> str | None:
        return content_url(content)

    def get_markdown(self, content) -> str:
        return read_tutorial(content)


class ResourcesSerializer(ContentVersionSerializer):
    resources_id = ContentPublicIdField()
    items = serializers.SerializerMethodField()

    class Meta(ContentVersionSerializer.Meta):
        fields = ["resources_id", "items", *ContentVersionSerializer.Meta.fields]

    @extend_schema_field(ResourceItems)
    def get_items(self, content) -> list[dict]:
        return content.payload.get("items", [])


class QuizSerializer(ContentVersionSerializer):
    quiz_id = ContentPublicIdField()
    questions = serializers.SerializerMethodField()

    class Meta(ContentVersionSerializer.Meta):
        fields = ["quiz_id", "questions", *ContentVersionSerializer.Meta.fields]

    @extend_schema_field(QuizQuestions)
    def get_questions(self, content) -> list[dict]:
        return content.payload.get("questions", [])


CONTENT_SERIALIZERS = {
    ContentType.TUTORIAL: TutorialSerializer,
    ContentType.RESOURCES: ResourcesSerializer,
    ContentType.QUIZ: QuizSerializer,
}

CONTENT_SCHEMA = PolymorphicProxySerializer(
    component_name="Content",
    serializers=list(CONTENT_SERIALIZERS.values()),
    resource_type_field_name=None,
)


class ContentMissingSerializer(serializers.Serializer):
    """404 of a pair that never completed, or whose tutorial file storage lost: its
    current status says why. An unknown pair (or not yours) answers the plain
    `{"detail"}` without `status`."""

    detail = serializers.CharField()
    status = serializers.ChoiceField(ContentStatus.choices, required=False)


@extend_schema_field(DraftItems)
class DraftItemsField(serializers.ListField):
    """A draft's complete items: resources or questions, as validated."""


class DraftSerializer(serializers.Serializer):
    """What the model has written so far (DESIGN §4 "Live draft"): `text` for a
    tutorial, `items` (resources or questions) otherwise; `offset` is their length."""

    status = serializers.ChoiceField([ContentStatus.GENERATING])
    task_id = serializers.CharField()
    attempt_id = serializers.UUIDField()
    provider = serializers.CharField()
    model = serializers.CharField()
    offset = serializers.IntegerField(min_value=0)
    text = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False)
    items = DraftItemsField(required=False)

    def to_representation(self, draft: dict) -> dict:
        """`text` or `items`, whichever the content type has, never both."""
        representation = super().to_representation(draft)
        return {key: value for key, value in representation.items() if key in draft}


# --- Usage -------------------------------------------------------------------------
