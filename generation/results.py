"""What the state machine hands back: the outcome of a start (to services and
their callers), and the handle a runner holds while it generates one item."""

import uuid
from dataclasses import dataclass

from generation.models import GenerationTask


@dataclass(frozen=True)
class Skipped:
    concept_id: str
    content_type: str
    reason: str


@dataclass(frozen=True)
class StartResult:
    task: GenerationTask | None
    skipped: list[Skipped]


@dataclass(frozen=True)
class ItemRun:
    """What a runner needs to generate one item, and the attempt that fences it."""

    item_id: int
    task_id: str
    task_kind: str
    content_id: int
    attempt_id: uuid.UUID
    content_type: str
    # The most the attempt may spend (generation.budgets); 0 for an item started
    # before reservations were kept, which is not limited.
    reserved_tokens: int = 0
