"""Generation endpoints (DESIGN §4): thin views over generation.actions."""

from django.utils.translation import gettext as _
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from generation import actions, selectors, state
from generation.serializers import (
    CONTENT_SERIALIZERS,
    BatchInputSerializer,
    RetryInputSerializer,
    TaskSerializer,
    ws_url,
)
from generation.throttling import GenerationRateThrottle
from notifications.selectors import stream_events
from roadmaps.models import ContentStatus

# Events per task poll; a client pages on with ?after=<last seq>.
TASK_EVENTS_PAGE = 1000


class ThrottledGenerationView(APIView):
    """Starting and stopping work is throttled per user (RETRY_THROTTLE_RATE)."""

    throttle_classes = [GenerationRateThrottle]
    throttle_scope = "generation"


def _task_data(task_id: str, **extra) -> dict:
    return {
        "task_id": task_id,
        "status": ContentStatus.GENERATING,
        "ws_url": ws_url(task_id),
        **extra,
    }


class RetryContentView(ThrottledGenerationView):
    """One action for tutorial, resources and quiz: regenerate one pair."""

    @extend_schema(request=RetryInputSerializer, responses={202: dict, 409: dict})
    def post(self, request, roadmap_id, concept_id, content_type):
        roadmap = selectors.roadmap_for(roadmap_id=roadmap_id, user=request.user)
        content = selectors.content_for(
            roadmap=roadmap, concept_id=concept_id, content_type=content_type
        )
        payload = RetryInputSerializer(data=request.data or {})
        payload.is_valid(raise_exception=True)
        identity = {"concept_id": concept_id, "content_type": content_type}
        try:
            result = actions.retry_content(
                content=content,
                user=request.user,
                preferences=payload.validated_data.get("preferences"),
            )
        except state.AlreadyGenerating as busy:
            return Response(
                {
                    "success": False,
                    **identity,
                    "message": _("This content is already being generated."),
                    "data": _task_data(busy.task_id),
                },
                status=status.HTTP_409_CONFLICT,
            )
        return Response(
            {
                "success": True,
                **identity,
                "message": _("%(type)s regeneration started") % {"type": content_type.capitalize()},
                "data": _task_data(result.task.pk),
            },
            status=status.HTTP_202_ACCEPTED,
        )


def _batch_response(result: state.StartResult, *, message: str) -> Response:
    skipped = [vars(skip) for skip in result.skipped]
    if result.task is None:
        return Response(
            {
                "success": True,
                "message": _("Nothing to generate."),
                "data": {"task_id": None, "total": 0, "skipped": skipped},
            },
            status=status.HTTP_200_OK,
        )
    return Response(
        {
            "success": True,
            "message": message,
            "data": _task_data(result.task.pk, total=result.task.total, skipped=skipped),
        },
        status=status.HTTP_202_ACCEPTED,
    )


class RetryBatchView(ThrottledGenerationView):
    @extend_schema(request=BatchInputSerializer, responses={202: dict, 200: dict})
    def post(self, request, roadmap_id):
        roadmap = selectors.roadmap_for(roadmap_id=roadmap_id, user=request.user)
        payload = BatchInputSerializer(data=request.data or {})
        payload.is_valid(raise_exception=True)
        try:
            result = actions.retry_batch(
                roadmap=roadmap, user=request.user, **payload.validated_data
            )
        except actions.SelectionTooLarge as too_large:
            raise ValidationError({"detail": str(too_large)}) from too_large
        return _batch_response(result, message=_("Batch regeneration started"))


class GenerateRoadmapView(ThrottledGenerationView):
    @extend_schema(request=None, responses={202: dict, 200: dict})
    def post(self, request, roadmap_id):
        roadmap = selectors.roadmap_for(roadmap_id=roadmap_id, user=request.user)
        result = actions.start_roadmap_generation(roadmap=roadmap, user=request.user)
        return _batch_response(result, message=_("Roadmap generation started"))


class ContentView(APIView):
    """The last completed version of one pair; 404 with the current status if none."""

    @extend_schema(responses={200: dict, 404: dict})
    def get(self, request, roadmap_id, concept_id, content_type):
        roadmap = selectors.roadmap_for(roadmap_id=roadmap_id, user=request.user)
        content = selectors.content_for(
            roadmap=roadmap, concept_id=concept_id, content_type=content_type
        )
        if content.version == 0:
            return Response(
                {
                    "detail": _("No version of this content has been generated yet."),
                    "status": content.status,
                },
                status=status.HTTP_404_NOT_FOUND,
            )
        return Response(CONTENT_SERIALIZERS[content_type](content).data)


class TaskView(APIView):
    """Polling fallback for the event stream."""

    @extend_schema(
        parameters=[OpenApiParameter("after", int, description="Only events with seq above")],
        responses=TaskSerializer,
    )
    def get(self, request, task_id):
        task = selectors.task_for(task_id=task_id, user=request.user)
        after = request.query_params.get("after", "0")
        if not (after.isascii() and after.isdigit()):
            raise ValidationError({"after": ["Must be a non-negative integer."]})
        events = stream_events(stream=task.pk, after=int(after))[:TASK_EVENTS_PAGE]
        task = type(task).objects.prefetch_related("items__content__concept").get(pk=task.pk)
        return Response(TaskSerializer(task, context={"events": events}).data)


class CancelTaskView(ThrottledGenerationView):
    @extend_schema(request=None, responses={202: dict, 409: dict})
    def post(self, request, task_id):
        try:
            task = actions.cancel(task_id=task_id, user=request.user)
        except state.TaskNotRunning:
            return Response(
                {
                    "success": False,
                    "detail": _("The task has already finished."),
                    "data": {"task_id": task_id},
                },
                status=status.HTTP_409_CONFLICT,
            )
        return Response(
            {"success": True, "data": {"task_id": task.pk, "status": task.status}},
            status=status.HTTP_202_ACCEPTED,
        )
