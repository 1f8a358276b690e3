"""One resource per event loop (a Redis client, an HTTP client), closed as that
loop ends.

A client's connections belong to the loop that opened them, and work runs on
several loops: the server's, and a new one for each Celery task (asgiref's
async_to_sync). Kept past its loop, a client holds its sockets open for good,
one per task. asyncio closes a loop's live async generators before closing the
loop (`shutdown_asyncgens`, which asyncio.run and async_to_sync call), so a
generator suspended in a `try` closes the resource then, on its own loop, as it
must be, and forgets it."""

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable


class PerLoop[Resource]:
    """`await per_loop.get()`: the running loop's resource, made on first use."""

    def __init__(
        self, make: Callable[[], Resource], close: Callable[[Resource], Awaitable[object]]
    ) -> None:
        self._make = make
        self._close = close
        # Each loop's resource and the generator that closes it (held here: asyncio
        # only keeps a weak reference, and a collected generator closes at once).
        self._held: dict[asyncio.AbstractEventLoop, tuple[Resource, AsyncIterator[None]]] = {}
        # Worker threads, each with its own loop, share one PerLoop.
        self._lock = threading.Lock()

    async def get(self) -> Resource:
        loop = asyncio.get_running_loop()
        with self._lock:
            held = self._held.get(loop)
            if held is not None:
                return held[0]
            resource = self._make()
            closer = self._close_at_shutdown(loop, resource)
            self._held[loop] = (resource, closer)
        # Runs to its `yield` without suspending: registered with this loop now.
        await anext(closer)
        return resource

    async def _close_at_shutdown(
        self, loop: asyncio.AbstractEventLoop, resource: Resource
    ) -> AsyncIterator[None]:
        try:
            yield
        finally:
            with self._lock:
                self._held.pop(loop, None)
            await self._close(resource)
