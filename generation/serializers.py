"""Input and output shapes of the generation API (DESIGN §4)."""

from rest_framework import serializers

from generation import events
from generation.models import GenerationItem, GenerationTask
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


def ws_url(task_id: str) -> str:
    return f"/api/v1/ws/{task_id}"


class TaskItemSerializer(serializers.ModelSerializer):
    concept_id = serializers.CharField(source="content.concept.concept_id")
    content_type = serializers.CharField(source="content.content_type")
    status = serializers.CharField(source="state")

    class Meta:
        model = GenerationItem
        fields = ["concept_id", "content_type", "status"]


class TaskSerializer(serializers.ModelSerializer):
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

    def get_events(self, task) -> list[dict]:
        return [event.as_message() for event in self.context["events"]]

    def get_ws_url(self, task) -> str:
        return ws_url(task.id)


class TutorialSerializer(serializers.ModelSerializer):
    tutorial_id = serializers.SerializerMethodField()
    content_url = serializers.SerializerMethodField()
    content_version = serializers.IntegerField(source="version")
    markdown = serializers.SerializerMethodField()

    class Meta:
        model = ConceptContent
        fields = [
            "tutorial_id",
            "title",
            "summary",
            "content_url",
            "content_version",
            "markdown",
            "generated_at",
            "model",
        ]

    def get_tutorial_id(self, content) -> str:
        return events.content_public_id(content)

    def get_content_url(self, content) -> str | None:
        return content_url(content)

    def get_markdown(self, content) -> str:
        from django.core.files.storage import default_storage

        with default_storage.open(content.content_ref) as file:
            return file.read().decode()


class ResourcesSerializer(serializers.ModelSerializer):
    resources_id = serializers.SerializerMethodField()
    content_version = serializers.IntegerField(source="version")
    items = serializers.SerializerMethodField()

    class Meta:
        model = ConceptContent
        fields = ["resources_id", "content_version", "items", "generated_at", "model"]

    def get_resources_id(self, content) -> str:
        return events.content_public_id(content)

    def get_items(self, content) -> list[dict]:
        return content.payload.get("items", [])


class QuizSerializer(serializers.ModelSerializer):
    quiz_id = serializers.SerializerMethodField()
    content_version = serializers.IntegerField(source="version")
    questions = serializers.SerializerMethodField()

    class Meta:
        model = ConceptContent
        fields = ["quiz_id", "content_version", "questions", "generated_at", "model"]

    def get_quiz_id(self, content) -> str:
        return events.content_public_id(content)

    def get_questions(self, content) -> list[dict]:
        return content.payload.get("questions", [])


CONTENT_SERIALIZERS = {
    ContentType.TUTORIAL: TutorialSerializer,
    ContentType.RESOURCES: ResourcesSerializer,
    ContentType.QUIZ: QuizSerializer,
}
