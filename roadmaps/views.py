"""The roadmap API (DESIGN §4): thin views over roadmaps.services and
roadmaps.selectors."""

from drf_spectacular.utils import extend_schema, extend_schema_view, inline_serializer
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.exceptions import APIException, NotFound
from rest_framework.request import Request
from rest_framework.response import Response

from roadmap_project.errors import (
    NOT_FOUND,
    THROTTLED,
    UNAUTHENTICATED,
    error_response,
    validation_error_response,
)
from roadmap_project.throttling import (
    GenerationRateThrottle,
    LoginAddressThrottle,
    LoginUsernameThrottle,
)
from roadmaps import selectors, services
from roadmaps.models import Roadmap
from roadmaps.serializers import (
    RoadmapCreatedSerializer,
    RoadmapCreateSerializer,
    RoadmapDetailSerializer,
    RoadmapSummarySerializer,
)


class TokenView(ObtainAuthToken):
    """DRF's token login, documented with its real answer, throttled per username
    and per client address (AUTH_THROTTLE_RATE)."""

    throttle_classes = [LoginAddressThrottle, LoginUsernameThrottle]

    @extend_schema(
        summary="Exchange a username and password for an API token",
        auth=[],
        responses={
            200: inline_serializer("Token", {"token": serializers.CharField()}),
            400: validation_error_response("Wrong credentials (`non_field_errors`)."),
            429: error_response(
                "Too many logins for this username or from this address (AUTH_THROTTLE_RATE)."
            ),
        },
    )
    def post(self, request: Request, *args, **kwargs) -> Response:
        return super().post(request, *args, **kwargs)


class Conflict(APIException):
    status_code = 409
    default_detail = "Content of this roadmap is being generated; cancel its tasks first."
    default_code = "generation_in_flight"


@extend_schema_view(
    list=extend_schema(
        summary="List your roadmaps (staff: all)",
        responses={200: RoadmapSummarySerializer(many=True), 401: UNAUTHENTICATED},
    ),
    retrieve=extend_schema(
        summary="A roadmap with every concept's statuses",
        responses={200: RoadmapDetailSerializer, 401: UNAUTHENTICATED, 404: NOT_FOUND},
    ),
    destroy=extend_schema(
        summary="Delete a roadmap",
        responses={
            204: None,
            401: UNAUTHENTICATED,
            404: NOT_FOUND,
            409: error_response(Conflict.default_detail),
        },
    ),
)
class RoadmapViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """Users see and act on their own roadmaps only; anyone else's answers 404."""

    lookup_url_kwarg = "roadmap_id"
    serializer_class = RoadmapDetailSerializer
    queryset = Roadmap.objects.none()  # for the schema; requests use get_queryset()

    def get_queryset(self):
        return selectors.roadmap_list(user=self.request.user)

    def get_throttles(self):
        """Creating a roadmap with `generate` starts work, so it is throttled like
        every other start (RETRY_THROTTLE_RATE)."""
        data = self.request.data if self.action == "create" else None
        if isinstance(data, dict) and data.get("generate") is True:
            return [GenerationRateThrottle()]
        return super().get_throttles()

    def get_serializer_class(self):
        return RoadmapSummarySerializer if self.action == "list" else RoadmapDetailSerializer

    def perform_destroy(self, instance: Roadmap) -> None:
        """A roadmap with work in flight is not deleted under its workers: cancel
        the tasks (or let them finish) first."""
        try:
            services.delete_roadmap(roadmap=instance)
        except services.GenerationInFlight:
            raise Conflict() from None

    def detail_body(self, roadmap_id) -> dict:
        try:
            roadmap = selectors.roadmap_detail(roadmap_id=roadmap_id, user=self.request.user)
        except Roadmap.DoesNotExist:
            raise NotFound() from None
        counts = selectors.status_counts(roadmap_ids=[roadmap.pk])
        return RoadmapDetailSerializer(roadmap, context={"status_counts": counts}).data

    @extend_schema(
        summary="Create a roadmap from a framework",
        request=RoadmapCreateSerializer,
        responses={
            201: RoadmapCreatedSerializer,
            400: validation_error_response("Invalid framework; nothing was created."),
            401: UNAUTHENTICATED,
            413: error_response("Body larger than 1 MB."),
            429: THROTTLED,
        },
    )
    def create(self, request: Request) -> Response:
        serializer = RoadmapCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        created = services.create_roadmap(owner=request.user, **serializer.validated_data)
        body = self.detail_body(created.roadmap.pk)
        if serializer.validated_data["generate"]:
            body["task_id"] = created.task_id
        return Response(body, status=status.HTTP_201_CREATED)

    def list(self, request: Request) -> Response:
        page = self.paginate_queryset(self.get_queryset())
        counts = selectors.status_counts(roadmap_ids=[roadmap.pk for roadmap in page])
        serializer = RoadmapSummarySerializer(page, many=True, context={"status_counts": counts})
        return self.get_paginated_response(serializer.data)

    def retrieve(self, request: Request, roadmap_id: str) -> Response:
        return Response(self.detail_body(roadmap_id))
