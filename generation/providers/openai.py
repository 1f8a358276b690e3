"""The OpenAI provider: Chat Completions through the official SDK, against OpenAI or
any OpenAI-compatible server (OPENAI_BASE_URL).

Every answer is streamed, and every call is bounded (DESIGN §6, I3): a stream that
receives no bytes for GENERATION_STALL_SECONDS is a timeout (httpx's read timeout);
the SDK's retries come first, then our own rounds of exponential backoff with
jitter for transient errors (429, 5xx, timeouts, connection errors); permanent ones
(400, 401, 403, 404) fail at once; the runner bounds the whole attempt
(GENERATION_DEADLINE_SECONDS). Unusable answers (invalid JSON, schema violations,
refusals, empty text) are re-asked a bounded number of times, and so are answers
cut off at the length limit, which never count as complete. Failures are raised
as generation.errors classes, whose public message is fixed; the provider's own
text travels only in `detail`, for the log (I7)."""

import asyncio
import functools
import json
import logging
import random
import threading
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import openai
import pydantic
from django.conf import settings

from generation import prompts
from generation.errors import (
    GenerationError,
    OutputTruncated,
    ProviderRateLimited,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnavailable,
    UnusableOutput,
)
from generation.providers.base import (
    GenerationRequest,
    InvalidOutput,
    ProgressCallback,
    report_activity,
)
from generation.providers.output import parse_json, parse_tutorial, strict_json_schema
from generation.schemas import Quiz, ResourceList, TutorialDraft

logger = logging.getLogger(__name__)

PROVIDER_NAME = "openai"
# Progress is estimated from the characters received against a typical tutorial
# length, and held below 100 until the answer is complete and parsed.
EXPECTED_TUTORIAL_CHARS = 6000
PROGRESS_CAP_WHILE_STREAMING = 95
MAX_DETAIL_CHARS = 2000
TRANSIENT_ERRORS = (ProviderRateLimited, ProviderUnavailable, ProviderTimeout)
Parsed = TypeVar("Parsed")


class TruncatedOutput(InvalidOutput):
    """The answer stopped at the length limit (finish_reason "length")."""


class StreamCut(Exception):
    """The stream ended without a finish reason: the connection closed halfway
    through the answer. Transient, like any other lost connection; what arrived is
    a fragment and is never kept."""


def response_format(model: type[pydantic.BaseModel], name: str) -> dict[str, Any]:
    return {
        "type": "json_schema",
        "json_schema": {"name": name, "strict": True, "schema": strict_json_schema(model)},
    }


RESOURCES_FORMAT = response_format(ResourceList, "resource_list")
QUIZ_FORMAT = response_format(Quiz, "quiz")


def _detail(exc: BaseException) -> str:
    """The raw cause, for the log only (never public)."""
    return f"{type(exc).__name__}: {exc}"[:MAX_DETAIL_CHARS]


def provider_error(exc: BaseException) -> GenerationError:
    """Map an SDK (or timeout) exception to the error class with its public meaning."""
    detail = _detail(exc)
    if isinstance(exc, openai.APITimeoutError | TimeoutError):
        return ProviderTimeout(detail)
    if isinstance(exc, openai.APIConnectionError | StreamCut):
        return ProviderUnavailable(detail)
    if isinstance(exc, openai.RateLimitError):
        if exc.code == "insufficient_quota":
            # A 429 that waiting cannot fix: the account is out of credit.
            return ProviderRejected(detail)
        return ProviderRateLimited(detail)
    if isinstance(exc, openai.APIStatusError):
        if exc.status_code == 408:
            return ProviderTimeout(detail)
        if exc.status_code >= 500 or exc.status_code == 409:
            return ProviderUnavailable(detail)
        return ProviderRejected(detail)
    if isinstance(exc, openai.APIError):
        # An error event inside a stream, after a 200 answer.
        return ProviderUnavailable(detail)
    return ProviderRejected(detail)


def backoff_delay(failed_rounds: int) -> float:
    """Exponential backoff with jitter: base * 2^(n-1), scaled by 50-100 %."""
    delay = settings.GENERATION_BACKOFF_SECONDS * 2 ** (failed_rounds - 1)
    return delay * random.uniform(0.5, 1.0)


class _Progress:
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


