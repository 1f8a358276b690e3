"""WebSocket authentication: the session cookie, or `?token=<key>` for clients
that cannot set headers (DESIGN §5)."""

from importlib import import_module
from urllib.parse import parse_qs

from channels.auth import AuthMiddleware
from channels.db import database_sync_to_async
from channels.middleware import BaseMiddleware
from channels.sessions import CookieMiddleware
from django.conf import settings
from django.contrib.auth.models import AnonymousUser


@database_sync_to_async
def _user_for_token(key: str):
    from rest_framework.authtoken.models import Token

    try:
        token = Token.objects.select_related("user").get(key=key)
    except Token.DoesNotExist:
        return None
    return token.user if token.user.is_active else None


class TokenAuthMiddleware(BaseMiddleware):
    """Sets scope["user"] from `?token=` when given; marks scope["token_auth"]."""

    async def __call__(self, scope, receive, send):
        query = parse_qs(scope.get("query_string", b"").decode())
        key = (query.get("token") or [""])[0]
        if key:
            user = await _user_for_token(key)
            scope = dict(scope, user=user or AnonymousUser(), token_auth=user is not None)
        return await super().__call__(scope, receive, send)


class ReadOnlySessionMiddleware(BaseMiddleware):
    """scope["session"] from the session cookie, to authenticate. Channels'
    SessionMiddleware also wraps `send` to save a changed session, and checks the
    session on every frame: a fifth of each socket's send in a py-spy profile of
    one event to 1,000 sockets. Event streams never change the session."""

    async def __call__(self, scope, receive, send):
        store = import_module(settings.SESSION_ENGINE).SessionStore
        key = scope["cookies"].get(settings.SESSION_COOKIE_NAME)
        return await super().__call__(dict(scope, session=store(session_key=key)), receive, send)


def TokenAuthMiddlewareStack(inner):
    """Channels' AuthMiddlewareStack, with the session read-only."""
    return CookieMiddleware(ReadOnlySessionMiddleware(AuthMiddleware(TokenAuthMiddleware(inner))))
