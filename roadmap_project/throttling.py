"""The API's rate throttles, per user, for starting and stopping work, on one
process-wide cache client (which the failed-login limits, roadmap_project.logins,
share). They fail open."""

import logging
from functools import cache

from django.conf import settings
from django.core.cache import BaseCache, caches
from django.core.signals import setting_changed
from django.dispatch import receiver
from rest_framework.throttling import SimpleRateThrottle, UserRateThrottle

logger = logging.getLogger(__name__)


@cache
def throttle_cache() -> BaseCache:
    """One cache client for the whole process. Django's `caches` hands out one per
    request context, and a Redis cache builds a new client and connection pool each
    time: under load that cost more than the throttle check itself. Both cache
    backends used here (Redis, local memory) are safe to share across threads."""
    return caches.create_connection("default")


@receiver(setting_changed)
def forget_throttle_cache(*, setting: str, **kwargs) -> None:
    if setting == "CACHES":
        throttle_cache.cache_clear()


class SharedCacheThrottle(SimpleRateThrottle):
    """A DRF rate throttle on the process-wide cache client, with its rate read
    from a setting when a request arrives (DRF's class attribute would freeze it
    at import). Fails open: with the cache (Redis) down, the API keeps answering (I6)."""

    rate_setting: str

    def __init__(self) -> None:
        self.cache = throttle_cache()
        super().__init__()

    def get_rate(self) -> str:
        return getattr(settings, self.rate_setting)

    def allow_request(self, request, view) -> bool:
        try:
            return super().allow_request(request, view)
        except Exception:
            logger.warning("Throttle cache unavailable; request allowed", exc_info=True)
            return True


class GenerationRateThrottle(SharedCacheThrottle, UserRateThrottle):
    """Per user, for every request that starts or stops work (RETRY_THROTTLE_RATE)."""

    scope = "generation"
    rate_setting = "RETRY_THROTTLE_RATE"
