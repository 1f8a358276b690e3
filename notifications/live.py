"""Live documents: what a piece of running work has written so far (DESIGN §5
"Live content"), kept while it runs where any server process can read it, and
pushed to the stream and topic that carry it as live-only events.

A document is a text (offsets count Unicode code points) or a list of items
(offsets count items). Its writer coalesces what it is given into at most one
change per LIVE_INTERVAL_SECONDS, writes each change to the store, then publishes
it; a feed (notifications.hub) holds, per socket, how much of each document the
socket has, so it sends a change only when it follows on, and otherwise reads
the document whole from the store as a snapshot. The store is this process's
memory, or Redis when the channel layer is Redis (writers and sockets then live
in different processes). Documents expire with their work's lease. Losing one
loses only live text, never a stored result (I6)."""

import asyncio
import json
import logging
import threading
import time
import weakref
from dataclasses import dataclass, field, replace
from functools import cache
from typing import Any

from django.conf import settings
from django.utils import timezone

from notifications.services import apublish, envelope

logger = logging.getLogger(__name__)

TEXT, ITEMS = "text", "items"
SNAPSHOT, DELTA = "content_snapshot", "content_delta"
LIVE_INTERVAL_SECONDS = 0.1
# A store that does not answer in this long is taken for down: live text pauses
# for the work at hand, the work goes on.
STORE_TIMEOUT_SECONDS = 2.0
# After a failed store write, the writer waits this long before it tries again.
STORE_RETRY_SECONDS = 2.0
# Connections to the Redis store per event loop. Every running attempt writes
# every 100 ms; past this many writes at once, a write waits for a connection
# (within STORE_TIMEOUT_SECONDS) instead of failing.
STORE_CONNECTIONS = 50


@dataclass(frozen=True)
class Document:
    """One document as the store holds it. `generation` counts restarts (an
    answer that starts over): a change of another generation than a socket holds
    cannot follow on from what it holds."""

    key: str
    stream: str
    topic: str
    kind: str  # TEXT or ITEMS
    fields: dict[str, Any]  # the events' identifying fields and what the draft shows
    generation: int = 0
    text: str = ""
    items: list[Any] = field(default_factory=list)

    @property
    def size(self) -> int:
        return len(self.text) if self.kind == TEXT else len(self.items)

    @property
    def content(self) -> str | list[Any]:
        return self.text if self.kind == TEXT else self.items

    def event(self, type_: str, *, offset: int, content: str | list[Any]) -> dict[str, Any]:
        return {
            "type": type_,
            "id": None,
            "seq": None,
            **self.fields,
            "offset": offset,
            self.kind: content,
            "timestamp": timezone.localtime().isoformat(),
        }


def change_envelopes(document: Document, body: dict[str, Any], *, size: int) -> list[dict]:
    """A change's envelopes, to the document's topic and stream. `live` tells the
    feeds where the change sits: which document, which generation, its offset
    and its size."""
    text = json.dumps(body)
    live = {
        "doc": document.key,
        "generation": document.generation,
        "offset": body["offset"],
        "size": size,
    }
    return [
        envelope(kind="topic", key=document.topic, text=text) | {"live": live},
        envelope(kind="stream", key=document.stream, text=text) | {"live": live},
    ]


# --- the stores ----------------------------------------------------------------


class MemoryStore:
    """Documents in this process, for the embedded mode (one process runs the
    work and serves the sockets). Read by view threads: under a lock."""

    def __init__(self) -> None:
        self._documents: dict[str, tuple[Document, float]] = {}
        self._lock = threading.Lock()

    async def write(self, document: Document, *, ttl: float) -> None:
        with self._lock:
            self._documents[document.key] = (document, time.monotonic() + ttl)

    async def delete(self, document: Document) -> None:
        with self._lock:
            self._documents.pop(document.key, None)

    async def documents(self, kind: str, key: str) -> list[Document]:
        now = time.monotonic()
        with self._lock:
            return [
                document
                for document, expires in self._documents.values()
                if expires > now and getattr(document, kind) == key
            ]

    async def read(self, key: str) -> Document | None:
        return self.read_now(key)

    def read_now(self, key: str) -> Document | None:
        with self._lock:
            found = self._documents.get(key)
        if found is None or found[1] <= time.monotonic():
            return None
        return found[0]


