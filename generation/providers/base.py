"""The provider contract: one coroutine per content type."""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from generation.schemas import Quiz, ResourceList, TutorialDraft

# Called with a percentage (0-100) as the tutorial streams in.
ProgressCallback = Callable[[int], Awaitable[None]]


@dataclass(frozen=True)
class GenerationRequest:
    roadmap_title: str
    roadmap_goal: str
    concept_name: str
    concept_description: str
    preferences: dict[str, str] = field(default_factory=dict)

    @property
    def language(self) -> str:
        return self.preferences.get("language") or "en"


class Provider(Protocol):
    """Raises generation.errors.GenerationError subclasses for failures with a
    known public meaning; anything else is reported as an internal error."""

    name: str

    async def tutorial(
        self, request: GenerationRequest, on_progress: ProgressCallback
    ) -> tuple[TutorialDraft, str]:
        """The draft and the model name that wrote it."""
        ...

    async def resources(self, request: GenerationRequest) -> tuple[ResourceList, str]: ...

    async def quiz(self, request: GenerationRequest) -> tuple[Quiz, str]: ...
