"""The django.tasks task functions; the engine is configuration (TASKS setting)."""

from django.tasks import task

from generation.runner import run_item


@task()
async def generate_content(item_id: int) -> None:
    """Generate one (concept, content type) item of a GenerationTask."""
    await run_item(item_id)


def enqueue_items(item_ids: list[int]) -> None:
    for item_id in item_ids:
        generate_content.enqueue(item_id)