class RedisStore:
    """Documents in Redis, for the distributed mode: a head (what the document
    is), a body (APPENDed text or RPUSHed items) and an index per stream and
    topic, all expiring with the work's lease. Each change is one MULTI, so a
    reader never sees a head without its body."""

    def __init__(self, url: str) -> None:
        # Imported here, once, not at the first write or subscribe, where the
        # import (most of a second on a busy machine) would eat the store timeout.
        import redis
        import redis.asyncio

        self._redis = redis
        self.url = url
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any]
        self._clients = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        self._sync: Any = None

    def _client(self):
        loop = asyncio.get_running_loop()
        with self._lock:
            client = self._clients.get(loop)
            if client is None:
                # A blocking pool: redis-py's default one raises at once when its
                # 100 connections are in use, failing every write past the hundredth.
                pool = self._redis.asyncio.BlockingConnectionPool.from_url(
                    self.url,
                    max_connections=STORE_CONNECTIONS,
                    timeout=STORE_TIMEOUT_SECONDS,
                    socket_timeout=STORE_TIMEOUT_SECONDS,
                    socket_connect_timeout=STORE_TIMEOUT_SECONDS,
                )
                client = self._clients[loop] = self._redis.asyncio.Redis(connection_pool=pool)
        return client

    def _sync_client(self):
        """For views, which read from threads; redis-py's pool is thread-safe."""
        if self._sync is None:
            self._sync = self._redis.Redis.from_url(
                self.url,
                socket_timeout=STORE_TIMEOUT_SECONDS,
                socket_connect_timeout=STORE_TIMEOUT_SECONDS,
            )
        return self._sync

    @staticmethod
    def _keys(key: str) -> tuple[str, str, str]:
        return f"live:{key}:head", f"live:{key}:text", f"live:{key}:items"

    @staticmethod
    def _index(kind: str, key: str) -> str:
        return f"live:{kind}:{key}"

    async def append(
        self, document: Document, *, restart: bool, content: str | list[Any], ttl: float
    ) -> None:
        """The document's new head, and `content` added to its body (its body
        replaced, after a restart)."""
        head, text, items = self._keys(document.key)
        seconds = max(1, round(ttl))
        header = json.dumps(
            {
                "stream": document.stream,
                "topic": document.topic,
                "kind": document.kind,
                "fields": document.fields,
                "generation": document.generation,
            }
        )
        async with self._client().pipeline(transaction=True) as pipe:
            pipe.set(head, header, ex=seconds)
            if restart:
                pipe.delete(text, items)
            if content and document.kind == TEXT:
                pipe.append(text, content)
            elif content:
                pipe.rpush(items, *(json.dumps(item) for item in content))
            pipe.expire(text, seconds)
            pipe.expire(items, seconds)
            for kind, key in (("stream", document.stream), ("topic", document.topic)):
                pipe.sadd(self._index(kind, key), document.key)
                pipe.expire(self._index(kind, key), seconds)
            await pipe.execute()

    async def delete(self, document: Document) -> None:
        async with self._client().pipeline(transaction=True) as pipe:
            pipe.delete(*self._keys(document.key))
            pipe.srem(self._index("stream", document.stream), document.key)
            pipe.srem(self._index("topic", document.topic), document.key)
            await pipe.execute()

    async def documents(self, kind: str, key: str) -> list[Document]:
        client = self._client()
        members = [m.decode() for m in await client.smembers(self._index(kind, key))]
        if not members:
            return []
        async with client.pipeline(transaction=True) as pipe:
            for member in members:
                self._queue_read(pipe, member)
            replies = await pipe.execute()
        found = [self._document(m, *replies[3 * i : 3 * i + 3]) for i, m in enumerate(members)]
        return [document for document in found if document is not None]

    async def read(self, key: str) -> Document | None:
        async with self._client().pipeline(transaction=True) as pipe:
            self._queue_read(pipe, key)
            return self._document(key, *await pipe.execute())

    def read_now(self, key: str) -> Document | None:
        with self._sync_client().pipeline(transaction=True) as pipe:
            self._queue_read(pipe, key)
            return self._document(key, *pipe.execute())

    def _queue_read(self, pipe: Any, key: str) -> None:
        head, text, items = self._keys(key)
        pipe.get(head)
        pipe.get(text)
        pipe.lrange(items, 0, -1)

    @staticmethod
    def _document(key: str, head: bytes | None, text: bytes | None, items: list) -> Document | None:
        if head is None:
            return None
        header = json.loads(head)
        return Document(
            key=key,
            stream=header["stream"],
            topic=header["topic"],
            kind=header["kind"],
            fields=header["fields"],
            generation=header["generation"],
            text=(text or b"").decode(),
            items=[json.loads(item) for item in items],
        )


