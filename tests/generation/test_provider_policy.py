"""The shared provider policy without HTTP: a scripted transport stands where a
model's stream would, so re-asks, backoff rounds, truncation, signs of life,
closing the stream and what is reported while the answer is written (live
content) are checked on their own (DESIGN §5, §6, I3). The OpenAI transport itself
is tested over real HTTP in test_openai_provider.py."""

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
from generation.schemas import Quiz, Resource, ResourceList
from tests.support.fake_openai import VALID_QUIZ, VALID_RESOURCES, VALID_TUTORIAL
from tests.support.output import RecordingSink

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
        self.sent = 0  # chunks yielded so far, over every request

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
                self.sent += 1
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


# --- What is reported while the answer is written (live content) ---------------

LIVE_TUTORIAL = (
    VALID_TUTORIAL + "\n## 小结\n\n钩子让函数组件拥有状态 🎣✨，副作用在渲染之后运行。👍🏽\n"
)
THREE_RESOURCES = {
    "items": [
        *VALID_RESOURCES["items"],
        {
            "title": "自定义 Hook 练习 🎣",
            "url": "https://react.dev/learn/reusing-logic-with-custom-hooks",
            "type": "exercise",
            "description": "把重复的逻辑提取成 Hook。",
            "estimated_minutes": 45,
        },
    ]
}
THREE_QUESTIONS = {
    "questions": [
        *VALID_QUIZ["questions"],
        {
            "question_id": "q3",
            "type": "multiple_choice",
            "question": "Which are built-in hooks? {pick two}",
            "options": ["useState", "useFetch", "useEffect"],
            "correct_answers": [0, 2],
            "explanation": "useFetch is a custom hook someone wrote.",
            "difficulty": "medium",
        },
    ]
}
CHUNK_CHARS = 7


def in_chunks(text: str) -> list[Chunk]:
    """The text in CHUNK_CHARS pieces, as a model streams it."""
    chunks = [
        Chunk(text=text[start : start + CHUNK_CHARS], model="scripted-model")
        for start in range(0, len(text), CHUNK_CHARS)
    ]
    chunks[-1] = Chunk(text=chunks[-1].text, model="scripted-model", finish_reason="stop")
    return chunks


def chunk_number(offset: int) -> int:
    """Which chunk of in_chunks (counting from 1) carries the character at offset."""
    return offset // CHUNK_CHARS + 1


def dumped(items: list[dict], item_schema: type[pydantic.BaseModel]) -> list[dict]:
    return [item_schema.model_validate(item).model_dump(mode="json") for item in items]


def calls(answer: list[tuple]) -> list:
    return [value for _, value, _ in answer]


async def test_tutorial_text_is_reported_chunk_by_chunk_as_it_arrives():
    chunks = answer(LIVE_TUTORIAL, pieces=25)
    transport = ScriptedTransport(chunks)
    sink = RecordingSink(clock=lambda: transport.sent)

    draft, _ = await Policy(transport).tutorial(REQUEST, nothing, sink)

    assert sink.calls[0][0] == "restart"
    [reported] = sink.answers()
    assert calls(reported) == [chunk.text for chunk in chunks]
    assert "".join(sink.texts()) == LIVE_TUTORIAL
    # Each delta as its chunk arrives, not once the answer is whole.
    assert [sent for _, _, sent in reported] == list(range(1, len(chunks) + 1))
    assert draft.markdown.strip() == LIVE_TUTORIAL.strip()


async def test_reask_after_unusable_output_restarts_then_reports_only_the_new_answer():
    first = answer("# Cut short\n\nThe model ran out of tok", finish_reason="length")
    second = answer(LIVE_TUTORIAL, pieces=10)
    sink = RecordingSink()

    await Policy(ScriptedTransport(first, second)).tutorial(REQUEST, nothing, sink)

    kinds = [kind for kind, _, _ in sink.calls]
    assert kinds == ["restart", *["text"] * len(first), "restart", *["text"] * len(second)]
    assert "".join(sink.texts()) == LIVE_TUTORIAL


async def test_every_transient_retry_round_restarts(settings):
    settings.GENERATION_TRANSIENT_ATTEMPTS = 3
    cut = answer(LIVE_TUTORIAL, finish_reason=None, pieces=6)[:4]
    whole = answer(LIVE_TUTORIAL, pieces=6)
    transport = ScriptedTransport(cut, ProviderUnavailable("503"), whole)
    sink = RecordingSink()

    await Policy(transport).tutorial(REQUEST, nothing, sink)

    kinds = [kind for kind, _, _ in sink.calls]
    assert kinds == ["restart", *["text"] * 4, "restart", "restart", *["text"] * 6]
    assert "".join(sink.texts()) == LIVE_TUTORIAL


@pytest.mark.parametrize(
    ("content", "payload"), [("resources", THREE_RESOURCES), ("quiz", THREE_QUESTIONS)]
)
async def test_items_are_reported_one_at_a_time_as_they_complete(content, payload):
    [(key, items)] = payload.items()
    text = json.dumps(payload, ensure_ascii=False)
    chunks = in_chunks(text)
    transport = ScriptedTransport(chunks)
    sink = RecordingSink(clock=lambda: transport.sent)

    parsed, _ = await getattr(Policy(transport), content)(REQUEST, sink)

    final = [item.model_dump(mode="json") for item in getattr(parsed, key)]
    [reported] = sink.answers()
    assert calls(reported) == [[item] for item in final]  # whole items, once each, in order
    spans = [json.dumps(item, ensure_ascii=False) for item in items]
    starts = [text.index(span) for span in spans]
    ends = [start + len(span) for start, span in zip(starts, spans, strict=True)]
    for (_, _, sent), next_start, next_end in zip(reported[:-1], starts[1:], ends[1:], strict=True):
        # Known complete as the next item begins: before the chunk that completes it.
        assert sent == chunk_number(next_start) < chunk_number(next_end - 1)
    # The last one only when the answer is whole.
    assert reported[-1][2] == len(chunks)


async def test_reporting_stops_at_the_first_invalid_item_and_the_reask_starts_over():
    first, second, third = THREE_RESOURCES["items"]
    # Had it skipped the invalid item, the third would show as the fourth begins.
    bad = {"items": [first, {**second, "type": "podcast"}, third, first]}
    transport = ScriptedTransport(
        in_chunks(json.dumps(bad)), in_chunks(json.dumps(THREE_RESOURCES))
    )
    sink = RecordingSink()

    resources, _ = await Policy(transport).resources(REQUEST, sink)

    bad_answer, good_answer = sink.answers()
    assert calls(bad_answer) == [dumped([first], Resource)]
    assert calls(good_answer) == [[item] for item in dumped(THREE_RESOURCES["items"], Resource)]
    assert sink.reported_items() == [item.model_dump(mode="json") for item in resources.items]


async def test_items_of_an_answer_sent_at_once_are_all_reported():
    text = json.dumps(VALID_QUIZ)
    sink = RecordingSink()

    quiz, _ = await Policy(ScriptedTransport(answer(text, pieces=1))).quiz(REQUEST, sink)

    assert sink.reported_items() == [q.model_dump(mode="json") for q in quiz.questions]
    assert quiz == Quiz.model_validate(VALID_QUIZ)


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
