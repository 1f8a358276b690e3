import logging

from django.conf import settings
from rest_framework.throttling import UserRateThrottle

logger = logging.getLogger(__name__)


class GenerationRateThrottle(UserRateThrottle):
    """Per-user rate for starting and stopping work, read from RETRY_THROTTLE_RATE
    when a request arrives (DRF's class attribute would freeze it at import)."""

    scope = "generation"

    def get_rate(self) -> str:
        return settings.RETRY_THROTTLE_RATE

    def allow_request(self, request, view) -> bool:
        """Fails open: with the cache (Redis) down, the API keeps answering (I6)."""
        try:
            return super().allow_request(request, view)
        except Exception:
            logger.warning("Throttle cache unavailable; request allowed", exc_info=True)
            return True
