"""The live draft of a running attempt: the OutputSink its provider writes to,
kept and pushed as a live document (notifications.live) named by the attempt id,
and made to end equal to the content that is stored (DESIGN §5 "Live content")."""

from typing import Any

from django.conf import settings

from generation.providers.base import Provider
from generation.results import ItemRun
from generation.schemas import Quiz, ResourceList, TutorialDraft
from notifications import live, live_store
from roadmaps.models import ContentType, Roadmap, roadmap_topic


def kind_of(content_type: str) -> str:
    """A tutorial is written as text (live_store.TEXT); resources and quiz as items."""
    return live_store.TEXT if content_type == ContentType.TUTORIAL else live_store.ITEMS


class LiveDraft:
    """Implements generation.providers.base.OutputSink for one attempt."""

    def __init__(self, run: ItemRun, *, roadmap: Roadmap, concept_id: str) -> None:
        self.writer = live.Writer(
            key=str(run.attempt_id),
            stream=run.task_id,
            topic=roadmap_topic(roadmap.pk),
            kind=kind_of(run.content_type),
            fields={
                "task_id": run.task_id,
                "roadmap_id": str(roadmap.pk),
                "concept_id": concept_id,
                "content_type": run.content_type,
                "attempt_id": str(run.attempt_id),
            },
            # Expires with the lease: a draft outlives its attempt by at most that.
            ttl=settings.GENERATION_LEASE_SECONDS,
        )

    def written_by(self, provider: Provider) -> None:
        """Name the provider and the model asked for, before the first change."""
        self.writer.document.fields.update(provider=provider.name, model=provider.model)

    def restart(self) -> None:
        self.writer.restart()

    def text(self, delta: str) -> None:
        self.writer.add_text(delta)

    def items(self, items: list[dict[str, Any]]) -> None:
        self.writer.add_items(items)

    async def settle(self, result: TutorialDraft | ResourceList | Quiz) -> None:
        """Before the result is stored: clients end holding exactly what is stored
        (the tutorial's Markdown as normalised, the items as validated), and
        concept_complete comes after the last change."""
        if isinstance(result, TutorialDraft):
            final: str | list[Any] = result.markdown
        else:
            final = next(iter(result.model_dump(mode="json").values()))
        await self.writer.settle(final)

    async def close(self) -> None:
        await self.writer.close()


def draft_of(attempt_id: Any) -> live_store.Document | None:
    """What the attempt has written so far, if it is writing."""
    return live_store.read(str(attempt_id)) if attempt_id else None
