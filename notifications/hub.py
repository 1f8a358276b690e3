"""The event hub of one process: one channel-layer subscription per stream or
topic, however many local sockets watch it (Centrifugo's hub,
docs/decisions/0007-event-hub.md).

A feed is one stream or topic watched in this process. Its attached sockets have
replayed the store; its `position` is the store position (a stream's `seq`, a
topic's `topic_seq`) of the last event every attached socket has had or skipped.
A published event carries its JSON text, encoded once by the publisher, its
client cursor and its position. The next position goes, as that same text, to
every attached socket whose cursor is below it; anything else (a dropped layer
message, an event of another process, two writers publishing out of commit
order) is a gap, and the feed reads the store once for all its sockets. Every
NOTIFICATIONS_CATCH_UP_SECONDS the hub asks the store for the newest cursor of
all its feeds (two queries) and catches up the feeds that are behind, and joins
again those whose layer subscription failed: the layer is only the fast path,
the store is the truth (I6)."""

import asyncio
import json
import logging
import weakref
from typing import Any, Protocol

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings

from notifications import live, live_store
from notifications.selectors import events_after, newest_cursors
from notifications.services import feed_group

logger = logging.getLogger(__name__)

PAGE_SIZE = 500
# A layer call that hangs (Redis unreachable, no refusal) must not hold up a socket.
LAYER_TIMEOUT_SECONDS = 2.0
# Backoff of the layer receive while the layer fails.
RECEIVE_RETRY_FIRST_SECONDS = 0.5
RECEIVE_RETRY_MAX_SECONDS = 10.0


class Socket(Protocol):
    """What a feed needs of a subscriber (notifications.consumers)."""

    last_sent: int  # the client cursor of the last event it sent or skipped
    finished: bool
    # Per live document (notifications.live): the (generation, size) it holds.
    live_held: dict[str, tuple[int, int]]

    async def send_event(self, text: str, *, cursor: int | None, final: bool) -> None:
        """Send one event's text; a stored event advances `last_sent`, a final one
        marks the socket finished."""

    async def end(self) -> None:
        """Close after the final event (1000)."""