class OpenAIProvider:
    """Implements generation.providers.base.Provider over Chat Completions."""

    name = PROVIDER_NAME

    def __init__(self) -> None:
        # One client per event loop: a client's connection pool belongs to the loop
        # that opened it, and work runs on several (the server's, each Celery worker
        # thread's). Forgotten with its loop; a lock, as worker threads share this.
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopClient]
        self._clients = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    async def _client(self) -> openai.AsyncOpenAI:
        loop = asyncio.get_running_loop()
        with self._lock:
            held = self._clients.get(loop)
            if held is None:
                held = self._clients[loop] = _LoopClient(self._new_client())
        await held.close_with_loop()
        return held.client

    def _new_client(self) -> openai.AsyncOpenAI:
        if not settings.OPENAI_API_KEY:
            raise ProviderRejected("OPENAI_API_KEY is not set")
        return openai.AsyncOpenAI(
            api_key=settings.OPENAI_API_KEY,
            base_url=settings.OPENAI_BASE_URL,
            max_retries=settings.OPENAI_MAX_RETRIES,
            # No bytes for the stall window is a timeout (the SDK raises it mid-stream
            # too); connecting and sending are bounded by OPENAI_TIMEOUT_SECONDS.
            timeout=openai.Timeout(
                settings.OPENAI_TIMEOUT_SECONDS, read=settings.GENERATION_STALL_SECONDS
            ),
            # Every request sent, the SDK's own retries included, is a sign of life
            # (the lease follows progress, not a timer).
            http_client=openai.DefaultAsyncHttpxClient(event_hooks={"request": [_request_sent]}),
        )

    async def tutorial(
        self, request: GenerationRequest, on_progress: ProgressCallback
    ) -> tuple[TutorialDraft, str]:
        progress = _Progress(on_progress)

        async def ask(messages: prompts.Messages) -> tuple[TutorialDraft, str]:
            return await self._stream_tutorial(messages, request, progress)

        draft, model_name = await self._until_usable(prompts.tutorial_messages(request), ask)
        await progress.done()
        return draft, model_name

    async def resources(self, request: GenerationRequest) -> tuple[ResourceList, str]:
        async def ask(messages: prompts.Messages) -> tuple[ResourceList, str]:
            return await self._stream_json(messages, ResourceList, RESOURCES_FORMAT)

        return await self._until_usable(prompts.resources_messages(request), ask)

    async def quiz(self, request: GenerationRequest) -> tuple[Quiz, str]:
        async def ask(messages: prompts.Messages) -> tuple[Quiz, str]:
            return await self._stream_json(messages, Quiz, QUIZ_FORMAT)

        return await self._until_usable(prompts.quiz_messages(request), ask)

    async def _until_usable(
        self,
        messages: prompts.Messages,
        ask: Callable[[prompts.Messages], Awaitable[Parsed]],
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

    async def _with_backoff(self, call: Callable[[], Awaitable[Parsed]]) -> Parsed:
        """Our rounds on top of the SDK's retries, for transient errors only."""
        rounds = max(1, settings.GENERATION_TRANSIENT_ATTEMPTS)
        for failed_rounds in range(1, rounds + 1):
            try:
                return await call()
            except (openai.OpenAIError, TimeoutError, StreamCut) as exc:
                error = provider_error(exc)
                if not isinstance(error, TRANSIENT_ERRORS) or failed_rounds == rounds:
                    raise error from exc
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

    async def _stream_json(
        self,
        messages: prompts.Messages,
        schema: type[pydantic.BaseModel],
        format_: dict[str, Any],
    ) -> tuple[Any, str]:
        answer = await self._stream(messages, response_format=format_)
        return parse_json(answer.text, schema), answer.model_name

    async def _stream_tutorial(
        self, messages: prompts.Messages, request: GenerationRequest, progress: _Progress
    ) -> tuple[TutorialDraft, str]:
        answer = await self._stream(messages, progress=progress)
        draft = parse_tutorial(answer.text, fallback_title=request.concept_name)
        return draft, answer.model_name

    async def _stream(
        self,
        messages: prompts.Messages,
        *,
        response_format: dict[str, Any] | None = None,
        progress: _Progress | None = None,
    ) -> "_Answer":
        """One streamed answer, whole: its text; InvalidOutput for a refusal, an
        empty answer or one cut off at the length limit; StreamCut for one whose
        connection ended before the model finished."""
        answer = _Answer()
        options = {"response_format": response_format} if response_format else {}
        try:
            client = await self._client()
            stream = await client.chat.completions.create(
                model=settings.OPENAI_MODEL, messages=messages, stream=True, **options
            )
            if not isinstance(stream, openai.AsyncStream):
                raise InvalidOutput("the response is not an event stream")
            async with stream:
                async for chunk in stream:
                    report_activity()
                    answer.chunks += 1
                    answer.model_name = chunk.model or answer.model_name
                    for choice in chunk.choices[:1]:
                        answer.finish_reason = choice.finish_reason or answer.finish_reason
                        if choice.delta.refusal:
                            answer.refusal.append(choice.delta.refusal)
                        if choice.delta.content:
                            answer.parts.append(choice.delta.content)
                            answer.received += len(choice.delta.content)
                            if progress is not None:
                                await progress.received(answer.received)
        except json.JSONDecodeError as exc:
            raise InvalidOutput("the event stream is not JSON") from exc
        if answer.chunks and answer.finish_reason is None:
            raise StreamCut(f"the stream ended unfinished after {answer.chunks} chunks")
        if answer.refusal:
            raise InvalidOutput(f"the model refused: {''.join(answer.refusal)}")
        if answer.finish_reason == "length":
            raise TruncatedOutput("the answer was cut off at the length limit")
        if not answer.text.strip():
            raise InvalidOutput("the answer is empty")
        answer.model_name = answer.model_name or settings.OPENAI_MODEL
        return answer


class _LoopClient:
    """A loop's client, closed when the loop ends. asyncio closes a loop's live
    async generators before closing the loop (`shutdown_asyncgens`, which
    asyncio.run and asgiref's async_to_sync call), so a generator suspended in a
    `try` that holds the client closes it then, on that loop, as it must be."""

    def __init__(self, client: openai.AsyncOpenAI) -> None:
        self.client = client
        self._closer = None

    async def close_with_loop(self) -> None:
        if self._closer is None:
            self._closer = self._close_at_shutdown()
            await anext(self._closer)

    async def _close_at_shutdown(self):
        try:
            yield
        finally:
            await self.client.close()


@dataclass
class _Answer:
    parts: list[str] = field(default_factory=list)
    refusal: list[str] = field(default_factory=list)
    chunks: int = 0
    received: int = 0
    finish_reason: str | None = None
    model_name: str = ""

    @property
    def text(self) -> str:
        return "".join(self.parts)


async def _request_sent(request: Any) -> None:
    report_activity()
