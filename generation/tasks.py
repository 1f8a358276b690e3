"""The django.tasks task functions; the engine is configuration (TASKS setting)."""

import logging

from django.tasks import task

from generation.runner import run_item

logger = logging.getLogger(__name__)


@task()
async def generate_content(item_id: int) -> None:
    """Generate one (concept, content type) item of a GenerationTask."""
    await run_item(item_id)


def enqueue_items(item_ids: list[int]) -> None:
    """Runs after the start committed: a broker that refuses the message must not
    turn the already-sent 202 into an error; the lease fails the item instead (I3)."""
    for item_id in item_ids:
        try:
            generate_content.enqueue(item_id)
        except Exception:
            logger.exception("Could not enqueue item %s; its lease will expire", item_id)
