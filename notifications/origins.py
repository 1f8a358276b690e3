"""Which browser origins may open an event stream (docs/events.md, Origins).

CORS does not apply to WebSockets, and a browser attaches this site's cookies to
a handshake whatever page opens it, so the consumer checks `Origin` itself, the
way Django's CSRF check does for an unsafe request: whole origins (scheme, host
and port), the good one built from the handshake's own Host and scheme."""

import io
from collections.abc import Mapping
from typing import Any
from urllib.parse import SplitResult, urlsplit

from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.core.handlers.asgi import ASGIRequest
from django.utils.http import is_same_domain


def origin_allowed(scope: Mapping[str, Any]) -> bool:
    """Whether the handshake's Origin may use its credentials:

    * this site's own origin, or one of CSRF_TRUSTED_ORIGINS: any credentials;
    * one of CORS_ALLOWED_ORIGINS (a frontend served elsewhere): a token, and a
      session cookie only with CORS_ALLOW_CREDENTIALS, as for REST;
    * no Origin (not a browser): a token only, since a cross-site page's
      handshake carries the user's cookie but cannot carry a token."""
    token = bool(scope.get("token_auth"))
    origin = dict(scope.get("headers", [])).get(b"origin")
    if origin is None:
        return token
    origin = origin.decode("latin-1")
    try:
        parsed = urlsplit(origin)
    except ValueError:  # e.g. an unbalanced "[" in an IPv6 host
        return False
    if not parsed.netloc:  # "null" (sandboxed frames, local files): any site makes one
        return False
    if origin == own_origin(scope) or csrf_trusted(origin, parsed):
        return True
    return cors_listed(parsed) and (token or settings.CORS_ALLOW_CREDENTIALS)


def own_origin(scope: Mapping[str, Any]) -> str | None:
    """scheme://host of the site the handshake reached, as Django reads it for an
    HTTP request (Host, or X-Forwarded-Host with USE_X_FORWARDED_HOST, checked
    against ALLOWED_HOSTS; https for wss or by SECURE_PROXY_SSL_HEADER); None for
    a host this site does not serve."""
    scheme = "https" if scope.get("scheme") == "wss" else "http"
    request = ASGIRequest({**scope, "method": "GET", "scheme": scheme}, io.BytesIO())
    try:
        host = request.get_host()
    except DisallowedHost:
        return None
    return f"{request.scheme}://{host}"


def csrf_trusted(origin: str, parsed: SplitResult) -> bool:
    """One of CSRF_TRUSTED_ORIGINS, exactly or under a `scheme://*.domain` entry,
    as CsrfViewMiddleware matches them."""
    if origin in settings.CSRF_TRUSTED_ORIGINS:
        return True
    return any(
        parsed.scheme == trusted.scheme and is_same_domain(parsed.netloc, trusted.netloc[1:])
        for trusted in map(urlsplit, settings.CSRF_TRUSTED_ORIGINS)
        if trusted.netloc.startswith("*")
    )


def cors_listed(origin: SplitResult) -> bool:
    """One of CORS_ALLOWED_ORIGINS, compared as django-cors-headers compares them
    (scheme and host:port, exactly), so a frontend the REST API answers can also
    open streams. "null" is never let in, even when listed."""
    return any(
        (listed.scheme, listed.netloc) == (origin.scheme, origin.netloc)
        for listed in map(urlsplit, settings.CORS_ALLOWED_ORIGINS)
    )
