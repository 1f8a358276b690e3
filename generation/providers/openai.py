"""The OpenAI transport: streamed Chat Completions through the official SDK,
against OpenAI or any OpenAI-compatible server (OPENAI_BASE_URL), and the SDK's
errors mapped to generation.errors.

A stream that receives no bytes for GENERATION_STALL_SECONDS is a timeout
(httpx's read timeout); the SDK retries what it considers transient
(OPENAI_MAX_RETRIES) before the shared policy's own rounds."""

import asyncio
import functools
import json
import re
import threading
import weakref
from collections.abc import AsyncIterator
from typing import Any

import openai
import pydantic
from django.conf import settings
from openai.types.chat import ChatCompletionChunk

from generation.errors import (
    GenerationError,
    ProviderMisconfigured,
    ProviderRateLimited,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnavailable,
)
from generation.providers.base import Chunk, InvalidOutput, Messages, report_activity
from generation.providers.config import ProviderConfig
from generation.providers.output import strict_json_schema

TRANSPORT_NAME = "openai"
MAX_DETAIL_CHARS = 2000
_KIND_OF_SCHEMA = {"ResourceList": "resources", "Quiz": "quiz"}


def _detail(exc: BaseException) -> str:
    """The raw cause, for the log only (never public)."""
    return f"{type(exc).__name__}: {exc}"[:MAX_DETAIL_CHARS]


def provider_error(exc: BaseException) -> GenerationError:
    """Map an SDK (or timeout) exception to the error class with its public meaning."""
    detail = _detail(exc)
    if isinstance(exc, openai.APITimeoutError | TimeoutError):
        return ProviderTimeout(detail)
    if isinstance(exc, openai.APIConnectionError):
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
        if exc.status_code in (401, 403, 404):
            # Its key or its model: this provider's configuration, not the request.
            return ProviderMisconfigured(detail)
        return ProviderRejected(detail)
    if isinstance(exc, openai.APIError):
        # An error event inside a stream, after a 200 answer.
        return ProviderUnavailable(detail)
    return ProviderRejected(detail)


@functools.cache
def response_format(schema: type[pydantic.BaseModel]) -> dict[str, Any]:
    """Strict structured output, named after the schema (ResourceList: resource_list)."""
    name = re.sub(r"(?<!^)(?=[A-Z])", "_", schema.__name__).lower()
    return {
        "type": "json_schema",
        "json_schema": {"name": name, "strict": True, "schema": strict_json_schema(schema)},
    }


class OpenAITransport:
    """Implements generation.providers.base.Transport over Chat Completions."""

    def __init__(self, config: ProviderConfig | None = None) -> None:
        # Without a configuration, the OPENAI_* settings as they are when used.
        self.config = config
        self.name = config.name if config is not None else TRANSPORT_NAME
        # One client per event loop: a client's connection pool belongs to the loop
        # that opened it, and work runs on several (the server's, each Celery worker
        # thread's). Forgotten with its loop; a lock, as worker threads share this.
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopClient]
        self._clients = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    @property
    def model(self) -> str:
        return self.config.model if self.config is not None else settings.OPENAI_MODEL

    def model_for(self, schema: type[pydantic.BaseModel] | None) -> str:
        """The model asked for this kind of answer (a schema's, or the tutorial's)."""
        if self.config is None:
            return self.model
        kind = "tutorial" if schema is None else _KIND_OF_SCHEMA.get(schema.__name__, "")
        return self.config.model_for(kind)

    async def stream(
        self, messages: Messages, *, schema: type[pydantic.BaseModel] | None = None
    ) -> AsyncIterator[Chunk]:
        options = {"response_format": response_format(schema)} if schema else {}
        try:
            client = await self._client()
            stream = await client.chat.completions.create(
                model=self.model_for(schema),
                messages=messages,
                stream=True,
                # A last chunk with the request's usage (choices empty).
                stream_options={"include_usage": True},
                # The output cap a start reserved for (generation.budgets); an answer
                # that reaches it ends with finish_reason "length".
                max_completion_tokens=settings.GENERATION_MAX_OUTPUT_TOKENS,
                **options,
            )
            if not isinstance(stream, openai.AsyncStream):
                raise InvalidOutput("the response is not an event stream")
            async with stream:
                async for completion in stream:
                    yield _chunk(completion)
        except json.JSONDecodeError as exc:
            raise InvalidOutput("the event stream is not JSON") from exc
        except (openai.OpenAIError, TimeoutError) as exc:
            raise provider_error(exc) from exc

    async def _client(self) -> openai.AsyncOpenAI:
        loop = asyncio.get_running_loop()
        with self._lock:
            held = self._clients.get(loop)
            if held is None:
                held = self._clients[loop] = _LoopClient(self._new_client())
        await held.close_with_loop()
        return held.client

    def _new_client(self) -> openai.AsyncOpenAI:
        if self.config is None:
            api_key, base_url, variable = (
                settings.OPENAI_API_KEY,
                settings.OPENAI_BASE_URL,
                "OPENAI_API_KEY",
            )
        else:
            api_key, base_url = self.config.api_key, self.config.base_url
            variable = self.config.api_key_env
        if not api_key:
            raise ProviderMisconfigured(f"{variable} is not set")
        return openai.AsyncOpenAI(
            api_key=api_key,
            base_url=base_url,
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


def _chunk(completion: ChatCompletionChunk) -> Chunk:
    """The first choice's part of a completion chunk (we ask for one choice)."""
    usage = completion.usage
    if not completion.choices:
        if usage is None:
            return Chunk(model=completion.model)
        return Chunk(
            model=completion.model,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
        )
    choice = completion.choices[0]
    return Chunk(
        text=choice.delta.content or "",
        refusal=choice.delta.refusal or "",
        model=completion.model,
        finish_reason=choice.finish_reason,
    )


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


async def _request_sent(request: Any) -> None:
    report_activity()
