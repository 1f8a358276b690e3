"""Where live documents are kept while their work runs (notifications.live): a
document (a text or a list of items, with the fields its events carry), and the
two stores, this process's memory (embedded mode) or Redis (when the channel
layer is Redis, so any server process can read what another's work wrote).
Reads never fail: a store that cannot answer reads as empty (I6)."""

import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from django.conf import settings
from django.utils import timezone

from notifications import bounds
from roadmap_project.outbox import Outbox
from roadmap_project.per_loop import PerLoop

logger = logging.getLogger(__name__)

TEXT, ITEMS = "text", "items"
# A store that does not answer in this long (notifications.bounds: the time a
# behind event loop keeps its answer waiting does not count) is taken for down:
# live text pauses for the work at hand, the work goes on.
STORE_TIMEOUT_SECONDS = 2.0
# redis-py's own timeouts on the async client count the loop's time too: they
# are only the backstop, past the longest a bound can last.
CLIENT_TIMEOUT_SECONDS = STORE_TIMEOUT_SECONDS + bounds.LAG_ALLOWANCE_SECONDS
# Connections to the Redis store per event loop: one sends every change, the
# others serve reads; past this many reads at once, a read waits for one.
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


class MemoryStore:
    """Documents in this process, for the embedded mode (one process runs the
    work and serves the sockets). Read by view threads: under a lock."""

    def __init__(self) -> None:
        self._documents: dict[str, tuple[Document, float]] = {}
        self._lock = threading.Lock()

    async def append(
        self, document: Document, *, restart: bool, content: str | list[Any], ttl: float
    ) -> None:
        """Keep `document`, which already holds `content` (the store's common call;
        in memory the whole document is kept, so what changed needs no replay)."""
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


