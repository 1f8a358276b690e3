"""The store catch-up of one process: one check per period for all its sockets.

The channel layer is only the fast path; the store is the truth (DESIGN §5, I6).
Every socket used to poll the store on its own: 1,000 idle sockets made about 500
queries a second. Now the sockets of one event loop register here, and one task
per loop asks the store for the newest cursor of every subscribed stream and topic
(two queries per period, however many sockets); only a socket that is behind, or
whose group join failed, reads its events and joins again."""

import asyncio
import logging
import weakref
from typing import Protocol

from channels.db import database_sync_to_async
from django.conf import settings

from notifications.selectors import newest_cursors

logger = logging.getLogger(__name__)


class Subscriber(Protocol):
    kind: str
    store_key: str | None
    last_sent: int
    joined: bool
    finished: bool

    async def resync(self) -> None:
        """Join the group if needed, then send what the store has above the cursor."""


class CatchUp:
    def __init__(self) -> None:
        self.subscribers: set[Subscriber] = set()
        self.rounds = 0  # store checks made (two queries at most each), for tests and benchmarks
        self.resyncs = 0  # sockets that were behind and read their own events
        self._task: asyncio.Task | None = None

    def add(self, subscriber: Subscriber) -> None:
        self.subscribers.add(subscriber)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    def discard(self, subscriber: Subscriber) -> None:
        self.subscribers.discard(subscriber)
        if not self.subscribers and self._task is not None:
            self._task.cancel()
            self._task = None

    async def _run(self) -> None:
        while self.subscribers:
            await asyncio.sleep(settings.NOTIFICATIONS_CATCH_UP_SECONDS)
            try:
                await self.check()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning("Store catch-up round failed; retrying", exc_info=True)

    async def check(self) -> None:
        """One round: the newest cursors, then a resync of each socket behind them."""
        live = [s for s in self.subscribers if not s.finished and s.store_key is not None]
        if not live:
            return
        keys = {(s.kind, s.store_key) for s in live}
        newest = await database_sync_to_async(newest_cursors)(keys=keys)
        self.rounds += 1
        behind = [
            s for s in live if not s.joined or newest.get((s.kind, s.store_key), 0) > s.last_sent
        ]
        self.resyncs += len(behind)
        for outcome in await asyncio.gather(*(s.resync() for s in behind), return_exceptions=True):
            if isinstance(outcome, Exception):
                logger.warning("Catch-up of a socket failed; retrying", exc_info=outcome)


_per_loop: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, CatchUp]" = (
    weakref.WeakKeyDictionary()
)


def catch_up() -> CatchUp:
    """The catch-up of the running event loop (daphne runs one per process)."""
    loop = asyncio.get_running_loop()
    if loop not in _per_loop:
        _per_loop[loop] = CatchUp()
    return _per_loop[loop]
