"""Channels 4.3.2's in-memory layer (the embedded mode), with its expiry walk run
at most once a second instead of on every receive and group_send, and a
group_send that puts the message on each member's queue without a task per
member.

Channels calls its private `_clean_expired()` first thing in `receive` and
`group_send`, and it walks every channel and every group membership: with a feed
per watched stream (notifications.hub) each event would walk them all. Expiry is
counted in seconds (messages: `expiry`, 60 s here; memberships: a day), so once a
second expires nothing late that matters. No public setting or hook changes when
the walk runs.

Upstream's `group_send` creates a task per member and awaits them with
`as_completed`, although an in-memory `send` never waits: each publish then lasts
at least a loop iteration, which on a busy loop (hundreds of generations in
flight) outlasted the publish timeout and stopped their live text. Here it awaits
`send` for each member in turn, which finishes without suspending.

Upstream's `send` builds a spare `asyncio.Queue` on every call (the default of
its `setdefault`), whether the channel has one or not; here only when it has
none. A live change to a watched pair is two sends, every 100 ms for each pair
in flight."""

import asyncio
import time
from copy import deepcopy

from channels import layers
from channels.exceptions import ChannelFull

CLEAN_INTERVAL_SECONDS = 1.0


class InMemoryChannelLayer(layers.InMemoryChannelLayer):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._last_clean = -CLEAN_INTERVAL_SECONDS

    def _clean_expired(self) -> None:
        now = time.monotonic()
        if now - self._last_clean >= CLEAN_INTERVAL_SECONDS:
            self._last_clean = now
            super()._clean_expired()

    async def send(self, channel, message) -> None:
        assert isinstance(message, dict), "message is not a dict"
        self.require_valid_channel_name(channel)
        assert "__asgi_channel__" not in message
        queue = self.channels.get(channel)
        if queue is None:
            queue = self.channels.setdefault(
                channel, asyncio.Queue(maxsize=self.get_capacity(channel))
            )
        try:
            queue.put_nowait((time.time() + self.expiry, deepcopy(message)))
        except asyncio.QueueFull:
            raise ChannelFull(channel) from None

    async def group_send(self, group, message) -> None:
        assert isinstance(message, dict), "Message is not a dict"
        self.require_valid_group_name(group)
        self._clean_expired()
        for channel in list(self.groups.get(group, {})):
            try:
                await self.send(channel, message)
            except ChannelFull:
                pass
