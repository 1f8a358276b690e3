"""The WebSocket end of the event store (DESIGN §5, docs/events.md).

A consumer authorises the subscription, replays the store above the client's
cursor and hands the socket to its process's feed (notifications.hub), which
serves it from then on: live events, written as the publisher encoded them, and
the store whenever the live path has a gap. Subscribe, then fetch: the feed's
layer subscription is in place before the replay reads the store, so an event
committed during the replay arrives live and is skipped as a duplicate, or is
found by the next store read; it is never lost. The consumer itself holds no
channel-layer channel and polls nothing."""

import json
import logging
from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from notifications.auth import authenticate, sentry
from notifications.hooks import authorize_stream
from notifications.hub import Feed, hub
from notifications.origins import origin_allowed
from notifications.selectors import Marks, marks
from notifications.socket_count import sockets

logger = logging.getLogger(__name__)

# Close codes (docs/events.md). 1000 is the normal end of a task stream.
CLOSE_NORMAL = 1000
CLOSE_BAD_REQUEST = 4400
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN_ORIGIN = 4403
CLOSE_NOT_FOUND = 4404
CLOSE_PRUNED = 4410  # resuming below the pruned mark; the reason names the cursor to use

# An alias CHANNEL_LAYERS never defines: Channels' get_channel_layer() answers
# None for it, so a consumer that names it gets no channel and no receive loop.
NO_CHANNEL_LAYER = "no-channel-layer"
MAX_CURSOR = 2**63 - 1  # the store's BigAutoField range
PONG = json.dumps({"type": "pong"})


class EventStreamConsumer(AsyncWebsocketConsumer):
    """One subscription: `kind="stream"` (a task, by `seq`, closes 1000 after its
    final event) or `kind="topic"` (a roadmap, by global `id`, never closes)."""

    # No channel of its own: the process's hub holds the one layer subscription of
    # each stream and topic.
    channel_layer_alias = NO_CHANNEL_LAYER

    def __init__(self, *, kind: str = "stream", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if kind not in ("stream", "topic"):
            raise ValueError(f"Unknown event stream kind {kind!r}")
        self.kind = kind
        self.store_key: str | None = None
        self.last_sent = 0  # only grows: the feed skips what the socket already has
        self.finished = False
        self.feed: Feed | None = None
        self.live_held: dict[str, tuple[int, int]] = {}  # maintained by the feed

    async def __call__(self, scope, receive, send) -> None:
        """Whatever ends the connection (a close, an error in a handler, the server
        shutting down), its place in the feed is released and it leaves the
        process's count of open sockets. Channels calls `disconnect` only on a
        clean close."""
        sockets.opened()
        try:
            await super().__call__(scope, receive, send)
        finally:
            sockets.closed()
            await self.release()

    async def connect(self) -> None:
        # Accept first: a refusal before accept reaches the client as a bare HTTP 403,
        # and a handshake that waits for the database can outlive daphne's handshake
        # timeout in a connect storm (the client sees the connection dropped).
        await self.accept()
        refusal = await self.refusal()
        if refusal is not None:
            self.finished = True
            await self.close(refusal)
            return
        # One read of the counter row, when something needs it: a stream's end, a
        # resume's pruned mark. A topic subscription from the start reads none (a
        # reconnect storm is a thousand of them); a new feed without a position
        # reads the store at its first event.
        counter = Marks(ended=False, pruned_through=0, last_seq=None)
        if self.kind == "stream" or self.last_sent:
            counter = await database_sync_to_async(marks)(key=self.store_key)
        pruned = counter.pruned_through
        if 0 < self.last_sent < pruned:
            # Events above the client's cursor are gone: it must reload the state
            # over HTTP, then resume from the mark (docs/events.md).
            self.finished = True
            await self.close(CLOSE_PRUNED, reason=f"pruned; resume with after={pruned}")
            return
        self.feed = await hub().subscribe(self.kind, self.store_key, position=counter.last_seq)
        # Read before the replay: if the stream had ended, the replay reaches its
        # final event unless the client already had it (then close here). A stream
        # that ended after the read closes when its final event arrives.
        await self.feed.replay(self)
        if self.kind == "stream" and counter.ended and not self.finished:
            self.finished = True
            await self.close(CLOSE_NORMAL)
        if not self.finished:
            await self.feed.attach(self)
        # From here until it closes, the socket's credentials are checked with
        # every other socket's, every few seconds (notifications.auth.Sentry).
        if not self.finished and (credential := self.scope.get("credential")):
            sentry().watch(self, credential)

    async def disconnect(self, code: int) -> None:
        await self.release()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Client frames: `{"type": "ping"}` is answered `{"type": "pong"}`; anything
        else (other JSON, text that is not JSON, binary) is ignored, and the stream
        goes on delivering."""
        try:
            message = json.loads(text_data) if text_data is not None else None
        except (ValueError, RecursionError):  # not JSON; JSON nested too deep to parse
            return
        if isinstance(message, dict) and message.get("type") == "ping" and not self.finished:
            await self.send(text_data=PONG)

    async def release(self) -> None:
        """Leave the feed and the credential checks; safe to call more than once."""
        self.finished = True
        sentry().forget(self)
        feed, self.feed = self.feed, None
        if feed is not None:
            await feed.leave(self)

    async def send_event(self, text: str, *, cursor: int | None, final: bool) -> None:
        """One event, as its publisher (or the store read) encoded it."""
        if self.finished:
            return
        await self.send(text_data=text)
        if cursor is not None:
            self.last_sent = cursor
        if final and self.kind == "stream":
            self.finished = True  # the feed calls end() once the event is everywhere

    async def end(self) -> None:
        await self.close(CLOSE_NORMAL)

    async def revoke(self) -> None:
        """The credentials the socket was opened with no longer hold (logout, token
        deleted, user deactivated): nothing more is sent, and it closes 4401."""
        await self.release()
        await self.close(CLOSE_UNAUTHENTICATED)

    async def refusal(self) -> int | None:
        """The close code for a connection that may not subscribe, else None.
        Sets the store key and the starting cursor. Authenticates here, after the
        accept: the handshake waits for no database call."""
        await authenticate(self.scope)
        user = self.scope["user"]
        if not user.is_authenticated:
            return CLOSE_UNAUTHENTICATED
        if not origin_allowed(self.scope):
            return CLOSE_FORBIDDEN_ORIGIN
        after = parse_after(self.scope.get("query_string", b""))
        if after is None:
            return CLOSE_BAD_REQUEST
        key = self.scope["url_route"]["kwargs"].get(
            "stream_id" if self.kind == "stream" else "topic_id"
        )
        if key is None:  # routing's fallback: a path no stream or topic has
            return CLOSE_NOT_FOUND
        self.store_key = await database_sync_to_async(authorize_stream)(
            user=user, kind=self.kind, key=key
        )
        if self.store_key is None:
            return CLOSE_NOT_FOUND
        self.last_sent = after
        return None


def parse_after(query_string: bytes) -> int | None:
    """`?after=` as a non-negative integer (0 when absent), None when malformed."""
    values = parse_qs(query_string.decode("latin-1"), keep_blank_values=True).get("after")
    if not values:
        return 0
    value = values[-1]
    if not (value.isascii() and value.isdigit()) or int(value) > MAX_CURSOR:
        return None
    return int(value)
