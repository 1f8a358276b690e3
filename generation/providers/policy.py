"""The policy every model transport runs under: each answer is streamed and
assembled whole, then parsed; unusable answers are re-asked, transient failures
retried with backoff.

Every call is bounded (DESIGN §6, I3): the transport bounds a stalled stream
(GENERATION_STALL_SECONDS) and a transport's own retries come first; then this
policy's rounds of exponential backoff with jitter repeat transient errors
(rate limited, unavailable, timed out), while permanent ones fail at once; the
runner bounds the whole attempt (GENERATION_DEADLINE_SECONDS). Unusable answers
(invalid JSON, schema violations, refusals, empty text) are re-asked a bounded
number of times, and so are answers cut off at the length limit, which never
count as complete. Failures are raised as generation.errors classes, whose
public message is fixed; the model's own text travels only in `detail`, for the
log (I7)."""

import asyncio
import functools
import logging
import random
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass, field

import pydantic
from django.conf import settings

from generation.errors import (
    OutputTruncated,
    ProviderRateLimited,
    ProviderTimeout,
    ProviderUnavailable,
    UnusableOutput,
)
from generation.providers import prompts
from generation.providers.base import (
    Chunk,
    GenerationRequest,
    InvalidOutput,
    Messages,
    ProgressCallback,
    Transport,
    report_activity,
)
from generation.providers.output import parse_json, parse_tutorial
from generation.schemas import Quiz, ResourceList, TutorialDraft

logger = logging.getLogger(__name__)

# Progress is estimated from the characters received against a typical tutorial
# length, and held below 100 until the answer is complete and parsed.
EXPECTED_TUTORIAL_CHARS = 6000
PROGRESS_CAP_WHILE_STREAMING = 95
TRANSIENT_ERRORS = (ProviderRateLimited, ProviderUnavailable, ProviderTimeout)


class TruncatedOutput(InvalidOutput):
    """The answer stopped at the length limit (finish_reason "length")."""


def backoff_delay(failed_rounds: int) -> float:
    """Exponential backoff with jitter: base * 2^(n-1), scaled by 50-100 %."""
    delay = settings.GENERATION_BACKOFF_SECONDS * 2 ** (failed_rounds - 1)
    return delay * random.uniform(0.5, 1.0)


