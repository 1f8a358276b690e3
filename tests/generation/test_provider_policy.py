"""The shared provider policy without HTTP: a scripted transport stands where a
model's stream would, so re-asks, backoff rounds, truncation, signs of life and
closing the stream are checked on their own (DESIGN §6, I3). The OpenAI transport
itself is tested over real HTTP in test_openai_provider.py."""

import asyncio
import json
from collections.abc import AsyncIterator

import pydantic
import pytest

from generation.errors import (
    OutputTruncated,
    ProviderRejected,
    ProviderUnavailable,
    UnusableOutput,
)
from generation.providers.base import (
    Chunk,
    GenerationRequest,
    InvalidOutput,
    Messages,
    activity_reported_to,
)
from generation.providers.output import parse_tutorial
from generation.providers.policy import Policy, backoff_delay
from generation.schemas import ResourceList
from tests.support.fake_openai import VALID_RESOURCES, VALID_TUTORIAL

REQUEST = GenerationRequest(
    roadmap_title="Learn React",
    roadmap_goal="Ship production apps",
    concept_name="React Hooks",
    concept_description="useState, useEffect",
)
RESOURCES_JSON = json.dumps(VALID_RESOURCES)


def answer(text: str, *, finish_reason: str | None = "stop", pieces: int = 3) -> list[Chunk]:
    """The text in `pieces` chunks, the last one carrying the finish reason."""
    size = -(-len(text) // pieces) or 1
    parts = [text[start : start + size] for start in range(0, len(text), size)] or [""]
    chunks = [Chunk(text=part, model="scripted-model") for part in parts]
    chunks[-1] = Chunk(text=parts[-1], model="scripted-model", finish_reason=finish_reason)
    return chunks


class ScriptedTransport:
    """Answers each request with the next scripted list of chunks, or raises the
    next scripted error; records what it was asked."""

    name = "scripted"
    model = "asked-model"

    def __init__(self, *script: list[Chunk] | Exception) -> None:
        self.script = list(script)
        self.requests: list[tuple[Messages, type[pydantic.BaseModel] | None]] = []
        self.closed = 0

    async def stream(
        self, messages: Messages, *, schema: type[pydantic.BaseModel] | None = None
    ) -> AsyncIterator[Chunk]:
        self.requests.append((messages, schema))
        step = self.script.pop(0)
        try:
            if isinstance(step, Exception):
                raise step
            for chunk in step:
                await asyncio.sleep(0)
                yield chunk
        finally:
            self.closed += 1


@pytest.fixture(autouse=True)
def quick_rounds(settings):
    settings.GENERATION_TRANSIENT_ATTEMPTS = 2
    settings.GENERATION_OUTPUT_ATTEMPTS = 2
    settings.GENERATION_BACKOFF_SECONDS = 0.01


async def nothing(percentage: int) -> None:
    pass


async def test_structured_output_asks_with_the_schema_and_validates():
    transport = ScriptedTransport(answer(RESOURCES_JSON))

    resources, model_name = await Policy(transport).resources(REQUEST)

    assert resources == ResourceList.model_validate(VALID_RESOURCES)
    assert model_name == "scripted-model"
    [(_, schema)] = transport.requests
    assert schema is ResourceList


async def test_model_name_defaults_to_the_one_asked_for():
    chunks = [Chunk(text=RESOURCES_JSON, finish_reason="stop")]

    _, model_name = await Policy(ScriptedTransport(chunks)).resources(REQUEST)

    assert model_name == "asked-model"


async def test_transient_error_is_retried_after_a_backoff_round():
    transport = ScriptedTransport(ProviderUnavailable("503"), answer(RESOURCES_JSON))

    resources, _ = await Policy(transport).resources(REQUEST)

    assert resources == ResourceList.model_validate(VALID_RESOURCES)
    assert len(transport.requests) == 2


async def test_transient_error_every_round_fails_with_it(settings):
    transport = ScriptedTransport(*[ProviderUnavailable("503")] * 5)

    with pytest.raises(ProviderUnavailable):
        await Policy(transport).quiz(REQUEST)
    assert len(transport.requests) == settings.GENERATION_TRANSIENT_ATTEMPTS


async def test_permanent_error_fails_at_once():
    transport = ScriptedTransport(ProviderRejected("401"), answer(RESOURCES_JSON))

    with pytest.raises(ProviderRejected):
        await Policy(transport).resources(REQUEST)
    assert len(transport.requests) == 1


async def test_stream_ended_without_a_finish_reason_is_a_lost_connection(settings):
    """A fragment is never kept: it is asked again, as a transient failure."""
    cut = answer(VALID_TUTORIAL, finish_reason=None)
    transport = ScriptedTransport(cut, answer(VALID_TUTORIAL))

    draft, _ = await Policy(transport).tutorial(REQUEST, nothing)

    assert draft.markdown.strip() == VALID_TUTORIAL.strip()
    assert len(transport.requests) == 2
    # Cut every time: the rounds run out as unavailable.
    transport = ScriptedTransport(*[cut] * settings.GENERATION_TRANSIENT_ATTEMPTS)
    with pytest.raises(ProviderUnavailable):
        await Policy(transport).tutorial(REQUEST, nothing)


@pytest.mark.parametrize(
    "bad",
    [
        answer('{"items": ['),
        answer('{"items": []}'),
        [Chunk(refusal="I can't help with that.", finish_reason="stop")],
        answer("   "),
    ],
    ids=["invalid-json", "schema-violation", "refusal", "empty"],
)
async def test_unusable_answer_is_reasked_saying_why_then_fails(settings, bad):
    transport = ScriptedTransport(*[bad] * settings.GENERATION_OUTPUT_ATTEMPTS)

    with pytest.raises(UnusableOutput):
        await Policy(transport).resources(REQUEST)

    first, second = (messages for messages, _ in transport.requests)
    assert second[: len(first)] == first and len(second) == len(first) + 1
    assert "could not be used" in second[-1]["content"]


async def test_answer_cut_at_the_length_limit_is_reasked_then_fails_as_truncated(settings):
    truncated = answer(VALID_TUTORIAL, finish_reason="length")
    transport = ScriptedTransport(*[truncated] * settings.GENERATION_OUTPUT_ATTEMPTS)

    with pytest.raises(OutputTruncated):
        await Policy(transport).tutorial(REQUEST, nothing)
    assert len(transport.requests) == settings.GENERATION_OUTPUT_ATTEMPTS


async def test_truncated_then_complete_answer_is_kept():
    transport = ScriptedTransport(
        answer(VALID_TUTORIAL, finish_reason="length"), answer(VALID_TUTORIAL)
    )

    draft, _ = await Policy(transport).tutorial(REQUEST, nothing)

    assert draft.title == "React Hooks: a first tutorial"


async def test_tutorial_progress_rises_across_reasks_and_ends_at_100():
    long_text = VALID_TUTORIAL + "More.\n" * 2000
    transport = ScriptedTransport(
        answer(long_text, finish_reason="length", pieces=10), answer(long_text, pieces=10)
    )
    reported: list[int] = []

    async def on_progress(percentage: int) -> None:
        reported.append(percentage)

    await Policy(transport).tutorial(REQUEST, on_progress)

    assert reported == sorted(set(reported)), "progress must strictly increase"
    assert reported[-1] == 100 and max(reported[:-1]) <= 95


async def test_every_chunk_is_a_sign_of_life():
    chunks = answer(RESOURCES_JSON, pieces=4)
    signs: list[None] = []

    with activity_reported_to(lambda: signs.append(None)):
        await Policy(ScriptedTransport(chunks)).resources(REQUEST)

    assert len(signs) == len(chunks)


async def test_cancelling_the_caller_closes_the_stream_at_once():
    """Closing the stream is what closes a transport's connection (cancel, I3), even
    when the caller is cancelled between two chunks (here, reporting progress)."""
    reporting = asyncio.Event()

    async def on_progress(percentage: int) -> None:
        reporting.set()
        await asyncio.Event().wait()

    transport = ScriptedTransport(answer(VALID_TUTORIAL * 100, pieces=2))
    work = asyncio.create_task(Policy(transport).tutorial(REQUEST, on_progress))
    await reporting.wait()
    work.cancel()
    with pytest.raises(asyncio.CancelledError):
        await work
    assert transport.closed == 1


def test_backoff_doubles_with_jitter(settings):
    settings.GENERATION_BACKOFF_SECONDS = 1.0
    for failed_rounds in (1, 2, 3):
        full = 2 ** (failed_rounds - 1)
        assert full / 2 <= backoff_delay(failed_rounds) <= full


# --- Reading a tutorial's Markdown ------------------------------------------------


def test_tutorial_title_and_summary_come_from_the_markdown():
    draft = parse_tutorial(
        "```markdown\n# Hooks ##\n\n## Why\n\n- a list\n\nThe  summary\nparagraph.\n```",
        fallback_title="fallback",
    )

    assert draft.title == "Hooks"
    assert draft.summary == "The summary paragraph."
    assert draft.markdown.startswith("# Hooks ##") and draft.markdown.endswith("paragraph.\n")


def test_tutorial_without_a_heading_takes_the_fallback_title():
    draft = parse_tutorial("Just prose.", fallback_title="React Hooks")

    assert (draft.title, draft.summary) == ("React Hooks", "Just prose.")


@pytest.mark.parametrize("text", ["", "```\n```", "# Title\n\n## Only headings\n\n- a list"])
def test_tutorial_with_nothing_to_keep_is_invalid(text):
    with pytest.raises(InvalidOutput):
        parse_tutorial(text, fallback_title="x")
