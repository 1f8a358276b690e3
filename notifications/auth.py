"""WebSocket authentication: the session cookie, or `?token=<key>` for clients
that cannot set headers (DESIGN §5); and, while a socket is open, whether the
credentials it was opened with still hold (logout, token deleted, user
deactivated: the socket closes 4401)."""

import asyncio
import functools
import itertools
import logging
import weakref
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from importlib import import_module
from typing import Any, Protocol
from urllib.parse import parse_qs

from channels import auth as channels_auth
from channels.db import database_sync_to_async
from channels.middleware import BaseMiddleware
from channels.sessions import CookieMiddleware
from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model
from django.contrib.auth.models import AnonymousUser
from django.utils import timezone
from django.utils.crypto import constant_time_compare

logger = logging.getLogger(__name__)

# How often the open sockets' credentials are checked: a revoked one closes within
# this plus one check (DESIGN §5: within 5 s).
REVALIDATE_SECONDS = 2.0
# Keys per query: SQLite refuses more than 32,766 parameters in one statement.
CHUNK = 500


@dataclass(frozen=True)
class Credential:
    """What a socket authenticated with: a token's or a session's key, and the
    user it gave."""

    kind: str  # "token" or "session"
    key: str
    user_id: Any


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
    """What the handshake offers, read without a query: `?token=` as
    scope["token_key"], else the session cookie as a lazy, read-only
    scope["session"]. The consumer accepts the handshake first and authenticates
    after (`authenticate`): in a connect storm, a handshake that waited for its
    database call queued behind a thousand others outlived daphne's handshake
    timeout (5 s), and the client saw its connection dropped without an answer."""

    def __init__(self, inner) -> None:
        super().__init__(inner)
        self.with_session = CookieMiddleware(ReadOnlySessionMiddleware(inner))

    async def __call__(self, scope, receive, send):
        key = (parse_qs(scope.get("query_string", b"").decode()).get("token") or [""])[0]
        if not key:
            return await self.with_session(scope, receive, send)
        return await self.inner(dict(scope, token_key=key), receive, send)


def TokenAuthMiddlewareStack(inner):
    return TokenAuthMiddleware(inner)


async def authenticate(scope: dict[str, Any]) -> None:
    """Set scope["user"] (AnonymousUser when the credentials do not hold),
    scope["token_auth"] and scope["credential"] (what `Sentry` checks while the
    socket is open): one database call, by the token alone when there is one,
    else the session as Channels' AuthMiddleware reads it."""
    key = scope.get("token_key")
    if key:
        user = await _user_for_token(key)
        credential = Credential("token", key, user.pk) if user is not None else None
        scope.update(user=user or AnonymousUser(), token_auth=user is not None)
    else:
        user, session_key = await channels_auth.get_user(scope), scope["session"].session_key
        authenticated = user.is_authenticated and session_key
        credential = Credential("session", session_key, user.pk) if authenticated else None
        scope.update(user=user, token_auth=False)
    scope["credential"] = credential


def still_valid(credentials: Collection[Credential]) -> set[Credential]:
    """Those of `credentials` that would still authenticate their user: the token
    exists, or the session exists, has not expired and names the user with the
    current password hash (as the handshake checked it), and the user is active.
    Batched: with the database session engine, three queries per 500 keys."""
    from rest_framework.authtoken.models import Token

    owners: dict[tuple[str, str], tuple[Any, str | None]] = {}  # -> (user id, session hash)
    tokens = {c.key for c in credentials if c.kind == "token"}
    for keys in chunks(tokens):
        found = Token.objects.filter(key__in=keys).values_list("key", "user_id")
        owners |= {("token", key): (user_id, None) for key, user_id in found}
    sessions = {c.key for c in credentials if c.kind == "session"}
    owners |= {("session", key): owner for key, owner in session_owners(sessions)}
    users = {}
    for ids in chunks({user_id for user_id, _ in owners.values()}):
        users |= get_user_model()._default_manager.filter(pk__in=ids, is_active=True).in_bulk()

    def holds(credential: Credential) -> bool:
        user_id, session_hash = owners.get((credential.kind, credential.key), (None, None))
        user = users.get(user_id)
        if user is None or user_id != credential.user_id:
            return False
        return credential.kind == "token" or bool(
            session_hash and constant_time_compare(session_hash, user.get_session_auth_hash())
        )

    return {credential for credential in credentials if holds(credential)}


