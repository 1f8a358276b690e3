"""The in-memory channel layer (the embedded mode), without a walk of every
channel and group on each call."""

import time

from channels import layers

CLEAN_INTERVAL_SECONDS = 1.0


class InMemoryChannelLayer(layers.InMemoryChannelLayer):
    """Channels' layer cleans expired messages and group memberships on every
    receive and group_send by walking every channel and every membership: with a
    feed per watched stream (notifications.hub), each event would walk them all.
    Expiry is counted in seconds (messages: `expiry`, 60 s here; memberships: a
    day), so here the walk runs at most once a second."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._last_clean = -CLEAN_INTERVAL_SECONDS

    def _clean_expired(self) -> None:
        now = time.monotonic()
        if now - self._last_clean >= CLEAN_INTERVAL_SECONDS:
            self._last_clean = now
            super()._clean_expired()
