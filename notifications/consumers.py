"""The WebSocket end of the event store (DESIGN §5, docs/events.md).

Subscribe, then fetch: the consumer joins the channel-layer group first and only
then replays the store above the client's cursor, so an event committed during
the replay arrives live and is dropped as a duplicate, or is found by the next
store read; it is never lost. The layer is only the fast path: the process's
store catch-up (notifications.catch_up, one check every
NOTIFICATIONS_CATCH_UP_SECONDS for all sockets) delivers whatever the layer
dropped or never carried (another process, Redis down). A layer that fails
(Redis down) never ends a connection: joins are retried by the catch-up and
Channels' layer receive is retried with a backoff."""

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.http.request import split_domain_port, validate_host
from django.utils.module_loading import import_string

from notifications.catch_up import catch_up
from notifications.selectors import Marks, events_after, marks
from notifications.services import stream_group, topic_group

logger = logging.getLogger(__name__)

# Close codes (docs/events.md). 1000 is the normal end of a task stream.
CLOSE_NORMAL = 1000
CLOSE_BAD_REQUEST = 4400
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN_ORIGIN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_PRUNED = 4410  # resuming below the pruned mark; the reason names the cursor to use

PAGE_SIZE = 500
MAX_CURSOR = 2**63 - 1  # the store's BigAutoField range

# A layer call that hangs (Redis unreachable, no refusal) must not hold up the replay.
LAYER_TIMEOUT_SECONDS = 2.0
# Backoff of Channels' layer receive while the layer fails.
RECEIVE_RETRY_FIRST_SECONDS = 0.5
RECEIVE_RETRY_MAX_SECONDS = 10.0

# The cursor a client resumes from: a stream's contiguous `seq`, a topic's global `id`.
CURSOR_FIELD = {"stream": "seq", "topic": "id"}


