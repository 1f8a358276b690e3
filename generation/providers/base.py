"""The providers' contracts: what the runner calls (`Provider`), what the shared
policy drives (`Transport`), and how both report signs of life."""

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Protocol

import pydantic

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

    @classmethod
    def about(cls, *, roadmap: Any, concept: Any, preferences: dict) -> "GenerationRequest":
        """What one pair asks: its concept in its roadmap, the task's preferences
        over the roadmap's. The same at the start (which reserves tokens for this
        prompt) and in the run."""
        merged = {**roadmap.preferences, **preferences}
        return cls(
            roadmap_title=roadmap.title,
            roadmap_goal=roadmap.goal,
            concept_name=concept.name,
            concept_description=concept.description,
            preferences={key: str(value) for key, value in merged.items()},
        )

    @property
    def language(self) -> str:
        return self.preferences.get("language") or "en"


class OutputSink(Protocol):
    """Where a provider reports the answer while the model writes it (live
    content, DESIGN §5). Calls never block: the sink buffers and sends on its own."""

    def restart(self) -> None:
        """A new answer begins (a re-ask, a retry): what was reported is void."""

    def written_by(self, provider: "Provider") -> None:
        """The provider (and the model asked) writing from the next answer on:
        named before the first, and again by a failover to another provider."""

    def text(self, delta: str) -> None:
        """More of a tutorial's Markdown, as the model sent it."""

    def items(self, items: list[dict[str, Any]]) -> None:
        """Items (resources, questions) completed since the last call, each as the
        final content stores it (the item schema's JSON dump)."""


class DiscardOutput:
    """An OutputSink for callers that do not watch the answer being written."""

    def restart(self) -> None:
        pass

    def written_by(self, provider: "Provider") -> None:
        pass

    def text(self, delta: str) -> None:
        pass

    def items(self, items: list[dict[str, Any]]) -> None:
        pass


DISCARD = DiscardOutput()


class Provider(Protocol):
    """Raises generation.errors.GenerationError subclasses for failures with a
    known public meaning; anything else is reported as an internal error."""

    name: str
    # The model asked for (an answer may name the one that wrote it).
    model: str

    async def tutorial(
        self,
        request: GenerationRequest,
        on_progress: ProgressCallback,
        output: OutputSink = DISCARD,
    ) -> tuple[TutorialDraft, str]:
        """The draft and the model name that wrote it."""
        ...

    async def resources(
        self, request: GenerationRequest, output: OutputSink = DISCARD
    ) -> tuple[ResourceList, str]: ...

    async def quiz(
        self, request: GenerationRequest, output: OutputSink = DISCARD
    ) -> tuple[Quiz, str]: ...


class InvalidOutput(Exception):
    """The model answered, but the answer cannot be used; the policy re-asks."""


class TruncatedOutput(InvalidOutput):
    """The answer stopped at the length limit (finish_reason "length")."""


@dataclass(frozen=True)
class Chunk:
    """One piece of a streamed answer, as the model sent it."""

    text: str = ""
    refusal: str = ""
    model: str = ""
    # Why the model stopped: "stop", "length" (cut off at the token limit), ...;
    # None until the last chunk. A stream that ends without one was cut.
    finish_reason: str | None = None
    # The provider's count for the whole request, on a stream's usage chunk.
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class Transport(Protocol):
    """One way of asking a model: sends a conversation, streams the answer back.

    Raises GenerationError subclasses for failures (the transient ones are retried
    by the policy) and InvalidOutput for a response that is not an answer at all."""

    name: str
    # The model asked for, named when the answer does not say which one wrote it.
    model: str

    def stream(
        self, messages: Messages, *, schema: type[pydantic.BaseModel] | None = None
    ) -> AsyncIterator[Chunk]:
        """The answer's chunks; with `schema`, asks for JSON matching it."""
        ...


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