@cache
def store() -> MemoryStore | RedisStore:
    """The configured store: Redis when the channel layer is (NOTIFICATIONS_LIVE_REDIS_URL)."""
    url = settings.NOTIFICATIONS_LIVE_REDIS_URL
    return RedisStore(url) if url else MemoryStore()


async def _store_append(
    document: Document, *, restart: bool, content: str | list[Any], ttl: float
) -> None:
    current = store()
    if isinstance(current, RedisStore):
        await current.append(document, restart=restart, content=content, ttl=ttl)
    else:
        await current.write(document, ttl=ttl)


# --- writing -------------------------------------------------------------------


class Writer:
    """Writes one document while its work runs. `restart`, `add_text` and
    `add_items` never block: changes wait in a buffer that a flusher task sends
    at most every LIVE_INTERVAL_SECONDS, store first, then the layer.

    Live text is best effort; the work goes on whatever the store does. A store
    write that fails (or times out, so may or may not have landed) is not
    retried as such: after STORE_RETRY_SECONDS the writer says everything again,
    as a snapshot of a new generation. A publish that fails needs nothing: the
    store has the change, and feeds that see the gap read it from there."""

    def __init__(
        self,
        *,
        key: str,
        stream: str,
        topic: str,
        kind: str,
        fields: dict[str, Any],
        ttl: float,
    ) -> None:
        self.document = Document(key=key, stream=stream, topic=topic, kind=kind, fields=fields)
        self.ttl = ttl
        self._pending: list[Any] = []  # text pieces or items not yet sent
        self._restart = False  # the pending change starts the document over
        self._written = False  # whether the store may hold the document
        self._wake = asyncio.Event()
        self._next_flush = 0.0  # monotonic time before which nothing is sent
        self._flusher: asyncio.Task | None = None
        self._flushing = asyncio.Lock()
        self._failing = False  # the last store write failed
        self._closed = False

    @property
    def held(self) -> str | list[Any]:
        """What a client holds once everything buffered is sent."""
        if self.document.kind == TEXT:
            return self.document.text + "".join(self._pending)
        return [*self.document.items, *self._pending]

    def restart(self) -> None:
        if self._closed or (not self._written and not self._pending and not self._restart):
            return  # nothing was said yet: nothing to take back
        self._pending.clear()
        self._restart = True
        self._schedule()

    def add_text(self, text: str) -> None:
        if text and not self._closed:
            self._pending.append(text)
            self._schedule()

    def add_items(self, items: list[Any]) -> None:
        if items and not self._closed:
            self._pending.extend(items)
            self._schedule()

    def _schedule(self) -> None:
        self._wake.set()
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_forever())

    async def settle(self, final: str | list[Any]) -> None:
        """Make what clients hold equal `final` (the content as stored): the rest
        of it as a delta when what was written is its beginning, else a restart
        with all of it; then send everything, and wait for that (unless the store
        is failing: the work does not wait on it)."""
        held = self.held
        if self.document.kind == TEXT and isinstance(final, str) and final.startswith(held):
            self.add_text(final[len(held) :])
        elif self.document.kind == ITEMS and final[: len(held)] == held:
            self.add_items(list(final[len(held) :]))
        else:
            self.restart()
            if self.document.kind == TEXT:
                self.add_text(final)
            else:
                self.add_items(list(final))
        await self._stop_flusher()
        if (self._pending or self._restart) and not self._failing:
            await self._flush()

    async def close(self) -> None:
        """The work ended: drop the document, so no new socket gets a snapshot.
        Safe to call more than once."""
        await self._stop_flusher()
        # A failing store is not asked again: the document expires there.
        dropping = self._written and not self._failing and not self._closed
        self._closed = True
        if dropping:
            try:
                async with asyncio.timeout(STORE_TIMEOUT_SECONDS):
                    await store().delete(self.document)
            except Exception:
                logger.warning("Could not drop live document %s", self.document.key, exc_info=True)

    async def _stop_flusher(self) -> None:
        """Stop the flusher between two changes, never inside one: a change cut
        short would be in the store and not published, or lost."""
        async with self._flushing:
            flusher, self._flusher = self._flusher, None
            if flusher is not None:
                flusher.cancel()
                await asyncio.gather(flusher, return_exceptions=True)

    async def _flush_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            delay = self._next_flush - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if self._pending or self._restart:
                async with self._flushing:
                    await self._flush()

    async def _flush(self) -> None:
        """Send what is buffered as one change: a snapshot after a restart (or as
        the document's first change), else a delta at the size already sent."""
        restart = self._restart or not self._written
        pending, self._pending, self._restart = self._pending, [], False
        self._next_flush = time.monotonic() + LIVE_INTERVAL_SECONDS
        content: str | list[Any] = "".join(pending) if self.document.kind == TEXT else pending
        document = self.document
        if restart:
            generation = document.generation + (1 if self._written else 0)
            document = replace(document, generation=generation, text="", items=[])
        offset = document.size
        grown = (
            replace(document, text=document.text + content)
            if document.kind == TEXT
            else replace(document, items=[*document.items, *content])
        )
        try:
            async with asyncio.timeout(STORE_TIMEOUT_SECONDS):
                await _store_append(grown, restart=restart, content=content, ttl=self.ttl)
        except Exception:
            self._store_failed(grown)
            return
        if self._failing:
            self._failing = False
            logger.info("Live content of %s resumed", self.document.key)
        self.document, self._written = grown, True
        body = grown.event(SNAPSHOT if restart else DELTA, offset=offset, content=content)
        try:
            await apublish(change_envelopes(grown, body, size=len(content)))
        except Exception:
            logger.info("Could not publish a live change of %s", grown.key, exc_info=True)

    def _store_failed(self, grown: Document) -> None:
        """Whether the write landed is unknown: say all of it again later, whole."""
        if not self._failing:
            self._failing = True
            logger.warning(
                "Live content of %s paused: the live store failed; the work goes on",
                grown.key,
                exc_info=True,
            )
        self._written = True  # it may have landed: the next change starts over
        # All of it: what the store had, this change, and what arrived meanwhile.
        whole = [grown.text] if grown.kind == TEXT else list(grown.items)
        self._pending = [*whole, *self._pending]
        self._restart = True
        self._next_flush = time.monotonic() + STORE_RETRY_SECONDS
        self._wake.set()


def read(key: str) -> Document | None:
    """The document as the store holds it now, from any thread (views)."""
    try:
        return store().read_now(key)
    except Exception:
        logger.warning("Could not read live document %s", key, exc_info=True)
        return None


async def documents(kind: str, key: str) -> list[Document]:
    """The live documents of a stream or a topic, for a new subscriber's snapshots."""
    try:
        async with asyncio.timeout(STORE_TIMEOUT_SECONDS):
            return await store().documents(kind, key)
    except Exception:
        logger.warning("Could not read live documents of %s %s", kind, key, exc_info=True)
        return []


async def read_async(key: str) -> Document | None:
    try:
        async with asyncio.timeout(STORE_TIMEOUT_SECONDS):
            return await store().read(key)
    except Exception:
        logger.warning("Could not read live document %s", key, exc_info=True)
        return None
