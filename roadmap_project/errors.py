"""API errors: 413 for oversized bodies (Django would answer 400), no traceback
in any answer, whatever DEBUG says (I7), and the shapes of those answers for the
OpenAPI schema."""

import logging

from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, JsonResponse
from django.views import defaults
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from roadmap_project.openapi import ERROR_TREE

logger = logging.getLogger(__name__)


class Refusal(Exception):
    """A request a service refuses, with an HTTP status and a message meant for
    the client; nothing was changed. Services of any app raise it (or a subclass)
    without knowing about views; the API answers it as `{"detail": message}`."""

    status_code = status.HTTP_400_BAD_REQUEST


def exception_handler(exc, context):
    if isinstance(exc, Refusal):
        return Response({"detail": str(exc)}, status=exc.status_code)
    if isinstance(exc, RequestDataTooBig):
        return Response(
            {"detail": "Request body is larger than 1 MB."},
            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
    if isinstance(exc, Http404):
        # get_object_or_404's message names the model ("No ConceptContent matches…"):
        # internal, and it would tell a missing pair from a missing roadmap.
        exc = NotFound()
    if isinstance(exc, DjangoValidationError):
        return Response({"detail": exc.messages}, status=status.HTTP_400_BAD_REQUEST)
    response = drf_exception_handler(exc, context)
    if response is None:
        view = context.get("view")
        logger.error("Unhandled error in %s", type(view).__name__, exc_info=exc)
        response = Response(
            {"detail": "Internal server error."}, status=status.HTTP_500_INTERNAL_SERVER_ERROR
        )
    return response


# --- Errors Django answers itself (no view, or outside DRF) ---------------------
# With DEBUG=0 Django answers a URL that matches no route (a malformed roadmap id,
# say) and an error outside DRF with its HTML pages; under /api/ they are JSON
# like every other answer of the API. Other paths (admin) keep Django's pages.


def _json_under_api(detail: str, status: int, django_page):
    """A handler answering `{"detail": …}` under /api/ and Django's page elsewhere."""

    def handler(request, *args, **kwargs):  # Django passes `exception=` by keyword
        if request.path.startswith("/api/"):
            return JsonResponse({"detail": detail}, status=status)
        return django_page(request, *args, **kwargs)

    return handler


bad_request = _json_under_api("Bad request.", 400, defaults.bad_request)
page_not_found = _json_under_api("Not found.", 404, defaults.page_not_found)
server_error = _json_under_api("Internal server error.", 500, defaults.server_error)


# --- The shapes of error answers, for the OpenAPI schema ---------------------


class ErrorSerializer(serializers.Serializer):
    """Every error answer that is not a field validation error (401, 404, 409,
    413, 429, 500)."""

    detail = serializers.CharField()


def error_response(description: str) -> OpenApiResponse:
    return OpenApiResponse(response=ErrorSerializer, description=description)


# A 400 names the fields at fault; a nested field's messages one level down.
VALIDATION_ERROR_SCHEMA = {
    "type": "object",
    "description": "Messages keyed by the field at fault (`detail` when no single field "
    "is); a nested field's messages are keyed the same way one level down, a list's "
    "per item.",
    "additionalProperties": {"$ref": f"#/components/schemas/{ERROR_TREE}"},
    "example": {"statuses": {"0": ['"done" is not a valid choice.']}},
}


def validation_error_response(
    description: str = "Invalid input; nothing changed.",
) -> OpenApiResponse:
    return OpenApiResponse(response=VALIDATION_ERROR_SCHEMA, description=description)


UNAUTHENTICATED = error_response("No valid token or session.")
NOT_FOUND = error_response("Unknown, or not yours (existence is never revealed).")
THROTTLED = error_response(
    "Throttled (RETRY_THROTTLE_RATE; the `Retry-After` header says when to try again), "
    "or the user already has GENERATION_MAX_ACTIVE_PER_USER pairs queued or generating "
    "(`detail` says how many; nothing was started)."
)
RETRY_AFTER = OpenApiParameter(
    "Retry-After",
    int,
    location=OpenApiParameter.HEADER,
    response=[429],
    description="Seconds to wait before trying again.",
)
