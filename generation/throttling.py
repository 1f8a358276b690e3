from django.conf import settings
from rest_framework.throttling import ScopedRateThrottle


class GenerationRateThrottle(ScopedRateThrottle):
    """Per-user rate for starting and stopping work, read from RETRY_THROTTLE_RATE
    when a request arrives (DRF's class attribute would freeze it at import)."""

    scope_attr = "throttle_scope"

    def get_rate(self) -> str:
        return settings.RETRY_THROTTLE_RATE
