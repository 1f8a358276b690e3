"""The roadmap API (DESIGN §4): thin views over roadmaps.services and
roadmaps.selectors."""

from collections.abc import AsyncIterator

from asgiref.sync import sync_to_async
from django.core.files import File
from django.http import StreamingHttpResponse
from django.utils.cache import patch_cache_control, patch_vary_headers
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
    inline_serializer,
)
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.exceptions import NotFound
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.parsers import FormParser
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from roadmap_project.errors import (
    NOT_FOUND,
    THROTTLED,
    UNAUTHENTICATED,
    error_response,
    throttled_response,
    validation_error_response,
)
from roadmap_project.logins import FailedLoginThrottle
from roadmap_project.parsers import JSONParser
from roadmap_project.throttling import GenerationRateThrottle
from roadmaps import selectors, services
from roadmaps.models import ConceptContent, Roadmap
from roadmaps.serializers import (
    CONCEPT_ID_PATTERN,
    RoadmapCreatedSerializer,
    RoadmapCreateSerializer,
    RoadmapDetailSerializer,
    RoadmapSummarySerializer,
)


class TokenView(ObtainAuthToken):
    """DRF's token login, documented with its real answer, under the failed-login
    limits (roadmap_project.logins)."""

    throttle_classes = [FailedLoginThrottle]
    # JSON like the rest of the API, and forms; no multipart (nothing to upload):
    # daphne's HTTP server parses multipart bodies itself and answers a malformed
    # one with an empty, type-less 400 before Django sees it.
    parser_classes = [JSONParser, FormParser]

    @extend_schema(
        summary="Exchange a username and password for an API token",
        auth=[],
        responses={
            200: inline_serializer("Token", {"token": serializers.CharField()}),
            400: validation_error_response("Wrong credentials (`non_field_errors`)."),
            429: throttled_response(
                "Too many failed logins from this address (AUTH_THROTTLE_RATE) or for this "
                "username (AUTH_USERNAME_THROTTLE_RATE)."
            ),
        },
    )
    def post(self, request: Request, *args, **kwargs) -> Response:
        return super().post(request, *args, **kwargs)


@extend_schema_view(
    list=extend_schema(
        summary="List your roadmaps (staff: all)",
        responses={
            200: RoadmapSummarySerializer(many=True),
            401: UNAUTHENTICATED,
            404: error_response("No such page (`page` past the last one, or not a number)."),
        },
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
            409: error_response(services.GenerationInFlight.message),
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

    def get_serializer_class(self):
        return RoadmapSummarySerializer if self.action == "list" else RoadmapDetailSerializer

    def perform_destroy(self, instance: Roadmap) -> None:
        services.delete_roadmap(roadmap=instance)

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
        if serializer.validated_data["generate"]:
            self.throttle_generation(request)
        created = services.create_roadmap(owner=request.user, **serializer.validated_data)
        body = self.detail_body(created.roadmap.pk)
        if serializer.validated_data["generate"]:
            body["task_id"] = created.task_id
        return Response(body, status=status.HTTP_201_CREATED)

    def throttle_generation(self, request: Request) -> None:
        """Creating a roadmap with `generate` starts work, so it is throttled like
        every other start (RETRY_THROTTLE_RATE), whichever spelling of true the
        serializer accepted."""
        throttle = GenerationRateThrottle()
        if not throttle.allow_request(request, self):
            self.throttled(request, throttle.wait())

    def list(self, request: Request) -> Response:
        page = self.paginate_queryset(self.get_queryset())
        counts = selectors.status_counts(roadmap_ids=[roadmap.pk for roadmap in page])
        serializer = RoadmapSummarySerializer(page, many=True, context={"status_counts": counts})
        return self.get_paginated_response(serializer.data)

    def retrieve(self, request: Request, roadmap_id: str) -> Response:
        return Response(self.detail_body(roadmap_id))


# Tutorial files are streamed in chunks of this size, each read off the event loop.
FILE_CHUNK_BYTES = 64 * 1024


async def file_chunks(file: File) -> AsyncIterator[bytes]:
    """The file's bytes, read in a worker thread chunk by chunk (storage reads
    block: local disk or S3), closed at the end or when the client goes away."""
    try:
        while chunk := await sync_to_async(file.read, thread_sensitive=False)(FILE_CHUNK_BYTES):
            yield chunk
    finally:
        await sync_to_async(file.close, thread_sensitive=False)()


class JSONErrorsOnly(BaseContentNegotiation):
    """The file view answers Markdown whatever the client accepts, and its errors
    as JSON like the rest of the API: never 406 for `Accept: text/markdown`."""

    def select_parser(self, request: Request, parsers: list) -> object | None:
        return parsers[0] if parsers else None

    def select_renderer(
        self, request: Request, renderers: list, format_suffix: str | None = None
    ) -> tuple:
        return renderers[0], renderers[0].media_type


class TutorialFileView(APIView):
    """A tutorial version's Markdown file, for the roadmap's owner (staff: any),
    with a token or a session like every other endpoint. Someone else's file,
    an unknown one, a version that is no longer current, or a file of a deleted
    roadmap answers 404 (never 403). `content_url` points here."""

    renderer_classes = [JSONRenderer]
    content_negotiation_class = JSONErrorsOnly

    @extend_schema(
        summary="A tutorial version's Markdown file (the `content_url` of a tutorial)",
        operation_id="roadmaps_concepts_tutorial_file_retrieve",
        parameters=[
            OpenApiParameter("roadmap_id", OpenApiTypes.UUID, OpenApiParameter.PATH),
            OpenApiParameter("concept_id", str, OpenApiParameter.PATH, pattern=CONCEPT_ID_PATTERN),
            OpenApiParameter(
                "version",
                int,
                OpenApiParameter.PATH,
                description="The tutorial's current `content_version`.",
            ),
        ],
        responses={
            (200, "text/markdown"): OpenApiResponse(
                OpenApiTypes.STR, description="The Markdown, streamed."
            ),
            401: UNAUTHENTICATED,
            404: error_response(
                "Unknown or not yours, not the current version, or the roadmap was deleted."
            ),
        },
    )
    def get(
        self, request: Request, roadmap_id: str, concept_id: str, version: str
    ) -> StreamingHttpResponse:
        try:
            file = selectors.tutorial_file(
                roadmap_id=roadmap_id,
                concept_id=concept_id,
                version=int(version),
                user=request.user,
            )
        except ConceptContent.DoesNotExist:
            raise NotFound() from None
        response = StreamingHttpResponse(
            file_chunks(file), content_type="text/markdown; charset=utf-8"
        )
        response["Content-Length"] = file.size
        response["Content-Disposition"] = f'inline; filename="v{int(version)}.md"'
        # Per-user content: shared caches must not keep it; browsers revalidate, so
        # a deleted roadmap's file is not shown from cache.
        patch_cache_control(response, private=True, no_cache=True)
        patch_vary_headers(response, ["Authorization", "Cookie"])
        return response
