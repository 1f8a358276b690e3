"""Input and output shapes of the roadmap API (DESIGN §4).

Input serializers validate a framework completely before anything is written, so
`roadmaps.services.create_roadmap` only ever sees a well-formed tree. Output
serializers read a roadmap prefetched by `roadmaps.selectors.roadmap_detail`."""

from dataclasses import dataclass

from django.conf import settings
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from roadmaps.models import Concept, ConceptContent, ContentStatus, ContentType
from roadmaps.selectors import content_url

CONCEPT_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"


class StringOnlyMixin:
    """Refuses numbers and booleans instead of coercing them to text: a name sent
    as `42` is a client bug worth a 400."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("not_a_string")
        return super().to_internal_value(data)


class StrictCharField(StringOnlyMixin, serializers.CharField):
    default_error_messages = {"not_a_string": "Must be a string."}


class ConceptIdField(StringOnlyMixin, serializers.RegexField):
    default_error_messages = {
        "not_a_string": "Must be a string.",
        "invalid": "concept_id must match [A-Za-z0-9_-]{1,64}.",
    }

    def __init__(self, **kwargs) -> None:
        super().__init__(CONCEPT_ID_PATTERN, **kwargs)


# Name and description limits are fixed settings (they match the model columns), so
# they are read once here and appear in the OpenAPI schema; the size limits (stages,
# modules, concepts) come from the environment and are read per request.
def name_field(**kwargs) -> StrictCharField:
    return StrictCharField(max_length=settings.ROADMAP_MAX_NAME_LENGTH, **kwargs)


def description_field(**kwargs) -> StrictCharField:
    return StrictCharField(
        max_length=settings.ROADMAP_MAX_DESCRIPTION_LENGTH,
        required=False,
        allow_blank=True,
        default="",
        **kwargs,
    )


class PreferencesSerializer(serializers.Serializer):
    """Generation preferences (language, level, style, focus); unknown keys are
    rejected so a typo never silently changes nothing."""

    language = StrictCharField(max_length=35, required=False)
    level = StrictCharField(max_length=50, required=False)
    style = StrictCharField(max_length=200, required=False)
    focus = StrictCharField(max_length=500, required=False)

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                allowed = ", ".join(self.fields)
                raise serializers.ValidationError(
                    {key: [f"Unknown preference; allowed: {allowed}."] for key in unknown}
                )
        return super().to_internal_value(data)


class ConceptInputSerializer(serializers.Serializer):
    concept_id = ConceptIdField(
        required=False, help_text="Unique within the roadmap; generated when omitted."
    )
    name = name_field()
    description = description_field()


class ModuleInputSerializer(serializers.Serializer):
    name = name_field()
    concepts = ConceptInputSerializer(many=True, required=False, default=list)


class StageInputSerializer(serializers.Serializer):
    name = name_field()
    modules = ModuleInputSerializer(many=True, required=False, default=list)


def refuse_oversized(stages) -> None:
    """Raise a 400 naming the limit when the raw framework has more stages, modules
    or concepts than the settings allow. Items of the wrong type are not counted:
    validation refuses them next, and the counts bound how much of it runs."""
    stages = stages if isinstance(stages, list) else []
    modules = [
        module
        for stage in stages
        if isinstance(stage, dict) and isinstance(stage.get("modules"), list)
        for module in stage["modules"]
    ]
    concepts = sum(
        len(module["concepts"])
        for module in modules
        if isinstance(module, dict) and isinstance(module.get("concepts"), list)
    )
    for key, count, limit in (
        ("stages", len(stages), settings.ROADMAP_MAX_STAGES),
        ("modules", len(modules), settings.ROADMAP_MAX_MODULES),
        ("concepts", concepts, settings.ROADMAP_MAX_CONCEPTS),
    ):
        if count > limit:
            raise serializers.ValidationError(
                {key: [f"A roadmap has at most {limit} {key}; this one has {count}."]}
            )


class FrameworkInputSerializer(serializers.Serializer):
    """stages -> modules -> concepts. Stage and module ids are assigned by the
    server; concept ids may be supplied and must be unique within the roadmap."""

    stages = StageInputSerializer(
        many=True,
        allow_empty=False,
        help_text="A roadmap has at most ROADMAP_MAX_STAGES stages, ROADMAP_MAX_MODULES "
        "modules and ROADMAP_MAX_CONCEPTS concepts in all (by default 50, 200 and 500).",
    )

    def to_internal_value(self, data):
        """Counts the tree on the raw input first: a 1 MB body holds some 80,000
        stages, and validating each one would cost seconds before refusing them."""
        if isinstance(data, dict):
            refuse_oversized(data.get("stages"))
        return super().to_internal_value(data)

    def validate(self, data: dict) -> dict:
        concepts = [
            concept
            for stage in data["stages"]
            for module in stage["modules"]
            for concept in module["concepts"]
        ]
        if not concepts:
            raise serializers.ValidationError(
                {"concepts": ["A roadmap needs at least one concept."]}
            )
        seen: set[str] = set()
        duplicates: list[str] = []
        for concept in concepts:
            concept_id = concept.get("concept_id")
            if concept_id is None:
                continue
            if concept_id in seen and concept_id not in duplicates:
                duplicates.append(concept_id)
            seen.add(concept_id)
        if duplicates:
            raise serializers.ValidationError(
                {
                    "concept_id": [
                        f"concept_id must be unique within the roadmap; repeated: "
                        f"{', '.join(duplicates)}."
                    ]
                }
            )
        return data


class RoadmapCreateSerializer(serializers.Serializer):
    title = name_field()
    goal = description_field()
    preferences = PreferencesSerializer(required=False, default=dict)
    framework = FrameworkInputSerializer()
    generate = serializers.BooleanField(
        required=False,
        default=False,
        help_text="Also start generating every content; the answer then carries task_id.",
    )


# --- Output -----------------------------------------------------------------


@extend_schema_field(
    {
        "type": "object",
        "description": "{content_type: {status: count}}, every type and status present.",
        "additionalProperties": {"type": "object", "additionalProperties": {"type": "integer"}},
    }
)
class StatusCountsField(serializers.Field):
    """Read from the serializer context: counted for a whole page in one query."""

    def __init__(self, **kwargs) -> None:
        super().__init__(source="pk", read_only=True, **kwargs)

    def to_representation(self, roadmap_id) -> dict[str, dict[str, int]]:
        return self.context["status_counts"][roadmap_id]


class ConceptTasksSerializer(serializers.Serializer):
    """The in-flight task per content type, so a reloaded page can resubscribe."""

    tutorial = serializers.CharField(allow_null=True)
    resources = serializers.CharField(allow_null=True)
    quiz = serializers.CharField(allow_null=True)


@dataclass(frozen=True)
class ConceptRow:
    """One concept with its three contents flattened into the field names the
    existing frontend reads (the tutorial's fields keep the `content_` prefix)."""

    concept_id: str
    name: str
    description: str
    content_status: str
    content_ref: str | None
    content_summary: str | None
    content_version: int
    resources_status: str
    resources_count: int
    quiz_status: str
    quiz_questions_count: int
    tasks: dict

    @classmethod
    def of(cls, concept: Concept) -> "ConceptRow":
        contents: dict[str, ConceptContent] = {c.content_type: c for c in concept.contents.all()}
        tutorial = contents[ContentType.TUTORIAL]
        resources = contents[ContentType.RESOURCES]
        quiz = contents[ContentType.QUIZ]
        return cls(
            concept_id=concept.concept_id,
            name=concept.name,
            description=concept.description,
            content_status=tutorial.status,
            content_ref=content_url(tutorial),
            content_summary=tutorial.summary if tutorial.version else None,
            content_version=tutorial.version,
            resources_status=resources.status,
            resources_count=len(resources.payload.get("items", [])),
            quiz_status=quiz.status,
            quiz_questions_count=len(quiz.payload.get("questions", [])),
            tasks={
                content_type: contents[content_type].task_id
                if contents[content_type].status == ContentStatus.GENERATING
                else None
                for content_type in ContentType.values
            },
        )


class ConceptDetailSerializer(serializers.Serializer):
    concept_id = serializers.CharField()
    name = serializers.CharField()
    description = serializers.CharField()
    content_status = serializers.ChoiceField(ContentStatus.choices)
    content_ref = serializers.CharField(allow_null=True, help_text="URL of the tutorial file.")
    content_summary = serializers.CharField(allow_null=True)
    content_version = serializers.IntegerField()
    resources_status = serializers.ChoiceField(ContentStatus.choices)
    resources_count = serializers.IntegerField()
    quiz_status = serializers.ChoiceField(ContentStatus.choices)
    quiz_questions_count = serializers.IntegerField()
    tasks = ConceptTasksSerializer()

    def to_representation(self, concept: Concept) -> dict:
        return super().to_representation(ConceptRow.of(concept))


class ModuleDetailSerializer(serializers.Serializer):
    module_id = serializers.CharField()
    name = serializers.CharField()
    order = serializers.IntegerField()
    concepts = ConceptDetailSerializer(many=True)


class StageDetailSerializer(serializers.Serializer):
    stage_id = serializers.CharField()
    name = serializers.CharField()
    order = serializers.IntegerField()
    modules = ModuleDetailSerializer(many=True)


class FrameworkDetailSerializer(serializers.Serializer):
    stages = StageDetailSerializer(many=True)


class RoadmapSummarySerializer(serializers.Serializer):
    """One roadmap in the list. Needs `status_counts` in the context
    (roadmaps.selectors.status_counts for the page's roadmap ids)."""

    roadmap_id = serializers.UUIDField(source="pk")
    title = serializers.CharField()
    goal = serializers.CharField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()
    status_counts = StatusCountsField()


class RoadmapDetailSerializer(RoadmapSummarySerializer):
    """The whole tree; the roadmap must come from roadmaps.selectors.roadmap_detail
    (prefetched), or this costs queries per stage, module and concept."""

    framework = FrameworkDetailSerializer(source="*")


class RoadmapCreatedSerializer(RoadmapDetailSerializer):
    """The detail, plus the task started by `"generate": true` (absent otherwise)."""

    # Not read-only: drf-spectacular marks read-only fields required in answers.
    task_id = serializers.CharField(required=False)
