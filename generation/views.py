"""Generation endpoints (DESIGN §4): DRF viewsets whose actions call
generation.services and answer with generation.serializers."""

from django.utils import timezone
from django.utils.translation import gettext as _
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from generation import budgets, selectors, services, usage_report
from generation.errors import NotGeneratedYet
from generation.models import GenerationTask
from generation.serializers import (
    CONTENT_SCHEMA,
    CONTENT_SERIALIZERS,
    BatchInputSerializer,
    BatchStartedSerializer,
    CancelConflictSerializer,
    CancelledSerializer,
    ContentMissingSerializer,
    DraftSerializer,
    NothingToDoSerializer,
    RetryAnswerSerializer,
    RetryInputSerializer,
    TaskSerializer,
)
from generation.usage_serializers import UsageQuerySerializer, UsageSerializer
from notifications.selectors import stream_events
from roadmap_project.errors import (
    NOT_FOUND,
    RETRY_AFTER,
    THROTTLED,
    UNAUTHENTICATED,
    error_response,
    validation_error_response,
)
from roadmap_project.throttling import GenerationRateThrottle
from roadmaps.models import ConceptContent, ContentType, Roadmap
from roadmaps.serializers import CONCEPT_ID_PATTERN

UUID_PATTERN = r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}"
# Concept ids and task ids share one grammar (DESIGN §4).
ID_PATTERN = CONCEPT_ID_PATTERN.strip("^$")
CONCEPT_PREFIX = rf"roadmaps/(?P<roadmap_id>{UUID_PATTERN})/concepts/(?P<concept_id>{ID_PATTERN})"
# Events per task poll; a client pages on with ?after=<last seq>.
TASK_EVENTS_PAGE = 1000

ROADMAP_ID = OpenApiParameter("roadmap_id", OpenApiTypes.UUID, OpenApiParameter.PATH)
CONCEPT_ID = OpenApiParameter("concept_id", str, OpenApiParameter.PATH, pattern=CONCEPT_ID_PATTERN)
CONTENT_TYPE = OpenApiParameter("content_type", str, OpenApiParameter.PATH, enum=ContentType.values)
TASK_ID = OpenApiParameter("task_id", str, OpenApiParameter.PATH, pattern=CONCEPT_ID_PATTERN)

# What every endpoint that starts or stops work may also answer.
COMMON_ERRORS = {401: UNAUTHENTICATED, 404: NOT_FOUND, 429: THROTTLED}


def started_batch(result: services.StartResult, *, message: str) -> Response:
    """202 with the new task, or 200 when the selection left nothing to start."""
    skipped = [vars(skip) for skip in result.skipped]
    if result.task is None:
        body = {"task_id": None, "total": 0, "skipped": skipped}
        return Response(
            NothingToDoSerializer(
                {"success": True, "message": _("Nothing to generate."), "data": body}
            ).data
        )
    body = {"task_id": result.task.pk, "total": result.task.total, "skipped": skipped}
    return Response(
        BatchStartedSerializer({"success": True, "message": message, "data": body}).data,
        status=status.HTTP_202_ACCEPTED,
    )


@extend_schema(parameters=[ROADMAP_ID, CONCEPT_ID, CONTENT_TYPE])
class ContentViewSet(viewsets.GenericViewSet):
    """One (concept, content type) pair: its last completed version, and its
    retry. The content type is the lookup, so one action serves all three."""

    lookup_url_kwarg = "content_type"
    lookup_value_regex = "|".join(ContentType.values)
    queryset = ConceptContent.objects.none()  # for the schema; requests use get_object()

    def get_object(self) -> ConceptContent:
        return selectors.content_for(
            roadmap_id=self.kwargs["roadmap_id"],
            concept_id=self.kwargs["concept_id"],
            content_type=self.kwargs["content_type"],
            user=self.request.user,
        )

    @extend_schema(
        summary="The last completed version of one content",
        responses={
            200: CONTENT_SCHEMA,
            401: UNAUTHENTICATED,
            404: OpenApiResponse(
                ContentMissingSerializer,
                description="Unknown or not yours, or no version was completed yet, or "
                "storage lost the tutorial's file (then `status` is the content's current "
                "status).",
            ),
        },
    )
    def retrieve(self, request: Request, **kwargs) -> Response:
        content = self.get_object()
        if content.version == 0:
            raise NotGeneratedYet(content.status)
        return Response(CONTENT_SERIALIZERS[content.content_type](content).data)

    @extend_schema(
        summary="What the model has written so far of a generating content",
        responses={
            200: DraftSerializer,
            401: UNAUTHENTICATED,
            404: OpenApiResponse(
                ContentMissingSerializer,
                description="Unknown or not yours, or not generating (then `status` is "
                "the content's current status).",
            ),
        },
    )
    @action(detail=True, methods=["get"])
    def draft(self, request: Request, **kwargs) -> Response:
        return Response(DraftSerializer(selectors.draft_of(self.get_object())).data)

    @extend_schema(
        summary="Regenerate one content (tutorial, resources or quiz)",
        request=RetryInputSerializer,
        parameters=[RETRY_AFTER],
        responses={
            202: OpenApiResponse(
                RetryAnswerSerializer, description="Started: the status is `generating`."
            ),
            409: OpenApiResponse(
                RetryAnswerSerializer,
                description="Already generating: `data.task_id` is the task in flight.",
            ),
            400: validation_error_response(),
            **COMMON_ERRORS,
        },
    )
    @action(detail=True, methods=["post"], throttle_classes=[GenerationRateThrottle])
    def retry(self, request: Request, **kwargs) -> Response:
        content = self.get_object()
        payload = RetryInputSerializer(data=request.data or {})
        payload.is_valid(raise_exception=True)
        result = services.retry_content(
            content=content,
            user=request.user,
            preferences=payload.validated_data.get("preferences"),
        )
        answer = {
            "success": True,
            "concept_id": content.concept.concept_id,
            "content_type": content.content_type,
            "message": _("%(type)s regeneration started")
            % {"type": content.content_type.capitalize()},
            "data": {"task_id": result.task.pk},
        }
        return Response(RetryAnswerSerializer(answer).data, status=status.HTTP_202_ACCEPTED)


