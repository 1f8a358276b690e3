"""Which provider generates: `get_provider()` builds the configured one, the
shared policy over the OpenAI transport or over the offline sample content."""

import logging
from functools import cache

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from generation.providers.base import GenerationRequest, ProgressCallback, Provider

__all__ = ["GenerationRequest", "ProgressCallback", "Provider", "get_provider", "load_provider"]

logger = logging.getLogger(__name__)


@cache
def get_provider() -> Provider:
    name = settings.GENERATION_PROVIDER
    # Each provider is imported when chosen: the OpenAI SDK is slow to import (seconds
    # on a busy machine), and the offline provider needs none of it.
    if name == "offline":
        from generation.providers.offline import EXPECTED_TUTORIAL_CHARS, OfflineTransport
        from generation.providers.policy import Policy

        logger.warning("Using the offline provider: content is sample text, not generated.")
        return Policy(OfflineTransport(), expected_tutorial_chars=EXPECTED_TUTORIAL_CHARS)
    if name == "openai" and settings.GENERATION_PROVIDERS:
        from generation.providers.failover import failover_from_settings

        return failover_from_settings()
    if name == "openai":
        from generation.providers.openai import OpenAITransport
        from generation.providers.policy import Policy

        return Policy(OpenAITransport())
    raise ImproperlyConfigured(f"Unknown GENERATION_PROVIDER {name!r}: use openai or offline.")


def load_provider() -> None:
    """At a server's or worker's start, not at its first generation: importing the
    OpenAI SDK holds the GIL for most of a second, and in a running server every
    socket and request would wait for it."""
    get_provider()


def reset_provider() -> None:
    """Forget the configured provider (after settings change, in tests)."""
    get_provider.cache_clear()
