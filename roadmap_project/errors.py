"""API errors: the one table that answers every domain error (its code to a status
and a body), 413 for oversized bodies (Django would answer 400), no traceback in
any answer whatever DEBUG says (I7), and the shapes of those answers for the
OpenAPI schema."""

import logging
from collections.abc import Callable, Mapping
from typing import ClassVar, NamedTuple

from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, JsonResponse
from django.views import defaults
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse
from rest_framework import serializers, status
from rest_framework.exceptions import NotFound, Throttled
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from roadmap_project.openapi import ERROR_TREE

logger = logging.getLogger(__name__)


class DomainError(Exception):
    """A request a service of any app refuses; nothing was changed. It names what
    went wrong with `code` and says it to the client with its message (`str()`);
    how the API answers it is the business of ERRORS, so services never think in
    HTTP statuses."""

    code: ClassVar[str]


# A body from the error and the URL's keyword arguments (which pair, which task).
Body = Callable[[DomainError, Mapping[str, str]], dict]


class Answer(NamedTuple):
    status: int
    body: Body
    headers: Callable[[DomainError], dict[str, str]] | None = None


def _detail(exc: DomainError, kwargs: Mapping[str, str]) -> dict:
    return {"detail": str(exc)}


def _detail_and_code(exc: DomainError, kwargs: Mapping[str, str]) -> dict:
    """The 429 shape (DESIGN §4): `code` tells the cap on active work from a rate limit."""
    return {"detail": str(exc), "code": exc.code}


def _over_budget(exc: DomainError, kwargs: Mapping[str, str]) -> dict:
    """A 429 of the daily token budget also says when the budget resets."""
    return {
        "detail": str(exc),
        "code": exc.code,
        "resets_at": exc.resets_at.isoformat().replace("+00:00", "Z"),
    }


def _retry_after(exc: DomainError) -> dict[str, str]:
    return {"Retry-After": str(exc.retry_after)}


def _detail_and_status(exc: DomainError, kwargs: Mapping[str, str]) -> dict:
    """A content's 404: its current status says why there is nothing to show."""
    return {"detail": str(exc), "status": exc.status}


def _not_started(exc: DomainError, kwargs: Mapping[str, str]) -> dict:
    """The envelope of a start (a retry's 202) with `success: false`; `data` is the
    work already in flight."""
    return {
        "success": False,
        "message": str(exc),
        "concept_id": kwargs["concept_id"],
        "content_type": kwargs["content_type"],
        "data": exc.data,
    }


def _refused(exc: DomainError, kwargs: Mapping[str, str]) -> dict:
    return {"success": False, "detail": str(exc), "data": exc.data}


ACTIVE_LIMIT = "active_limit"
BUDGET_EXCEEDED = "budget_exceeded"
RATE_LIMITED = "throttled"  # DRF's code for its Throttled
THROTTLED_CODES = (RATE_LIMITED, ACTIVE_LIMIT, BUDGET_EXCEEDED)

# Every domain error's code, with the status and body the API answers it with.
ERRORS: dict[str, Answer] = {
    "selection_too_large": Answer(status.HTTP_400_BAD_REQUEST, _detail),
    "not_generated": Answer(status.HTTP_404_NOT_FOUND, _detail_and_status),
    "not_generating": Answer(status.HTTP_404_NOT_FOUND, _detail_and_status),
    "file_missing": Answer(status.HTTP_404_NOT_FOUND, _detail_and_status),
    "already_generating": Answer(status.HTTP_409_CONFLICT, _not_started),
    "task_not_running": Answer(status.HTTP_409_CONFLICT, _refused),
    "generation_in_flight": Answer(status.HTTP_409_CONFLICT, _detail),
    ACTIVE_LIMIT: Answer(status.HTTP_429_TOO_MANY_REQUESTS, _detail_and_code),
    BUDGET_EXCEEDED: Answer(status.HTTP_429_TOO_MANY_REQUESTS, _over_budget, _retry_after),
}


def exception_handler(exc: Exception, context: dict) -> Response:
    """DRF's EXCEPTION_HANDLER: domain errors from ERRORS, Django's own errors in
    the API's shapes, and a 500 that logs instead of showing a traceback."""
    if isinstance(exc, DomainError):
        answer = ERRORS[exc.code]
        return Response(
            answer.body(exc, context.get("kwargs") or {}),
            status=answer.status,
            headers=answer.headers(exc) if answer.headers else None,
        )
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
    elif isinstance(exc, Throttled):
        response.data["code"] = RATE_LIMITED
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
    413, 500)."""

    detail = serializers.CharField()


class ThrottledSerializer(ErrorSerializer):
    """A 429: `code` is `throttled` for a rate limit (then `Retry-After` says when to
    try again), `active_limit` for the cap on active work, `budget_exceeded` for the
    daily token budget (then `resets_at` and `Retry-After` say when it resets)."""

    code = serializers.ChoiceField(THROTTLED_CODES)
    resets_at = serializers.DateTimeField(
        required=False, help_text="With `budget_exceeded`: when the daily budget resets (UTC)."
    )


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


def throttled_response(description: str) -> OpenApiResponse:
    return OpenApiResponse(response=ThrottledSerializer, description=description)


UNAUTHENTICATED = error_response("No valid token or session.")
NOT_FOUND = error_response("Unknown, or not yours (existence is never revealed).")
THROTTLED = throttled_response(
    "Throttled (RETRY_THROTTLE_RATE; the `Retry-After` header says when to try again), "
    "the user already has GENERATION_MAX_ACTIVE_PER_USER pairs queued or generating "
    "(`code` `active_limit`; `detail` says how many), or the start would pass the "
    "user's daily token budget (`code` `budget_exceeded`; `resets_at` and `Retry-After` "
    "say when it resets). Nothing was started."
)
RETRY_AFTER = OpenApiParameter(
    "Retry-After",
    int,
    location=OpenApiParameter.HEADER,
    response=[429],
    description="Seconds to wait before trying again.",
)