class Feed:
    """One stream or topic in this process. Deliveries, catch-ups and attaches
    run under `lock`, so a socket never gets an event twice or out of order."""

    def __init__(self, hub: "Hub", kind: str, key: str, position: int | None) -> None:
        self.hub = hub
        self.kind = kind
        self.key = key
        self.group = feed_group(kind, key)
        self.sockets: set[Socket] = set()  # attached: replayed, now served by the feed
        self.members = 0  # sockets attached or still replaying; the feed lives while > 0
        self.position = position  # None: unknown, the next event is read from the store
        self.head: int | None = None  # the cursor of the last event the feed delivered
        self.joined = False  # whether the layer subscription is known to be in place
        self.lock = asyncio.Lock()
        self.membership = asyncio.Lock()  # joins and leaves of the layer group, in order

    # --- sockets -------------------------------------------------------------

    async def replay(self, socket: Socket) -> None:
        """A new socket's replay from its own cursor; not under the lock (it is not
        attached yet, and the feed's position does not move)."""
        await self.read_store([socket], after=socket.last_sent)

    async def attach(self, socket: Socket) -> None:
        """Serve a replayed socket from now on. If the feed delivered events while
        the socket replayed, they are in the store: read them once more."""
        async with self.lock:
            if self.head is not None and socket.last_sent < self.head:
                await self.read_store([socket], after=socket.last_sent)
            if not socket.finished:
                self.sockets.add(socket)
                # After its replay, the socket's snapshot of every live document
                # of the feed, under the lock: the changes that follow find it.
                for document in await live_store.documents(self.kind, self.key):
                    await self.send_live_snapshot(socket, document)

    async def leave(self, socket: Socket) -> None:
        self.sockets.discard(socket)
        self.members -= 1
        if not self.members:
            await self.sync_membership()

    # --- events --------------------------------------------------------------

    async def on_message(self, message: dict[str, Any]) -> None:
        """A published event: the next position goes out as is; a gap is read from
        the store; a position already passed is a duplicate. With no socket
        attached there is nobody to read for: the feed notes the event, and a
        socket still replaying reads the store again when it attaches (`head`)."""
        async with self.lock:
            if "live" in message:
                await self.deliver_change(message)
                return
            cursor, position = message["cursor"], message["position"]
            if cursor is None:  # live-only (concept_progress): nothing to order against
                await self.send_to(list(self.sockets), message["text"], cursor=None, final=False)
            elif self.position is not None and position <= self.position:
                return
            elif not self.sockets or (self.position is not None and position == self.position + 1):
                self.position, self.head = position, max(self.head or 0, cursor)
                await self.send_to(
                    list(self.sockets), message["text"], cursor=cursor, final=message["final"]
                )
            else:
                await self.catch_up(seen=(cursor, position))

    async def deliver_change(self, message: dict[str, Any]) -> None:
        """A change of a live document, to each socket exactly once and in order:
        sent as is where it follows on from what the socket holds, skipped where
        the socket already has it; a socket's first change of a generation goes as
        a snapshot; a socket that missed a change gets the document whole from the
        store instead (one read for all such sockets). Call under `lock`."""
        live_change = message["live"]
        doc, generation = live_change["doc"], live_change["generation"]
        offset, size = live_change["offset"], live_change["size"]
        as_snapshot: str | None = None
        behind = []
        for socket in list(self.sockets):
            if socket.finished:
                continue
            held_generation, held = socket.live_held.get(doc, (-1, 0))
            if generation < held_generation or (
                generation == held_generation and offset + size <= held and size
            ):
                continue  # older than, or within, what the socket has
            if generation == held_generation and offset == held:
                text = message["text"]
            elif generation > held_generation and offset == 0:
                if as_snapshot is None:
                    as_snapshot = json.dumps(json.loads(message["text"]) | {"type": live.SNAPSHOT})
                text = as_snapshot
            else:
                behind.append(socket)
                continue
            socket.live_held[doc] = (generation, offset + size)
            await self.send_to([socket], text, cursor=None, final=False)
        if behind and (document := await live_store.read_async(doc)) is not None:
            for socket in behind:
                await self.send_live_snapshot(socket, document)

    async def send_live_snapshot(self, socket: Socket, document: live_store.Document) -> None:
        body = document.event(live.SNAPSHOT, offset=0, content=document.content)
        socket.live_held[document.key] = (document.generation, document.size)
        await self.send_to([socket], json.dumps(body), cursor=None, final=False)

    async def catch_up(self, seen: tuple[int, int] | None = None) -> None:
        """Read the store once for every attached socket, from the lowest cursor.
        `seen` is the (cursor, position) of the live event that showed a gap. Call
        under `lock`."""
        sockets = [s for s in self.sockets if not s.finished]
        if not sockets:
            return
        last = await self.read_store(sockets, after=min(s.last_sent for s in sockets))
        if last is not None:
            self.head, self.position = max(self.head or 0, last[0]), last[1]
        elif seen is not None:
            # Nothing above the lowest cursor: every socket is past that event and
            # past everything before it.
            self.head = max(self.head or 0, seen[0])
            self.position = max(self.position or 0, seen[1])

    async def read_store(
        self, sockets: list[Socket], *, after: int
    ) -> tuple[int, int | None] | None:
        """Send `sockets` what the store has above `after`, each event encoded once;
        the (cursor, position) of the last event read, or None."""
        last = None
        while True:
            page = await database_sync_to_async(events_after)(
                kind=self.kind, key=self.key, after=after, limit=PAGE_SIZE
            )
            for event in page:
                message = event.as_message()
                cursor = message["seq" if self.kind == "stream" else "id"]
                await self.send_to(sockets, json.dumps(message), cursor=cursor, final=event.final)
                after = cursor
                last = (cursor, cursor if self.kind == "stream" else event.topic_seq)
            if len(page) < PAGE_SIZE:
                return last

    async def send_to(
        self, sockets: list[Socket], text: str, *, cursor: int | None, final: bool
    ) -> None:
        """The same text to every socket below `cursor` (all of them, for a
        live-only event). After a final event the sockets close, once every one
        has it: a close costs more than a frame."""
        ended = []
        for socket in sockets:
            if socket.finished or (cursor is not None and cursor <= socket.last_sent):
                continue
            try:
                await socket.send_event(text, cursor=cursor, final=final)
            except Exception:
                # A socket that cannot take a frame is going away; it releases itself.
                self.sockets.discard(socket)
                logger.info("Dropped a socket of %s that failed a send", self.group, exc_info=True)
            else:
                if socket.finished:
                    ended.append(socket)
        for socket in ended:
            await socket.end()

    def behind(self, newest: int) -> bool:
        return any(newest > s.last_sent for s in self.sockets if not s.finished)

    # --- the layer subscription ----------------------------------------------

    async def sync_membership(self) -> None:
        """Bring the layer group in line with the members: joined while there are
        any, left (and the feed forgotten) when there are none. A failed join is
        retried by the hub's periodic check."""
        async with self.membership:
            if self.members and not self.joined:
                try:
                    async with asyncio.timeout(LAYER_TIMEOUT_SECONDS):
                        await self.hub.layer.group_add(self.group, await self.hub.channel())
                except Exception:
                    self.hub.layer_failed("group_add")
                    return
                self.joined = True
                self.hub.layer_recovered("group_add")
            if not self.members and self.joined:
                self.joined = False
                # While the layer is down, the membership expires with it.
                if "group_add" not in self.hub.failing:
                    try:
                        async with asyncio.timeout(LAYER_TIMEOUT_SECONDS):
                            await self.hub.layer.group_discard(self.group, await self.hub.channel())
                    except Exception:
                        self.hub.layer_failed("group_discard")  # it expires in the layer
            if not self.members:
                self.hub.forget(self)