def batch_responses(*, errors: dict) -> dict:
    return {
        202: BatchStartedSerializer,
        200: OpenApiResponse(
            NothingToDoSerializer,
            description="Nothing to start: `task_id` is null (pairs already generating are "
            "listed in `skipped`).",
        ),
        **errors,
    }


@extend_schema(parameters=[ROADMAP_ID, RETRY_AFTER])
class RoadmapGenerationViewSet(viewsets.GenericViewSet):
    """Work on a whole roadmap. Routed under the same prefix as roadmaps'
    RoadmapViewSet, which never imports generation."""

    lookup_url_kwarg = "roadmap_id"
    lookup_value_regex = UUID_PATTERN
    throttle_classes = [GenerationRateThrottle]
    queryset = Roadmap.objects.none()  # for the schema; requests use get_object()

    def get_object(self) -> Roadmap:
        return selectors.roadmap_for(roadmap_id=self.kwargs["roadmap_id"], user=self.request.user)

    @extend_schema(
        summary="Retry a selection of a roadmap's contents (default: every failed one)",
        request=BatchInputSerializer,
        responses=batch_responses(errors={400: validation_error_response(), **COMMON_ERRORS}),
    )
    @action(detail=True, methods=["post"], url_path="concepts/retry-batch")
    def retry_batch(self, request: Request, **kwargs) -> Response:
        roadmap = self.get_object()
        payload = BatchInputSerializer(data=request.data or {})
        payload.is_valid(raise_exception=True)
        result = services.retry_batch(roadmap=roadmap, user=request.user, **payload.validated_data)
        return started_batch(result, message=_("Batch regeneration started"))

    @extend_schema(
        summary="Generate every pending content of a roadmap",
        request=None,
        responses=batch_responses(errors=COMMON_ERRORS),
    )
    @action(detail=True, methods=["post"])
    def generate(self, request: Request, **kwargs) -> Response:
        result = services.generate_roadmap(roadmap=self.get_object(), user=request.user)
        return started_batch(result, message=_("Roadmap generation started"))


@extend_schema(parameters=[TASK_ID])
class TaskViewSet(viewsets.GenericViewSet):
    """A task: the polling fallback for its event stream, and its cancel."""

    lookup_url_kwarg = "task_id"
    lookup_value_regex = ID_PATTERN
    queryset = GenerationTask.objects.none()  # for the schema; requests use selectors

    @extend_schema(
        summary="A task with its items and events (the polling fallback)",
        parameters=[
            OpenApiParameter(
                "after", int, description="Only events with seq above (pages of 1,000)"
            )
        ],
        responses={
            200: TaskSerializer,
            400: validation_error_response(),
            401: UNAUTHENTICATED,
            404: NOT_FOUND,
        },
    )
    def retrieve(self, request: Request, **kwargs) -> Response:
        task = selectors.task_for(task_id=self.kwargs["task_id"], user=request.user)
        after = request.query_params.get("after", "0")
        if not (after.isascii() and after.isdigit()):
            raise ValidationError({"after": ["Must be a non-negative integer."]})
        events = stream_events(stream=task.pk, after=int(after))[:TASK_EVENTS_PAGE]
        task = type(task).objects.prefetch_related("items__content__concept").get(pk=task.pk)
        return Response(TaskSerializer(task, context={"events": events}).data)

    @extend_schema(
        summary="Cancel a running task",
        request=None,
        parameters=[RETRY_AFTER],
        responses={
            202: CancelledSerializer,
            409: OpenApiResponse(CancelConflictSerializer, description="Already finished."),
            **COMMON_ERRORS,
        },
    )
    @action(detail=True, methods=["post"], throttle_classes=[GenerationRateThrottle])
    def cancel(self, request: Request, **kwargs) -> Response:
        task = services.cancel_task(task_id=self.kwargs["task_id"], user=request.user)
        cancelled = {"success": True, "data": {"task_id": task.pk, "status": task.status}}
        return Response(CancelledSerializer(cancelled).data, status=status.HTTP_202_ACCEPTED)


class UsageViewSet(viewsets.ViewSet):
    """What the requesting user's generations used (staff: anyone's, with `user=`),
    from generation.usage_report."""

    @extend_schema(
        summary="Tokens and cost of your generations over a period, and today's budget",
        parameters=[UsageQuerySerializer],
        responses={
            200: UsageSerializer,
            400: validation_error_response(
                "A malformed date, `until` before `since`, a period over "
                f"{usage_report.MAX_DAYS} days, or an unknown `group_by`."
            ),
            401: UNAUTHENTICATED,
            404: error_response("`user` names someone else and you are not staff, or nobody."),
        },
    )
    def list(self, request: Request) -> Response:
        query = UsageQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        subject = usage_report.usage_subject(
            requester=request.user, username=query.validated_data.get("user")
        )
        report = usage_report.usage_report(
            since=query.validated_data["since"],
            until=query.validated_data["until"],
            group_by=query.validated_data.get("group_by"),
            user=subject,
        )
        budget = budgets.budget_for(subject, now=timezone.now())
        return Response(UsageSerializer(vars(report) | {"budget": budget}).data)
