"""Channels 4.3.2's in-memory layer (the embedded mode), with its expiry walk run
at most once a second instead of on every receive and group_send.

Channels calls its private `_clean_expired()` first thing in `receive` and
`group_send`, and it walks every channel and every group membership: with a feed
per watched stream (notifications.hub) each event would walk them all. Expiry is
counted in seconds (messages: `expiry`, 60 s here; memberships: a day), so once a
second expires nothing late that matters. No public setting or hook changes when
the walk runs."""

import time

from channels import layers

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
