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
import time
from dataclasses import replace
from typing import Any

from notifications import bounds
from notifications.live_store import (
    ITEMS,
    STORE_TIMEOUT_SECONDS,
    TEXT,
    Document,
    store,
)
from notifications.services import apublish, envelope

logger = logging.getLogger(__name__)

SNAPSHOT, DELTA = "content_snapshot", "content_delta"
LIVE_INTERVAL_SECONDS = 0.1
# After a failed store write, the writer waits this long before it tries again.
STORE_RETRY_SECONDS = 2.0


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
        with all of it; then send everything at once, and wait for that, within
        the store's bound. A failing store gets this last chance too (all of it,
        as a snapshot): a store that is down fails it at once, one that does not
        answer within the bound, and the work goes on either way.

        The flusher stops first: a change on its way to the store has left the
        buffer but is not yet in the document, so what is held would miss it, and
        the rest of `final` would say it twice."""
        await self._stop_flusher()
        held = self.held
        if self.document.kind == TEXT and isinstance(final, str) and final.startswith(held):
            rest: list[Any] = [final[len(held) :]] if len(final) > len(held) else []
        elif self.document.kind == ITEMS and final[: len(held)] == held:
            rest = list(final[len(held) :])
        else:  # all of it, over what was said (if anything was)
            self._restart = self._restart or self._written or bool(self._pending)
            self._pending.clear()
            rest = ([final] if final else []) if self.document.kind == TEXT else list(final)
        self._pending.extend(rest)
        if self._pending or self._restart:
            await self._flush()

    async def close(self) -> None:
        """The work ended: drop the document, so no new socket gets a snapshot.
        Safe to call more than once."""
        await self._stop_flusher()
        # A failing store is asked too: a change that outlived its writer's bound
        # may still land, and the delete, sent after it, takes it away.
        dropping = self._written and not self._closed
        self._closed = True
        if dropping:
            try:
                async with bounds.within(STORE_TIMEOUT_SECONDS):
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
            async with bounds.within(STORE_TIMEOUT_SECONDS):
                await store().append(grown, restart=restart, content=content, ttl=self.ttl)
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
