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

    # A key no token can have is not looked up: one longer than the column, or with
    # a NUL, which PostgreSQL refuses in a query (an error and an HTTP 500 on the
    # handshake, where the client is owed a 4401).
    if len(key) > Token._meta.get_field("key").max_length or "\x00" in key:
        return None
    try:
        token = Token.objects.select_related("user").get(key=key)
    except Token.DoesNotExist:
        return None
    return token.user if token.user.is_active else None


class ReadOnlySessionMiddleware(BaseMiddleware):
    """scope["session"] from the session cookie, to authenticate. Channels'
    SessionMiddleware also wraps `send` to save a changed session, and checks the
    session on every frame: a fifth of each socket's send in a py-spy profile of
    one event to 1,000 sockets. Event streams never change the session."""

    async def __call__(self, scope, receive, send):
        store = import_module(settings.SESSION_ENGINE).SessionStore
        key = scope["cookies"].get(settings.SESSION_COOKIE_NAME)
        return await super().__call__(dict(scope, session=store(session_key=key)), receive, send)


class TokenAuthMiddleware(BaseMiddleware):
    """`?token=` when given: scope["user"] from the token alone (one database call
    per connection; a reconnect storm is a thousand of them) and
    scope["token_auth"]; otherwise the session cookie, through Channels'
    AuthMiddleware on a read-only session."""

    def __init__(self, inner) -> None:
        super().__init__(inner)
        self.session_auth = CookieMiddleware(ReadOnlySessionMiddleware(AuthMiddleware(inner)))

    async def __call__(self, scope, receive, send):
        key = (parse_qs(scope.get("query_string", b"").decode()).get("token") or [""])[0]
        if not key:
            return await self.session_auth(scope, receive, send)
        user = await _user_for_token(key)
        scope = dict(scope, user=user or AnonymousUser(), token_auth=user is not None)
        return await self.inner(scope, receive, send)


def TokenAuthMiddlewareStack(inner):
    return TokenAuthMiddleware(inner)
