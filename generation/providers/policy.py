"""The policy every model transport runs under: each answer is streamed and
assembled whole, then parsed; unusable answers are re-asked, transient failures
retried with backoff.

While an answer streams, what the model has written so far goes to the caller's
OutputSink (live content, DESIGN §5): a tutorial's text chunk by chunk, resources
and questions one item at a time as they complete (generation.providers.partial).
Every answer, re-asks and retry rounds included, starts with a restart, so what
was reported since the last one is the answer that is finally kept.

Every call is bounded (DESIGN §6, I3): the transport bounds a stalled stream
(GENERATION_STALL_SECONDS) and a transport's own retries come first; then this
policy's rounds of exponential backoff with jitter repeat transient errors
(rate limited, unavailable, timed out), while permanent ones fail at once; the
runner bounds the whole attempt (GENERATION_DEADLINE_SECONDS), and the tokens
it may count (the reservation its start made): no request, re-ask or round, is
sent that could pass them (metering.check_allowance). Unusable answers
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
    FirstTokenLate,
    OutputTruncated,
    ProviderRateLimited,
    ProviderTimeout,
    ProviderUnavailable,
    UnusableOutput,
)
from generation.providers import metering, prompts
from generation.providers.base import (
    DISCARD,
    Chunk,
    GenerationRequest,
    InvalidOutput,
    Messages,
    OutputSink,
    ProgressCallback,
    Transport,
    TruncatedOutput,
    report_activity,
)
from generation.providers.output import parse_json, parse_tutorial
from generation.providers.partial import StreamedItems
from generation.schemas import Quiz, ResourceList, TutorialDraft

logger = logging.getLogger(__name__)

# Progress is estimated from the characters received against a typical tutorial
# length (a model's, unless the policy is told otherwise), and held below 100 until
# the answer is complete and parsed.
EXPECTED_TUTORIAL_CHARS = 6000
PROGRESS_CAP_WHILE_STREAMING = 95
TRANSIENT_ERRORS = (ProviderRateLimited, ProviderUnavailable, ProviderTimeout)


def backoff_delay(failed_rounds: int) -> float:
    """Exponential backoff with jitter: base * 2^(n-1), scaled by 50-100 %."""
    delay = settings.GENERATION_BACKOFF_SECONDS * 2 ** (failed_rounds - 1)
    return delay * random.uniform(0.5, 1.0)


class _ProgressEstimate:
    """Reports a monotonically increasing percentage across re-asks and retries."""

    def __init__(self, on_progress: ProgressCallback, expected_chars: int) -> None:
        self.on_progress = on_progress
        self.expected_chars = max(1, expected_chars)
        self.sent = 0

    async def received(self, chars: int) -> None:
        percentage = min(PROGRESS_CAP_WHILE_STREAMING, chars * 100 // self.expected_chars)
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


class _StreamedText:
    """Reports a tutorial's Markdown to the sink as each chunk arrives."""

    def __init__(self, output: OutputSink) -> None:
        self.output = output

    def restart(self) -> None:
        self.output.restart()

    def received(self, delta: str) -> None:
        self.output.text(delta)