class EventStreamConsumer(AsyncJsonWebsocketConsumer):
    """One subscription: `kind="stream"` (a task, by `seq`, closes 1000 after its
    final event) or `kind="topic"` (a roadmap, by global `id`, never closes).

    Every send happens under `self.sending`, and `self.last_sent` only grows, so
    the live path and the catch-up path never interleave or repeat an event."""

    def __init__(self, *, kind: str = "stream", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if kind not in CURSOR_FIELD:
            raise ValueError(f"Unknown event stream kind {kind!r}")
        self.kind = kind
        self.cursor_field = CURSOR_FIELD[kind]
        self.store_key: str | None = None
        self.last_sent = 0
        self.finished = False
        self.sending = asyncio.Lock()
        self.caught_up_by = None  # the process's store catch-up, once registered
        self.joined = False  # whether the group join succeeded (the catch-up retries it)
        self.failing: set[str] = set()  # layer operations in a failure streak (log once)
        self.layer_receive: Callable[[], Awaitable[dict[str, Any]]] | None = None

    # --- hooks ---------------------------------------------------------------

    async def __call__(self, scope, receive, send) -> None:
        """Whatever ends the connection (a close, an error in a handler, the server
        shutting down), what it held is released: its place in the store catch-up
        and its group membership. Channels calls `disconnect` only on a clean close."""
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.release()

    async def connect(self) -> None:
        # Accept first: a refusal before accept reaches the client as a bare HTTP 403.
        await self.accept()
        refusal = await self.refusal()
        if refusal is not None:
            self.finished = True
            await self.close(refusal)
            return
        # One read of the counter row: a topic subscription from the start needs none.
        counter = Marks(ended=False, pruned_through=0)
        if self.kind == "stream" or self.last_sent:
            counter = await database_sync_to_async(marks)(key=self.store_key)
        pruned = counter.pruned_through
        if 0 < self.last_sent < pruned:
            # Events above the client's cursor are gone: it must reload the state
            # over HTTP, then resume from the mark (docs/events.md).
            self.finished = True
            await self.close(CLOSE_PRUNED, reason=f"pruned; resume with after={pruned}")
            return
        await self.join_group()
        # Read before the replay: if the stream had ended, the replay reaches its
        # final event unless the client already had it (then close here). A stream
        # that ended after the read closes when the replay or the live path brings
        # its final event.
        ended = self.kind == "stream" and counter.ended
        async with self.sending:
            await self.catch_up()
            if ended and not self.finished:
                self.finished = True
                await self.close(CLOSE_NORMAL)
        if not self.finished:
            self.caught_up_by = catch_up()
            self.caught_up_by.add(self)

    async def disconnect(self, code: int) -> None:
        await self.release()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Client frames: `{"type": "ping"}` is answered `{"type": "pong"}`; anything
        else (other JSON, text that is not JSON, binary) is ignored, and the stream
        goes on delivering."""
        try:
            message = json.loads(text_data) if text_data is not None else None
        except ValueError:
            return
        if isinstance(message, dict) and message.get("type") == "ping":
            async with self.sending:
                if not self.finished:
                    await self.send_json({"type": "pong"})

    async def release(self) -> None:
        """Leave the store catch-up and the group; safe to call more than once."""
        self.finished = True
        caught_up_by, self.caught_up_by = self.caught_up_by, None
        if caught_up_by is not None:
            caught_up_by.discard(self)
        if self.store_key is not None:  # even if the join seemed to fail: it may have landed
            group, self.store_key, self.joined = self.group, None, False
            try:
                async with asyncio.timeout(LAYER_TIMEOUT_SECONDS):
                    await self.channel_layer.group_discard(group, self.channel_name)
            except Exception:
                self.layer_failed("group_discard")  # the membership expires in the layer

    async def event_message(self, message: dict[str, Any]) -> None:
        """A live event from the layer: the fast path, checked against the cursor."""
        event = message["event"]
        cursor = event.get(self.cursor_field)
        async with self.sending:
            if self.finished:
                return
            if cursor is None:
                # Live-only (concept_progress): never stored, nothing to order against.
                await self.send_json(event)
                return
            if cursor <= self.last_sent:
                return  # already sent by the replay or a catch-up
            if self.kind == "stream" and cursor == self.last_sent + 1:
                await self.deliver(event, final=bool(message.get("final")))
            else:
                # A gap on a stream, or any topic event (ids of different writers
                # are published out of commit order): the store has the order.
                await self.catch_up()

    # --- the channel layer: only the fast path (I6) --------------------------

    @property
    def channel_receive(self) -> Callable[[], Awaitable[dict[str, Any]]]:
        """What Channels' dispatch loop (AsyncConsumer.__call__) awaits for layer
        messages. The loop ends the consumer on any error, so it gets a receive that
        waits out a failing layer instead; the setter takes the layer's own."""
        return self.receive_from_layer

    @channel_receive.setter
    def channel_receive(self, receive: Callable[[], Awaitable[dict[str, Any]]]) -> None:
        self.layer_receive = receive

    async def receive_from_layer(self) -> dict[str, Any]:
        """The layer's next message; retries a failing layer with a capped backoff."""
        delay = RECEIVE_RETRY_FIRST_SECONDS
        while True:
            try:
                message = await self.layer_receive()
            except Exception:
                self.layer_failed("receive")
                # A layer that lost its data (Redis restarted) lost the group too.
                self.joined = False
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECEIVE_RETRY_MAX_SECONDS)
            else:
                self.layer_recovered("receive")
                return message

    async def join_group(self) -> None:
        """Join the group for live events; on failure the store catch-up serves
        the client and poll_store tries again."""
        try:
            async with asyncio.timeout(LAYER_TIMEOUT_SECONDS):
                await self.channel_layer.group_add(self.group, self.channel_name)
        except Exception:
            self.layer_failed("group_add")
        else:
            self.joined = True
            self.layer_recovered("group_add")

    def layer_failed(self, operation: str) -> None:
        if operation not in self.failing:
            self.failing.add(operation)
            logger.warning(
                "Channel layer %s failed for %s; serving it from the store every %s s "
                "until the layer is back",
                operation,
                self.scope["path"],
                settings.NOTIFICATIONS_CATCH_UP_SECONDS,
                exc_info=True,
            )

    def layer_recovered(self, operation: str) -> None:
        if operation in self.failing:
            self.failing.discard(operation)
            logger.info("Channel layer %s works again for %s", operation, self.scope["path"])

    # --- work ----------------------------------------------------------------

    @property
    def group(self) -> str:
        return (
            stream_group(self.store_key) if self.kind == "stream" else topic_group(self.store_key)
        )

    async def refusal(self) -> int | None:
        """The close code for a connection that may not subscribe, else None.
        Sets the store key and the starting cursor."""
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            return CLOSE_UNAUTHENTICATED
        if not self.origin_allowed():
            return CLOSE_FORBIDDEN_ORIGIN
        after = parse_after(self.scope.get("query_string", b""))
        if after is None:
            return CLOSE_BAD_REQUEST
        kwargs = self.scope["url_route"]["kwargs"]
        key = kwargs["stream_id"] if self.kind == "stream" else kwargs["topic_id"]
        authorize = import_string(settings.NOTIFICATIONS_STREAM_AUTHORIZER)
        self.store_key = await database_sync_to_async(authorize)(user=user, kind=self.kind, key=key)
        if self.store_key is None:
            return CLOSE_NOT_FOUND
        self.last_sent = after
        return None

    def origin_allowed(self) -> bool:
        """Browsers send Origin: it must be one of ALLOWED_HOSTS. Without one, only
        a token-authenticated (non-browser) client is let in: a session cookie
        alone could be a cross-site request."""
        origin = dict(self.scope.get("headers", [])).get(b"origin")
        if origin is None:
            return bool(self.scope.get("token_auth"))
        domain, _ = split_domain_port(urlsplit(origin.decode("latin-1")).netloc)
        return bool(domain) and validate_host(domain, allowed_hosts())

    async def catch_up(self) -> None:
        """Send everything the store has above the cursor, in order. Call under
        `self.sending`."""
        while not self.finished:
            page = await database_sync_to_async(events_after)(
                kind=self.kind, key=self.store_key, after=self.last_sent, limit=PAGE_SIZE
            )
            for event in page:
                await self.deliver(event.as_message(), final=event.final)
                if self.finished:
                    return
            if len(page) < PAGE_SIZE:
                return

    async def deliver(self, event: dict[str, Any], *, final: bool) -> None:
        await self.send_json(event)
        self.last_sent = event[self.cursor_field]
        if final and self.kind == "stream":
            self.finished = True
            await self.close(CLOSE_NORMAL)

    async def resync(self) -> None:
        """Called by the store catch-up when this socket is behind the store or its
        group join failed: join again (subscribe, then fetch), then catch up."""
        if not self.joined:
            await self.join_group()
        async with self.sending:
            await self.catch_up()


def parse_after(query_string: bytes) -> int | None:
    """`?after=` as a non-negative integer (0 when absent), None when malformed."""
    values = parse_qs(query_string.decode("latin-1"), keep_blank_values=True).get("after")
    if not values:
        return 0
    value = values[-1]
    if not (value.isascii() and value.isdigit()) or int(value) > MAX_CURSOR:
        return None
    return int(value)


def allowed_hosts() -> list[str]:
    """ALLOWED_HOSTS, with Django's own fallback for an empty list under DEBUG."""
    if settings.ALLOWED_HOSTS or not settings.DEBUG:
        return settings.ALLOWED_HOSTS
    return [".localhost", "127.0.0.1", "[::1]"]
