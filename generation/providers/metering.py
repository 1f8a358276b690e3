"""What each provider request used (DESIGN §6 "Usage"): its tokens as the
provider reports them (streams ask for a final usage chunk), or an estimate
marked as such; its time to first token, duration and outcome. A request is
reported when it ends, however it ends (completed, unusable, truncated, failed,
cancelled), to whoever runs the generation (generation.usage writes it).

It also holds an attempt to the tokens its start reserved (DESIGN §6 "Budgets"):
within `limited_to(tokens)`, a request is sent only if what the block's requests
counted so far plus the most this one can count (`prompt_bound` plus
GENERATION_MAX_OUTPUT_TOKENS) stays within `tokens` (`check_allowance`)."""

import asyncio
import functools
import json
import math
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import pydantic
from django.conf import settings

from generation.errors import ReservationSpent
from generation.providers.base import Chunk, InvalidOutput, Messages, TruncatedOutput
from generation.providers.output import strict_json_schema

COMPLETED, UNUSABLE, TRUNCATED, FAILED, CANCELLED = (
    "completed",
    "unusable",
    "truncated",
    "failed",
    "cancelled",
)

# The estimate where a server reports no usage, close to what BPE tokenizers
# give: one token per word of up to ten characters (longer words one per ten),
# per punctuation mark and per CJK character, and a few tokens of framing per
# message. Documented in docs/operations.md.
CHARS_PER_WORD_TOKEN = 10
TOKENS_PER_MESSAGE = 4
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
_PIECES = re.compile(rf"([{_CJK}])|([^\W{_CJK}]+)|[^\w\s]")


def estimate_tokens(text: str) -> int:
    tokens = 0
    for _wide, word in _PIECES.findall(text):
        tokens += math.ceil(len(word) / CHARS_PER_WORD_TOKEN) if word else 1
    return tokens


def estimate_prompt_tokens(messages: Messages) -> int:
    return sum(TOKENS_PER_MESSAGE + estimate_tokens(m.get("content", "")) for m in messages)


def prompt_bound(messages: Messages, schema: type[pydantic.BaseModel] | None = None) -> int:
    """The most tokens a prompt can count, not an estimate: a byte-level BPE
    tokenizer (every OpenAI model's) never makes more tokens than the text has UTF-8
    bytes; each message and the reply add their framing, and a structured answer's
    JSON schema is sent along. About four times the real count of an English
    prompt, and twenty times cheaper to compute than estimate_prompt_tokens (a
    start computes it for every pair under its lock)."""
    tokens = TOKENS_PER_MESSAGE * (len(messages) + 1)
    tokens += sum(len(message.get("content", "").encode()) for message in messages)
    return tokens + (schema_bound(schema) if schema is not None else 0)


@functools.cache
def schema_bound(schema: type[pydantic.BaseModel]) -> int:
    return TOKENS_PER_MESSAGE + len(json.dumps(strict_json_schema(schema)).encode())


def request_bound(messages: Messages, schema: type[pydantic.BaseModel] | None = None) -> int:
    """The most one request can count: its prompt and the longest answer allowed."""
    return prompt_bound(messages, schema) + settings.GENERATION_MAX_OUTPUT_TOKENS


@dataclass
class Allowance:
    tokens: int
    spent: int = 0


_allowance: ContextVar[Allowance | None] = ContextVar("allowance", default=None)


@contextmanager
def limited_to(tokens: int | None) -> Iterator[None]:
    """Within this block, the requests together count at most `tokens` (None: no
    limit); check_allowance refuses one that could pass it."""
    token = _allowance.set(None if tokens is None else Allowance(tokens))
    try:
        yield
    finally:
        _allowance.reset(token)


def check_allowance(messages: Messages, schema: type[pydantic.BaseModel] | None = None) -> None:
    """Raises ReservationSpent, before it is sent, for a request that could take
    the block past its allowance: counted so far plus this request's bound."""
    allowance = _allowance.get()
    if allowance is None:
        return
    most = request_bound(messages, schema)
    if allowance.spent + most > allowance.tokens:
        raise ReservationSpent(
            f"{allowance.spent} of {allowance.tokens} reserved tokens counted; "
            f"the next request could count {most}"
        )


@dataclass(frozen=True)
class RequestUsage:
    provider: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    estimated: bool
    first_token_seconds: float | None
    duration_seconds: float
    outcome: str


_on_usage: ContextVar[Callable[[RequestUsage], None] | None] = ContextVar("on_usage", default=None)
_current: ContextVar["Request | None"] = ContextVar("current_request", default=None)


@contextmanager
def usage_reported_to(callback: Callable[[RequestUsage], None]) -> Iterator[None]:
    """Within this block, every provider request that ends is given to `callback`."""
    token = _on_usage.set(callback)
    try:
        yield
    finally:
        _on_usage.reset(token)


class Request:
    """One provider request while it runs: what it asked, what came back."""

    def __init__(self, provider: str, model: str) -> None:
        self.provider = provider
        self.model = model
        self.started = time.monotonic()
        self.first_token: float | None = None
        self.messages: Messages = []
        self.received: list[str] = []
        self.reported: tuple[int, int] | None = None  # the provider's own count

    def asked(self, messages: Messages) -> None:
        self.messages = messages

    def chunk(self, chunk: Chunk) -> None:
        if chunk.model:
            self.model = chunk.model
        if (chunk.text or chunk.refusal) and self.first_token is None:
            self.first_token = time.monotonic()
        if chunk.text:
            self.received.append(chunk.text)
        if chunk.prompt_tokens is not None and chunk.completion_tokens is not None:
            self.reported = (chunk.prompt_tokens, chunk.completion_tokens)

    def usage(self, outcome: str) -> RequestUsage:
        if self.reported is not None:
            prompt, completion, estimated = *self.reported, False
        elif not self.messages or (outcome == FAILED and self.first_token is None):
            prompt, completion, estimated = 0, 0, False  # never answered: nothing used
        else:
            prompt = estimate_prompt_tokens(self.messages)
            completion = estimate_tokens("".join(self.received))
            estimated = True
        return RequestUsage(
            provider=self.provider,
            model=self.model,
            prompt_tokens=prompt,
            completion_tokens=completion,
            estimated=estimated,
            first_token_seconds=(
                None if self.first_token is None else self.first_token - self.started
            ),
            duration_seconds=time.monotonic() - self.started,
            outcome=outcome,
        )


def current() -> Request | None:
    """The request being metered in this task, if any (the policy's streams fill it in)."""
    return _current.get()


@contextmanager
def metered(provider: str, model: str) -> Iterator[Request]:
    """Meter one provider request: reported when the block ends, with the outcome
    its exception (or none) gives it."""
    request = Request(provider, model)
    token = _current.set(request)
    outcome = COMPLETED
    try:
        yield request
    except BaseException as exc:
        outcome = outcome_of(exc)
        raise
    finally:
        _current.reset(token)
        usage = request.usage(outcome)
        allowance = _allowance.get()
        if allowance is not None:
            allowance.spent += usage.prompt_tokens + usage.completion_tokens
        callback = _on_usage.get()
        if callback is not None:
            callback(usage)


def outcome_of(exc: BaseException) -> str:
    if isinstance(exc, asyncio.CancelledError):
        return CANCELLED
    if isinstance(exc, TruncatedOutput):
        return TRUNCATED
    if isinstance(exc, InvalidOutput):
        return UNUSABLE
    return FAILED
