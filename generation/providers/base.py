"""The provider contract: one coroutine per content type."""

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Protocol

from generation.schemas import Quiz, ResourceList, TutorialDraft

# Called with a percentage (0-100) as the tutorial streams in.
ProgressCallback = Callable[[int], Awaitable[None]]
# A chat conversation, as prompts builds it.
Messages = list[dict[str, str]]


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


class InvalidOutput(Exception):
    """The model answered, but the answer cannot be used; the provider re-asks."""


# Liveness is progress (DESIGN §6): providers report every sign of life of the
# model (a request sent, bytes of an answer received) and the runner renews the
# running pair's lease only when there was one since its last heartbeat.
_on_activity: ContextVar[Callable[[], None] | None] = ContextVar("on_activity", default=None)


def report_activity() -> None:
    """Called by providers on every sign of life; a no-op outside a generation."""
    callback = _on_activity.get()
    if callback is not None:
        callback()


@contextmanager
def activity_reported_to(callback: Callable[[], None]) -> Iterator[None]:
    """Within this block (and tasks started in it), report_activity() calls `callback`."""
    token = _on_activity.set(callback)
    try:
        yield
    finally:
        _on_activity.reset(token)
