"""The OpenAI transport: streamed Chat Completions through the official SDK,
against OpenAI or any OpenAI-compatible server (OPENAI_BASE_URL), and the SDK's
errors mapped to generation.errors.

A stream that receives no bytes for GENERATION_STALL_SECONDS is a timeout
(httpx's read timeout); the SDK retries what it considers transient
(OPENAI_MAX_RETRIES) before the shared policy's own rounds."""

import functools
import json
import logging
import re
import ssl
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import openai
import pydantic
from django.conf import settings

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
from roadmap_project.per_loop import PerLoop

logger = logging.getLogger(__name__)

TRANSPORT_NAME = "openai"
MAX_DETAIL_CHARS = 2000
_KIND_OF_SCHEMA = {"ResourceList": "resources", "Quiz": "quiz"}


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One TLS context for every client of the process, as the SDK's HTTP library
    (httpx2) builds one by default, with the same trust store: building one reads
    the CA bundle (30-40 ms of CPU), and a Celery worker builds a client per task
    (each runs on an event loop of its own)."""
    return httpx2.create_ssl_context()


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
        # One client per event loop (roadmap_project.per_loop): its connection
        # pool belongs to the loop that opened it, and work runs on several.
        self._clients: PerLoop[openai.AsyncOpenAI] = PerLoop(
            self._new_client, lambda client: client.close()
        )

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
        body = {
            "model": self.model_for(schema),
            "messages": messages,
            "stream": True,
            # A last chunk with the request's usage (choices empty).
            "stream_options": {"include_usage": True},
            # The output cap a start reserved for (generation.budgets); an answer
            # that reaches it ends with finish_reason "length".
            "max_completion_tokens": settings.GENERATION_MAX_OUTPUT_TOKENS,
        }
        if schema:
            body["response_format"] = response_format(schema)
        try:
            client = await self._client()
            # The SDK's own request (auth, retries, errors, event stream), each
            # chunk left as the JSON it is: a typed ChatCompletionChunk per chunk
            # cost about a sixth of a generation's CPU, for the few fields read here.
            stream = await client.post(
                "/chat/completions",
                body=body,
                cast_to=object,
                stream=True,
                stream_cls=openai.AsyncStream[object],
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
        return await self._clients.get()

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
            http_client=openai.DefaultAsyncHttpxClient(
                verify=_tls_context(), event_hooks={"request": [_request_sent]}
            ),
        )


def _chunk(completion: Any) -> Chunk:
    """The first choice's part of a chat.completion.chunk, as its JSON (we ask for
    one choice); anything else in the stream is not an answer."""
    try:
        model = _string(completion.get("model")) or ""
        choices = completion.get("choices") or []
        if not choices:
            usage = completion.get("usage") or {}
            return Chunk(
                model=model,
                prompt_tokens=_count(usage.get("prompt_tokens")),
                completion_tokens=_count(usage.get("completion_tokens")),
            )
        choice = choices[0]
        delta = choice.get("delta") or {}
        return Chunk(
            text=_string(delta.get("content")) or "",
            refusal=_string(delta.get("refusal")) or "",
            model=model,
            finish_reason=_string(choice.get("finish_reason")),
        )
    except (AttributeError, LookupError, TypeError) as exc:  # not the shape of a chunk
        raise InvalidOutput("a chunk of the event stream is not a completion chunk") from exc


def _count(value: Any) -> int | None:
    """A token count of the usage chunk. One that is not a count reads as not
    reported, so the request's usage is estimated: the answer itself is good."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if value is not None:
        logger.warning("The provider reported a token count that is not one: %.100r", value)
    return None


def _string(value: Any) -> str | None:
    """A chunk's text field: a string or null, nothing else."""
    if value is None or isinstance(value, str):
        return value
    raise TypeError(f"{type(value).__name__} where a string or null was expected")


async def _request_sent(request: Any) -> None:
    report_activity()