class Hub:
    """The feeds of one event loop (daphne runs one per process), one layer
    channel for all of them, one receive loop and one periodic store check."""

    def __init__(self, layer: Any) -> None:
        self.layer = layer
        self.feeds: dict[tuple[str, str], Feed] = {}
        self.rounds = 0  # periodic store checks made, for tests and benchmarks
        self.catch_ups = 0  # feeds the periodic check found behind and read for
        self.failing: set[str] = set()  # layer operations in a failure streak (log once)
        self._channel: str | None = None
        self._receiving: asyncio.Task | None = None
        self._checking: asyncio.Task | None = None

    async def subscribe(self, kind: str, key: str, *, position: int | None) -> Feed:
        """The feed of (kind, key), joined to its layer group before the caller
        replays the store (subscribe, then fetch). `position` is the store's
        newest position as the caller read it before, used if the feed is new: a
        stale one, or None, only costs a store read at the next event."""
        feed = self.feeds.get((kind, key))
        if feed is None:
            feed = self.feeds[kind, key] = Feed(self, kind, key, position)
        feed.members += 1
        if self._checking is None or self._checking.done():
            self._checking = asyncio.get_running_loop().create_task(self._check_periodically())
        if not feed.joined and "group_add" not in self.failing:
            # While the layer is known to fail, connects do not wait for it: the
            # periodic check joins again.
            await feed.sync_membership()
        return feed

    def forget(self, feed: Feed) -> None:
        """Drop a feed without members. The periodic check stops with the last feed;
        the receive loop stays for the life of the event loop (one idle task), so
        the hub's channel is never abandoned in the layer."""
        if self.feeds.get((feed.kind, feed.key)) is feed:
            del self.feeds[feed.kind, feed.key]
        if not self.feeds and self._checking is not None:
            self._checking.cancel()
            self._checking = None

    async def channel(self) -> str:
        """The hub's one layer channel, and its receive loop."""
        if self._channel is None:
            self._channel = await self.layer.new_channel()
        if self._receiving is None or self._receiving.done():
            self._receiving = asyncio.get_running_loop().create_task(self._receive())
        return self._channel

    async def _receive(self) -> None:
        delay = RECEIVE_RETRY_FIRST_SECONDS
        while True:
            try:
                message = await self.layer.receive(self._channel)
            except Exception:
                self.layer_failed("receive")
                # A layer that lost its data (Redis restarted) lost the groups too.
                for feed in self.feeds.values():
                    feed.joined = False
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECEIVE_RETRY_MAX_SECONDS)
                continue
            delay = RECEIVE_RETRY_FIRST_SECONDS
            self.layer_recovered("receive")
            feed = self.feeds.get((message.get("kind"), message.get("key")))
            if feed is None:
                continue
            try:
                await feed.on_message(message)
            except Exception:
                logger.warning(
                    "Delivery to %s failed; the next check retries", feed.group, exc_info=True
                )

    async def _check_periodically(self) -> None:
        while self.feeds:
            await asyncio.sleep(settings.NOTIFICATIONS_CATCH_UP_SECONDS)
            try:
                await self.check()
            except Exception:
                logger.warning("Store catch-up round failed; retrying", exc_info=True)

    async def check(self) -> None:
        """One round: join again where the join failed, then the newest cursors of
        every feed (two queries), then one store read per feed that is behind."""
        feeds = [f for f in self.feeds.values() if f.members]
        await asyncio.gather(*(f.sync_membership() for f in feeds if not f.joined))
        watched = [f for f in feeds if f.sockets]
        if not watched:
            return
        newest = await database_sync_to_async(newest_cursors)(
            keys={(f.kind, f.key) for f in watched}
        )
        self.rounds += 1
        behind = [f for f in watched if f.behind(newest.get((f.kind, f.key), 0))]
        self.catch_ups += len(behind)
        for feed in behind:
            try:
                async with feed.lock:
                    await feed.catch_up()
            except Exception:
                logger.warning("Catch-up of %s failed; retrying", feed.group, exc_info=True)

    def layer_failed(self, operation: str) -> None:
        if operation not in self.failing:
            self.failing.add(operation)
            logger.warning(
                "Channel layer %s failed; serving events from the store every %s s "
                "until the layer is back",
                operation,
                settings.NOTIFICATIONS_CATCH_UP_SECONDS,
                exc_info=True,
            )

    def layer_recovered(self, operation: str) -> None:
        if operation in self.failing:
            self.failing.discard(operation)
            logger.info("Channel layer %s works again", operation)


_per_loop: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub]" = weakref.WeakKeyDictionary()


def hub() -> Hub:
    """The hub of the running event loop, for the configured channel layer."""
    loop = asyncio.get_running_loop()
    layer = get_channel_layer()
    current = _per_loop.get(loop)
    if current is None or current.layer is not layer:
        current = _per_loop[loop] = Hub(layer)
    return current
