"""The django.tasks task functions; the engine is configuration (TASKS setting)."""

from django.tasks import task

from generation.runner import run_next


@task()
async def generate_content() -> None:
    """Generate the next (concept, content type) item, in fair order
    (generation.scheduling): one unit of work per item a start queued."""
    await run_next()