class _LoopClient:
    """One event loop's client and the outbox of its writers' changes
    (roadmap_project.outbox): one MULTI (one round trip on one connection) for
    everything queued while the last one was on its way. At 500 in flight, a
    pipeline of its own per change cost more CPU than the change, and writers
    waited in turn for the pool's connections. A change adds its commands to the
    pipeline; it fails if any of them did."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.changes: Outbox[Callable[[Any], None]] = Outbox(self._send)

    async def _send(self, changes: list[Callable[[Any], None]]) -> list[Exception | None]:
        async with bounds.within(STORE_TIMEOUT_SECONDS):
            async with self.client.pipeline(transaction=True) as pipe:
                counts = []
                for change in changes:
                    queued = len(pipe)
                    change(pipe)
                    counts.append(len(pipe) - queued)
                replies = await pipe.execute(raise_on_error=False)
        outcomes, first = [], 0
        for count in counts:  # each change's first error, if any
            own = replies[first : first + count]
            outcomes.append(next((r for r in own if isinstance(r, Exception)), None))
            first += count
        return outcomes

    async def close(self) -> None:
        """As its loop ends: its connections closed (the pool is the client's own)."""
        await self.client.aclose(close_connection_pool=True)


# A change that follows on from what the store holds: added to the body of a
# document whose head is there, every key's expiry renewed, in one command (with
# its reply, about a tenth of what a whole change costs to send and parse). A
# document whose head is gone (expired, or Redis lost its data) fails the
# change, and its writer starts it over, whole.
FOLLOW_ON = """
if redis.call('EXPIRE', KEYS[1], ARGV[1]) == 0 then
    return redis.error_reply('the live document is gone')
end
if ARGV[2] == 'text' then
    redis.call('APPEND', KEYS[2], ARGV[3])
else
    redis.call('RPUSH', KEYS[2], unpack(ARGV, 3))
end
for i = 2, #KEYS do
    redis.call('EXPIRE', KEYS[i], ARGV[1])
end
"""


class RedisStore:
    """Documents in Redis, for the distributed mode: a head (what the document
    is), a body (APPENDed text or RPUSHed items) and an index per stream and
    topic, all expiring with the work's lease. Changes are sent in MULTIs
    (_LoopClient), so a reader never sees a head without its body."""

    def __init__(self, url: str) -> None:
        # Imported here, once, not at the first write or subscribe, where the
        # import (most of a second on a busy machine) would eat the store timeout.
        import redis
        import redis.asyncio

        self._redis = redis
        self.url = url
        # Each loop's client and the outbox that sends its changes, closed with it.
        self._per_loop: PerLoop[_LoopClient] = PerLoop(self._new_client, _LoopClient.close)
        self._sync: Any = None

    def _new_client(self) -> _LoopClient:
        # A blocking pool: redis-py's default one raises at once when its 100
        # connections are in use, failing every write past the hundredth.
        pool = self._redis.asyncio.BlockingConnectionPool.from_url(
            self.url,
            max_connections=STORE_CONNECTIONS,
            timeout=CLIENT_TIMEOUT_SECONDS,
            socket_timeout=CLIENT_TIMEOUT_SECONDS,
            socket_connect_timeout=CLIENT_TIMEOUT_SECONDS,
        )
        return _LoopClient(self._redis.asyncio.Redis(connection_pool=pool))

    async def _client(self) -> Any:
        return (await self._per_loop.get()).client

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
        await (await self._per_loop.get()).changes.send(
            lambda pipe: self._queue_append(
                pipe, document, restart=restart, content=content, ttl=ttl
            )
        )

    def _queue_append(
        self, pipe: Any, document: Document, *, restart: bool, content: str | list[Any], ttl: float
    ) -> None:
        head, text, items = self._keys(document.key)
        seconds = max(1, round(ttl))
        indexes = [self._index("stream", document.stream), self._index("topic", document.topic)]
        if not restart:
            if document.kind == TEXT:
                body, added = text, [content]
            else:
                body, added = items, [json.dumps(item) for item in content]
            keys = [head, body, *indexes]
            pipe.eval(FOLLOW_ON, len(keys), *keys, seconds, document.kind, *added)
            return
        header = json.dumps(
            {
                "stream": document.stream,
                "topic": document.topic,
                "kind": document.kind,
                "fields": document.fields,
                "generation": document.generation,
            }
        )
        pipe.set(head, header, ex=seconds)
        pipe.delete(text, items)
        if content and document.kind == TEXT:
            pipe.append(text, content)
        elif content:
            pipe.rpush(items, *(json.dumps(item) for item in content))
        pipe.expire(text, seconds)
        pipe.expire(items, seconds)
        for index in indexes:
            pipe.sadd(index, document.key)
            pipe.expire(index, seconds)

    async def delete(self, document: Document) -> None:
        await (await self._per_loop.get()).changes.send(
            lambda pipe: self._queue_delete(pipe, document)
        )

    def _queue_delete(self, pipe: Any, document: Document) -> None:
        pipe.delete(*self._keys(document.key))
        pipe.srem(self._index("stream", document.stream), document.key)
        pipe.srem(self._index("topic", document.topic), document.key)

    async def documents(self, kind: str, key: str) -> list[Document]:
        client = await self._client()
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
        async with (await self._client()).pipeline(transaction=True) as pipe:
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


def read(key: str) -> Document | None:
    """The document as the store holds it now, from any thread (views)."""
    try:
        return store().read_now(key)
    except Exception:
        logger.warning("Could not read live document %s", key, exc_info=True)
        return None


async def documents(kind: str, key: str) -> list[Document]:
    """The live documents of a stream or a topic, for a new subscriber's snapshots."""
    found = await _within_timeout(store().documents(kind, key), f"{kind} {key}")
    return found or []


async def read_async(key: str) -> Document | None:
    return await _within_timeout(store().read(key), key)


async def _within_timeout[Found](reading: Awaitable[Found], what: str) -> Found | None:
    """A store read that cannot answer in time reads as nothing (I6)."""
    try:
        async with bounds.within(STORE_TIMEOUT_SECONDS):
            return await reading
    except Exception:
        logger.warning("Could not read live documents of %s", what, exc_info=True)
        return None
