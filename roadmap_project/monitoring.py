"""Who may read what operators watch (GET /metrics): a staff session, or
`Authorization: Bearer <METRICS_TOKEN>`, for a scraper that has no session.

Without credentials the answer is 401 (with `WWW-Authenticate: Bearer`); a
signed-in user who is not staff gets 403: the endpoint is no secret (it is in
the docs), so there is nothing to hide behind a 404, and the user is known but
not allowed. A Bearer token that is sent must be right: a wrong one is 401 even
alongside a staff session, so a scraper's broken configuration never passes
unnoticed because someone was signed in. Other schemes (DRF's `Token`) are not
credentials here."""

import hmac

from django.conf import settings
from django.http import HttpRequest, HttpResponse

CHALLENGE = 'Bearer realm="metrics"'


def bearer_token(request: HttpRequest) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, else None."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def token_matches(token: str) -> bool:
    """Compared in constant time; with no METRICS_TOKEN configured, nothing matches."""
    expected = settings.METRICS_TOKEN
    return bool(expected) and hmac.compare_digest(token.encode(), expected.encode())


def refusal(request: HttpRequest) -> HttpResponse | None:
    """None when the request may read the operators' figures, else the answer."""
    token = bearer_token(request)
    if token is not None:
        return None if token_matches(token) else unauthorized()
    user = request.user
    if not user.is_authenticated:
        return unauthorized()
    if not user.is_staff:
        return HttpResponse("Staff only.\n", status=403, content_type="text/plain")
    return None


def unauthorized() -> HttpResponse:
    response = HttpResponse(
        "A staff session or a metrics token is required.\n", status=401, content_type="text/plain"
    )
    response["WWW-Authenticate"] = CHALLENGE
    return response
