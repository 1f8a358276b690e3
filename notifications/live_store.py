"""Where live documents are kept while their work runs (notifications.live): a
document (a text or a list of items, with the fields its events carry), and the
two stores, this process's memory (embedded mode) or Redis (when the channel
layer is Redis, so any server process can read what another's work wrote).
Reads never fail: a store that cannot answer reads as empty (I6)."""

import asyncio
import json
import logging
import threading
import time
import weakref
from collections.abc import Awaitable
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from django.conf import settings
from django.utils import timezone

logger = logging.getLogger(__name__)

TEXT, ITEMS = "text", "items"
# A store that does not answer in this long is taken for down: live text pauses
# for the work at hand, the work goes on.
STORE_TIMEOUT_SECONDS = 2.0
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
        async with asyncio.timeout(STORE_TIMEOUT_SECONDS):
            return await reading
    except Exception:
        logger.warning("Could not read live documents of %s", what, exc_info=True)
        return None
