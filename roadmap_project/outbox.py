"""Many callers' sends to one server, made in batches: what everyone queued while
the last batch was on its way goes out as the next one, in the order queued. On a
busy event loop a round trip lasts at least a loop iteration, so one per call
keeps callers waiting in turn; with an outbox a longer queue means bigger batches,
not longer waits. Serves the channel layer's publishes
(roadmap_project.patches.channels_redis) and the live store's changes
(notifications.live_store)."""

import asyncio
from collections.abc import Awaitable, Callable, Sequence


class Outbox[Item]:
    """`await outbox.send(item)`: queue `item` and wait until it is sent; raises
    its error, or the batch's. One sender task at a time sends the batches. A
    caller that stops waiting leaves its item queued: whether it lands was unknown
    to it anyway."""

    def __init__(
        self, send_batch: Callable[[list[Item]], Awaitable[Sequence[BaseException | None]]]
    ) -> None:
        self._send_batch = send_batch
        self._queued: list[tuple[Item, asyncio.Future]] = []
        self._sender: asyncio.Task | None = None

    async def send(self, item: Item) -> None:
        loop = asyncio.get_running_loop()
        sent = loop.create_future()
        self._queued.append((item, sent))
        if self._sender is None or self._sender.done():
            self._sender = loop.create_task(self._send_queued())
        await sent

    async def _send_queued(self) -> None:
        while self._queued:
            batch, self._queued = self._queued, []
            failure: BaseException | None = None
            try:
                outcomes = await self._send_batch([item for item, _ in batch])
            except BaseException as error:
                failure = error
                outcomes = [error] * len(batch)
            for (_, sent), outcome in zip(batch, outcomes, strict=True):
                if sent.done():
                    continue
                if outcome is None:
                    sent.set_result(None)
                else:
                    sent.set_exception(outcome)
            if isinstance(failure, asyncio.CancelledError):
                raise failure
