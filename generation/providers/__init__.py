"""Content generators. `get_provider()` returns the configured one."""

import logging
from functools import cache

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from generation.providers.base import GenerationRequest, ProgressCallback, Provider

__all__ = ["GenerationRequest", "ProgressCallback", "Provider", "get_provider"]

logger = logging.getLogger(__name__)


@cache
def get_provider() -> Provider:
    name = settings.GENERATION_PROVIDER
    if name == "offline":
        from generation.providers.offline import OfflineProvider

        logger.warning("Using the offline provider: content is sample text, not generated.")
        return OfflineProvider()
    if name == "openai":
        from generation.providers.openai import OpenAIProvider

        return OpenAIProvider()
    raise ImproperlyConfigured(f"Unknown GENERATION_PROVIDER {name!r}: use openai or offline.")


def reset_provider() -> None:
    """Forget the configured provider (after settings change, in tests)."""
    get_provider.cache_clear()
