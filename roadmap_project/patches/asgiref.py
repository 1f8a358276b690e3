"""asgiref 3.13.0's private record of the event loop a worker thread serves, read to
tell whether that loop has stopped."""

import asyncio

from asgiref.sync import SyncToAsync


def serving_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop this thread runs `sync_to_async` work for, if it is such a
    worker thread. `SyncToAsync` records it in its `threadlocal` (for
    `async_to_sync` to hand calls back to); asgiref has no public accessor."""
    return getattr(SyncToAsync.threadlocal, "main_event_loop", None)