def session_owners(keys: Iterable[str]) -> Iterator[tuple[str, tuple[Any, str | None]]]:
    """(key, (user id, password hash)) of each of `keys` that is a live, logged-in
    session. The database engines are read in bulk; any other engine one key at a
    time, through its store."""
    store = import_module(settings.SESSION_ENGINE).SessionStore
    if not hasattr(store, "get_model_class"):
        for key in keys:
            if owner := owner_of(store(session_key=key).load()):
                yield key, owner
        return
    for chunk in chunks(keys):
        rows = store.get_model_class().objects.filter(
            session_key__in=chunk, expire_date__gt=timezone.now()
        )
        for key, encoded in rows.values_list("session_key", "session_data"):
            if owner := decoded_owner(encoded):
                yield key, owner


@functools.lru_cache(maxsize=4096)
def decoded_owner(encoded: str) -> tuple[Any, str | None] | None:
    """The owner of a database session's stored text. Cached: the same signed text
    always decodes the same way, and decoding it (an HMAC) was half of each check."""
    return owner_of(import_module(settings.SESSION_ENGINE).SessionStore().decode(encoded))


def owner_of(data: Mapping[str, Any]) -> tuple[Any, str | None] | None:
    """(user id, password hash) of a session's data, as Channels' get_user reads
    it; None for a session nobody is logged in to."""
    if data.get(BACKEND_SESSION_KEY) not in settings.AUTHENTICATION_BACKENDS:
        return None
    if SESSION_KEY not in data:
        return None
    return get_user_model()._meta.pk.to_python(data[SESSION_KEY]), data.get(HASH_SESSION_KEY)


def chunks(items: Iterable[Any]) -> Iterator[list[Any]]:
    iterator = iter(items)
    while chunk := list(itertools.islice(iterator, CHUNK)):
        yield chunk


class Revocable(Protocol):
    async def revoke(self) -> None:
        """Close 4401: the socket's credentials no longer hold."""


class Sentry:
    """The open sockets of one event loop and their credentials, checked together
    every REVALIDATE_SECONDS: one batched check per round, however many sockets,
    and one credential checked once however many sockets share it."""

    def __init__(self) -> None:
        self.sockets: dict[Revocable, Credential] = {}
        self.rounds = 0
        self._checking: asyncio.Task | None = None

    def watch(self, socket: Revocable, credential: Credential) -> None:
        self.sockets[socket] = credential
        if self._checking is None or self._checking.done():
            self._checking = asyncio.get_running_loop().create_task(self._check_periodically())

    def forget(self, socket: Revocable) -> None:
        self.sockets.pop(socket, None)

    async def _check_periodically(self) -> None:
        while self.sockets:
            await asyncio.sleep(REVALIDATE_SECONDS)
            try:
                await self.check()
            except Exception:
                # The database is down, say: the sockets stay; the next round retries.
                logger.warning("Checking the sockets' credentials failed; retrying", exc_info=True)

    async def check(self) -> None:
        watched = dict(self.sockets)
        if not watched:
            return
        valid = await database_sync_to_async(still_valid)(set(watched.values()))
        self.rounds += 1
        for socket, credential in watched.items():
            if credential in valid or self.sockets.pop(socket, None) is None:
                continue
            try:
                await socket.revoke()
            except Exception:  # a socket already going away
                logger.info("Could not close a revoked socket", exc_info=True)


_per_loop: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Sentry]" = (
    weakref.WeakKeyDictionary()
)


def sentry() -> Sentry:
    """The sentry of the running event loop."""
    loop = asyncio.get_running_loop()
    if loop not in _per_loop:
        _per_loop[loop] = Sentry()
    return _per_loop[loop]