class Policy:
    """Implements generation.providers.base.Provider over any Transport.
    `expected_tutorial_chars` is the length progress is estimated against."""

    def __init__(
        self,
        transport: Transport,
        *,
        expected_tutorial_chars: int = EXPECTED_TUTORIAL_CHARS,
        transient_rounds: int | None = None,
        first_token_seconds: float | None = None,
    ) -> None:
        self.transport = transport
        self.name = transport.name
        self.expected_tutorial_chars = expected_tutorial_chars
        # A provider with another behind it (generation.providers.failover) gives up
        # sooner: after the transport's own retries (rounds 1), and without a
        # first token in `first_token_seconds`; None: GENERATION_TRANSIENT_ATTEMPTS,
        # and only the stall bound.
        self.transient_rounds = transient_rounds
        self.first_token_seconds = first_token_seconds

    @property
    def model(self) -> str:
        """The model asked for (an answer may name the one that wrote it)."""
        return self.transport.model

    async def tutorial(
        self,
        request: GenerationRequest,
        on_progress: ProgressCallback,
        output: OutputSink = DISCARD,
    ) -> tuple[TutorialDraft, str]:
        progress = _ProgressEstimate(on_progress, self.expected_tutorial_chars)
        live = _StreamedText(output)

        async def ask(messages: Messages) -> tuple[TutorialDraft, str]:
            answer = await self._answer(messages, live=live, progress=progress)
            draft = parse_tutorial(answer.text, fallback_title=request.concept_name)
            return draft, answer.model_name

        draft, model_name = await self._until_usable(prompts.tutorial_messages(request), ask)
        await progress.done()
        return draft, model_name

    async def resources(
        self, request: GenerationRequest, output: OutputSink = DISCARD
    ) -> tuple[ResourceList, str]:
        return await self._structured(prompts.resources_messages(request), ResourceList, output)

    async def quiz(
        self, request: GenerationRequest, output: OutputSink = DISCARD
    ) -> tuple[Quiz, str]:
        return await self._structured(prompts.quiz_messages(request), Quiz, output)

    async def _structured[Parsed: pydantic.BaseModel](
        self, messages: Messages, schema: type[Parsed], output: OutputSink
    ) -> tuple[Parsed, str]:
        live = StreamedItems(output, schema)

        async def ask(conversation: Messages) -> tuple[Parsed, str]:
            answer = await self._answer(conversation, live=live, schema=schema)
            parsed = parse_json(answer.text, schema)
            live.whole(parsed)
            return parsed, answer.model_name

        return await self._until_usable(messages, ask, schema=schema)

    async def _until_usable[Parsed](
        self,
        messages: Messages,
        ask: Callable[[Messages], Awaitable[Parsed]],
        *,
        schema: type[pydantic.BaseModel] | None = None,
    ) -> Parsed:
        """Re-ask after unusable output, at most GENERATION_OUTPUT_ATTEMPTS times; an
        answer still cut off at the length limit the last time fails as truncated."""
        attempts = max(1, settings.GENERATION_OUTPUT_ATTEMPTS)
        conversation = messages
        problems: list[str] = []
        for attempt in range(1, attempts + 1):
            try:
                return await self._with_backoff(
                    functools.partial(ask, conversation), asking=conversation, schema=schema
                )
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

    async def _with_backoff[Parsed](
        self,
        call: Callable[[], Awaitable[Parsed]],
        *,
        asking: Messages,
        schema: type[pydantic.BaseModel] | None,
    ) -> Parsed:
        """Our rounds on top of the transport's retries, for transient errors only.
        No round is sent that could pass the attempt's reserved tokens (`asking`
        and `schema` are what it sends: metering.check_allowance)."""
        rounds = max(1, self.transient_rounds or settings.GENERATION_TRANSIENT_ATTEMPTS)
        for failed_rounds in range(1, rounds + 1):
            metering.check_allowance(asking, schema)
            try:
                with metering.metered(self.name, self.transport.model):
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
        live: _StreamedText | StreamedItems,
        schema: type[pydantic.BaseModel] | None = None,
        progress: _ProgressEstimate | None = None,
    ) -> _Answer:
        """One streamed answer, whole, reported to `live` as it arrives; every chunk
        is a sign of life. Closing the stream on the way out (cancelled, failed)
        closes its connection."""
        answer = _Answer()
        live.restart()
        request = metering.current()
        if request is not None:
            request.asked(messages)
        async with aclosing(self.transport.stream(messages, schema=schema)) as chunks:
            try:
                async with asyncio.timeout(self.first_token_seconds) as first_token:
                    async for chunk in chunks:
                        report_activity()
                        answer.add(chunk)
                        if request is not None:
                            request.chunk(chunk)
                        if chunk.text or chunk.refusal:
                            first_token.reschedule(None)
                        if not chunk.text:
                            continue
                        live.received(chunk.text)
                        if progress is not None:
                            await progress.received(answer.received)
            except TimeoutError as exc:
                if not first_token.expired():
                    raise
                raise FirstTokenLate(f"no first token in {self.first_token_seconds} s") from exc
        answer.check_whole()
        answer.model_name = answer.model_name or self.transport.model
        return answer
