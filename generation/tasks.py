"""The django.tasks task functions; the engine is configuration (TASKS setting)."""

import logging

from django.tasks import task

from generation.runner import run_next

logger = logging.getLogger(__name__)


@task()
async def generate_content() -> None:
    """Generate the next (concept, content type) item, in fair order
    (generation.scheduling): one unit of work per item a start queued."""
    await run_next()


def enqueue_work(items: int) -> None:
    """Runs after the start committed: a broker that refuses the message must not
    turn the already-sent 202 into an error; the lease fails the item instead (I3)."""
    for _ in range(items):
        try:
            generate_content.enqueue()
        except Exception:
            logger.exception("Could not enqueue work; a queued item's lease will expire")