class _ProgressEstimate:
    """Reports a monotonically increasing percentage across re-asks and retries."""

    def __init__(self, on_progress: ProgressCallback) -> None:
        self.on_progress = on_progress
        self.sent = 0

    async def received(self, chars: int) -> None:
        percentage = min(PROGRESS_CAP_WHILE_STREAMING, chars * 100 // EXPECTED_TUTORIAL_CHARS)
        if percentage > self.sent:
            self.sent = percentage
            await self.on_progress(percentage)

    async def done(self) -> None:
        self.sent = 100
        await self.on_progress(100)


@dataclass
class _Answer:
    """One streamed answer, as assembled from its chunks."""

    parts: list[str] = field(default_factory=list)
    refusal: list[str] = field(default_factory=list)
    chunks: int = 0
    received: int = 0
    finish_reason: str | None = None
    model_name: str = ""

    def add(self, chunk: Chunk) -> None:
        self.chunks += 1
        self.model_name = chunk.model or self.model_name
        self.finish_reason = chunk.finish_reason or self.finish_reason
        if chunk.refusal:
            self.refusal.append(chunk.refusal)
        if chunk.text:
            self.parts.append(chunk.text)
            self.received += len(chunk.text)

    @property
    def text(self) -> str:
        return "".join(self.parts)

    def check_whole(self) -> None:
        """Raises unless this is a whole, usable answer: ProviderUnavailable for a
        stream whose connection ended before the model finished (transient, like
        any lost connection; the fragment is never kept), InvalidOutput for a
        refusal, an empty answer or one cut off at the length limit."""
        if self.chunks and self.finish_reason is None:
            raise ProviderUnavailable(f"the stream ended unfinished after {self.chunks} chunks")
        if self.refusal:
            raise InvalidOutput(f"the model refused: {''.join(self.refusal)}")
        if self.finish_reason == "length":
            raise TruncatedOutput("the answer was cut off at the length limit")
        if not self.text.strip():
            raise InvalidOutput("the answer is empty")


class Policy:
    """Implements generation.providers.base.Provider over any Transport."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self.name = transport.name

    @property
    def model(self) -> str:
        """The model asked for (the answer may name the one that wrote it)."""
        return self.transport.model

    async def tutorial(
        self, request: GenerationRequest, on_progress: ProgressCallback, output=None
    ) -> tuple[TutorialDraft, str]:
        progress = _ProgressEstimate(on_progress)

        async def ask(messages: Messages) -> tuple[TutorialDraft, str]:
            answer = await self._answer(messages, progress=progress, output=output)
            draft = parse_tutorial(answer.text, fallback_title=request.concept_name)
            return draft, answer.model_name

        draft, model_name = await self._until_usable(prompts.tutorial_messages(request), ask)
        await progress.done()
        return draft, model_name

    async def resources(self, request: GenerationRequest, output=None) -> tuple[ResourceList, str]:
        return await self._structured(prompts.resources_messages(request), ResourceList)

    async def quiz(self, request: GenerationRequest, output=None) -> tuple[Quiz, str]:
        return await self._structured(prompts.quiz_messages(request), Quiz)

    async def _structured[Parsed: pydantic.BaseModel](
        self, messages: Messages, schema: type[Parsed]
    ) -> tuple[Parsed, str]:
        async def ask(conversation: Messages) -> tuple[Parsed, str]:
            answer = await self._answer(conversation, schema=schema)
            return parse_json(answer.text, schema), answer.model_name

        return await self._until_usable(messages, ask)

    async def _until_usable[Parsed](
        self, messages: Messages, ask: Callable[[Messages], Awaitable[Parsed]]
    ) -> Parsed:
        """Re-ask after unusable output, at most GENERATION_OUTPUT_ATTEMPTS times; an
        answer still cut off at the length limit the last time fails as truncated."""
        attempts = max(1, settings.GENERATION_OUTPUT_ATTEMPTS)
        conversation = messages
        problems: list[str] = []
        for attempt in range(1, attempts + 1):
            try:
                return await self._with_backoff(functools.partial(ask, conversation))
            except InvalidOutput as exc:
                problems.append(str(exc))
                last = exc
                logger.warning(
                    "Unusable model output (attempt %d of %d): %s", attempt, attempts, exc
                )
                conversation = [*messages, prompts.reask_message(str(exc))]
        detail = f"after {attempts} attempts: " + "; ".join(problems)
        raise (
            OutputTruncated(detail) if isinstance(last, TruncatedOutput) else UnusableOutput(detail)
        )

    async def _with_backoff[Parsed](self, call: Callable[[], Awaitable[Parsed]]) -> Parsed:
        """Our rounds on top of the transport's retries, for transient errors only."""
        rounds = max(1, settings.GENERATION_TRANSIENT_ATTEMPTS)
        for failed_rounds in range(1, rounds + 1):
            try:
                return await call()
            except TRANSIENT_ERRORS as error:
                if failed_rounds == rounds:
                    raise
                delay = backoff_delay(failed_rounds)
                logger.warning(
                    "Transient provider error (round %d of %d), retrying in %.2f s: %s",
                    failed_rounds,
                    rounds,
                    delay,
                    error.detail,
                )
            await asyncio.sleep(delay)
        raise AssertionError("unreachable: the last round returns or raises")

    async def _answer(
        self,
        messages: Messages,
        *,
        schema: type[pydantic.BaseModel] | None = None,
        progress: _ProgressEstimate | None = None,
        output=None,
    ) -> _Answer:
        """One streamed answer, whole; every chunk is a sign of life. Closing the
        stream on the way out (cancelled, failed) closes its connection."""
        answer = _Answer()
        if output is not None:
            output.restart()
        async with aclosing(self.transport.stream(messages, schema=schema)) as chunks:
            async for chunk in chunks:
                report_activity()
                answer.add(chunk)
                if output is not None and chunk.text:
                    output.text(chunk.text)
                if progress is not None and chunk.text:
                    await progress.received(answer.received)
        answer.check_whole()
        answer.model_name = answer.model_name or self.transport.model
        return answer
