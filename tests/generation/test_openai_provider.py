"""The openai provider over real HTTP, through the real SDK, against the local fake
OpenAI-compatible server (tests/fake_openai.py), alone and through the pipeline
(DESIGN §6, I3, I7)."""

import asyncio
import json
import time

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.core.files.storage import default_storage

from generation import engine
from generation.errors import (
    ProviderRateLimited,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnavailable,
    UnusableOutput,
)
from generation.providers import GenerationRequest, get_provider, reset_provider
from generation.schemas import Question, Quiz, Resource, ResourceList
from generation.services import start_generation
from notifications.models import Event
from notifications.services import feed_group
from roadmaps.models import ConceptContent, roadmap_topic
from tests.support.fake_openai import (
    CHUNK_CHARS,
    FAKE_API_KEY,
    FAKE_MODEL,
    LONG_TUTORIAL,
    VALID_QUIZ,
    VALID_RESOURCES,
    VALID_TUTORIAL,
    cut,
    error,
    events,
    hang,
    malformed,
    ok,
    refusal,
)
from tests.support.live import LiveClient
from tests.support.output import RecordingSink

SECRET_PATH = "/srv/app/secrets.py"
LEAKY_BODY = {
    "error": {
        "message": f"Incorrect API key provided: {FAKE_API_KEY}. Traceback (most recent "
        f'call last): File "{SECRET_PATH}", line 12, in load_key',
        "type": "invalid_request_error",
        "code": "invalid_api_key",
    }
}


def hooks_request(**preferences: str) -> GenerationRequest:
    return GenerationRequest(
        roadmap_title="Learn React",
        roadmap_goal="Ship production apps",
        concept_name="React Hooks",
        concept_description="useState, useEffect",
        preferences={"language": "en", **preferences},
    )


def requests_for_one_transient_failure(settings) -> int:
    """Every round of our backoff makes the SDK's 1 + OPENAI_MAX_RETRIES attempts."""
    return (settings.OPENAI_MAX_RETRIES + 1) * settings.GENERATION_TRANSIENT_ATTEMPTS


def public_text(exc) -> str:
    return str(exc.public_message)


# --- Plain structured output -------------------------------------------------


async def test_resources_are_strict_structured_output_validated(fake_openai):
    resources, model_name = await get_provider().resources(hooks_request())

    assert resources == ResourceList.model_validate(VALID_RESOURCES)
    assert model_name == FAKE_MODEL  # what the response says, not what we asked for
    [request] = fake_openai.requests
    assert request.headers["authorization"] == f"Bearer {FAKE_API_KEY}"
    assert request.body["model"] == "gpt-test" and request.streaming  # every answer streams
    response_format = request.body["response_format"]
    assert response_format["type"] == "json_schema"
    assert response_format["json_schema"]["strict"] is True
    schema = response_format["json_schema"]["schema"]
    resource = schema["$defs"]["Resource"]
    assert resource["additionalProperties"] is False
    assert set(resource["required"]) == set(resource["properties"])
    prompt = request.body["messages"][-1]["content"]
    assert "React Hooks" in prompt and "Ship production apps" in prompt


async def test_quiz_prompt_carries_language_and_level(fake_openai):
    quiz, _ = await get_provider().quiz(
        hooks_request(language="zh-CN", level="advanced", focus="custom hooks")
    )

    assert quiz == Quiz.model_validate(VALID_QUIZ)
    prompt = fake_openai.requests[0].body["messages"][-1]["content"]
    assert "Simplified Chinese" in prompt
    assert "advanced" in prompt and "custom hooks" in prompt
    assert (
        "questions"
        in fake_openai.requests[0].body["response_format"]["json_schema"]["schema"]["properties"]
    )


# --- Streaming tutorial ------------------------------------------------------


async def test_tutorial_streams_with_monotonic_progress(fake_openai):
    fake_openai.script(ok(LONG_TUTORIAL))
    reported: list[int] = []

    async def on_progress(percentage: int) -> None:
        reported.append(percentage)

    draft, model_name = await get_provider().tutorial(hooks_request(), on_progress)

    assert fake_openai.requests[0].streaming
    assert draft.title == "React Hooks: a first tutorial"
    assert draft.summary.startswith("Hooks let function components hold state")
    assert draft.markdown.strip() == LONG_TUTORIAL.strip()
    assert model_name == FAKE_MODEL
    assert reported == sorted(set(reported)), "progress must strictly increase"
    assert len(reported) >= 5 and reported[-1] == 100
    assert max(reported[:-1]) <= 95  # held below 100 until the answer is parsed


async def test_empty_tutorial_is_reasked_then_unusable(fake_openai, settings):
    fake_openai.script(ok(""), ok("   \n"))

    async def on_progress(percentage: int) -> None:
        pass

    with pytest.raises(UnusableOutput):
        await get_provider().tutorial(hooks_request(), on_progress)
    assert len(fake_openai.requests) == settings.GENERATION_OUTPUT_ATTEMPTS


async def test_stalled_stream_times_out(fake_openai, settings):
    settings.GENERATION_STALL_SECONDS = 0.2
    stall = ok(LONG_TUTORIAL, hang_after_chunks=3)
    fake_openai.script(stall, stall)

    async def on_progress(percentage: int) -> None:
        pass

    started = time.monotonic()
    with pytest.raises(ProviderTimeout):
        await get_provider().tutorial(hooks_request(), on_progress)
    assert time.monotonic() - started < 2.0
    # A stall after the headers is past the SDK's retries: only our rounds repeat it.
    assert len(fake_openai.requests) == settings.GENERATION_TRANSIENT_ATTEMPTS


# --- Transient errors: SDK retries first, then our backoff ---------------------


@pytest.mark.parametrize("failures", [1, 2, 3])
async def test_rate_limit_then_success(fake_openai, settings, failures):
    fake_openai.script(*[error(429)] * failures)

    resources, _ = await get_provider().resources(hooks_request())

    assert resources == ResourceList.model_validate(VALID_RESOURCES)
    assert len(fake_openai.requests) == failures + 1


@pytest.mark.parametrize(
    ("status", "expected"),
    [(429, ProviderRateLimited), (500, ProviderUnavailable), (503, ProviderUnavailable)],
)
async def test_persistent_transient_error_fails_after_bounded_retries(
    fake_openai, settings, status, expected
):
    fake_openai.script(*[error(status)] * 10)

    with pytest.raises(expected) as raised:
        await get_provider().quiz(hooks_request())

    assert raised.value.retryable
    assert len(fake_openai.requests) == requests_for_one_transient_failure(settings)


@pytest.mark.stress
async def test_timeout_fails_within_bounded_time(fake_openai, settings):
    settings.GENERATION_STALL_SECONDS = 0.2
    fake_openai.script(*[hang(10)] * 10)

    started = time.monotonic()
    with pytest.raises(ProviderTimeout):
        await get_provider().resources(hooks_request())
    elapsed = time.monotonic() - started

    attempts = requests_for_one_transient_failure(settings)
    assert len(fake_openai.requests) == attempts
    # Each attempt waits one stall window, and the SDK pauses 0.5 s then 1 s (less
    # jitter) between its retries: about 1.5 s with a margin for a loaded machine,
    # where one hang alone would take 10 s without the stall window.
    assert elapsed < attempts * settings.GENERATION_STALL_SECONDS + 3.0


async def test_stream_cut_halfway_is_retried_and_never_kept(fake_openai):
    """A stream that ends without a finish reason (the connection closed mid-answer)
    is a lost connection, not an answer: the fragment is dropped and asked again."""
    fake_openai.script(cut(after_chunks=3))

    async def on_progress(percentage: int) -> None:
        pass

    draft, _ = await get_provider().tutorial(hooks_request(), on_progress)

    assert draft.markdown.strip() == VALID_TUTORIAL.strip()
    assert len(fake_openai.requests) == 2


async def test_stream_cut_every_time_fails_as_unavailable(fake_openai, settings):
    fake_openai.script(*[cut(after_chunks=3)] * 10)

    with pytest.raises(ProviderUnavailable) as raised:
        await get_provider().quiz(hooks_request())

    assert raised.value.retryable
    assert len(fake_openai.requests) == settings.GENERATION_TRANSIENT_ATTEMPTS


async def test_connection_refused_is_unavailable(fake_openai, settings):
    fake_openai.stop()  # nothing listens on the port any more
    settings.OPENAI_MAX_RETRIES = 0  # no SDK pause between refusals: our rounds suffice
    reset_provider()

    with pytest.raises(ProviderUnavailable):
        await get_provider().quiz(hooks_request())


# --- Unusable output: bounded re-ask -----------------------------------------


@pytest.mark.parametrize(
    "bad_answer",
    [
        ok('{"items": [{"title": "unterminated'),  # invalid JSON
        ok({"items": [{"title": "no url", "type": "article"}]}),  # schema violation
        ok({"items": []}),  # valid JSON, empty list
        malformed(),  # the HTTP body itself is not JSON
        refusal(),
        # Event streams of JSON that is not a completion chunk.
        events(["a", "list"]),
        events({"choices": {"0": {"delta": {}}}}),
        events({"choices": 7}),
        events({"choices": [], "usage": "many"}),
        events({"choices": [{"delta": {"content": 5}}]}),
    ],
    ids=[
        "invalid-json",
        "schema-violation",
        "empty-list",
        "malformed-body",
        "refusal",
        "chunk-a-list",
        "choices-an-object",
        "choices-a-number",
        "usage-a-string",
        "content-a-number",
    ],
)
async def test_unusable_output_is_reasked_then_fails(fake_openai, settings, bad_answer):
    fake_openai.script(*[bad_answer] * settings.GENERATION_OUTPUT_ATTEMPTS)

    with pytest.raises(UnusableOutput) as raised:
        await get_provider().resources(hooks_request())

    assert len(fake_openai.requests) == settings.GENERATION_OUTPUT_ATTEMPTS
    first, second = fake_openai.requests[:2]
    assert len(second.body["messages"]) == len(first.body["messages"]) + 1
    assert "could not be used" in second.body["messages"][-1]["content"]
    assert public_text(raised.value) == "The model returned unusable output."


async def test_invalid_output_then_valid_succeeds(fake_openai):
    bad_quiz = {"questions": [{**VALID_QUIZ["questions"][0], "correct_answers": [7]}]}
    fake_openai.script(ok(bad_quiz))

    quiz, _ = await get_provider().quiz(hooks_request())

    assert quiz == Quiz.model_validate(VALID_QUIZ)
    assert len(fake_openai.requests) == 2


# --- What is reported while the answer is written (live content) ---------------


async def nothing(percentage: int) -> None:
    pass


def calls(answer: list[tuple]) -> list:
    return [value for _, value, _ in answer]


async def test_tutorial_text_is_reported_as_it_streams_chinese_and_emoji_included(fake_openai):
    text = (
        LONG_TUTORIAL + "\n\n## 小结\n\n钩子让函数组件拥有状态 🎣✨，副作用在渲染之后运行。👍🏽\n"
    )
    fake_openai.script(ok(text))
    sink = RecordingSink()

    draft, _ = await get_provider().tutorial(hooks_request(), nothing, sink)

    [written] = sink.answers()
    assert "".join(sink.texts()) == text
    assert len(written) == -(-len(text) // CHUNK_CHARS)  # one delta per chunk sent
    assert draft.markdown.strip() == text.strip()


async def test_tutorial_reasked_after_the_length_limit_restarts_with_the_new_answer(fake_openai):
    fake_openai.script(ok(LONG_TUTORIAL, finish_reason="length"), ok(VALID_TUTORIAL))
    sink = RecordingSink()

    await get_provider().tutorial(hooks_request(), nothing, sink)

    cut_short, kept = sink.answers()
    assert "".join(calls(cut_short)) == LONG_TUTORIAL
    assert "".join(calls(kept)) == VALID_TUTORIAL


async def test_an_item_is_reported_once_complete_and_a_retry_round_starts_over(
    fake_openai, settings
):
    """The stream stalls after the second resource has begun: the first is reported
    meanwhile; the round that follows the stall reports the whole answer again."""
    settings.GENERATION_STALL_SECONDS = 0.3
    first, second = VALID_RESOURCES["items"]
    second_starts = json.dumps(VALID_RESOURCES).index(json.dumps(second))
    # The first event carries only the role; then CHUNK_CHARS of the answer each.
    fake_openai.script(ok(VALID_RESOURCES, hang_after_chunks=2 + second_starts // CHUNK_CHARS))
    sink = RecordingSink()

    work = asyncio.create_task(get_provider().resources(hooks_request(), sink))
    async with asyncio.timeout(5):
        while not sink.reported_items():
            await asyncio.sleep(0.01)
    assert sink.reported_items() == [Resource.model_validate(first).model_dump(mode="json")]
    assert not work.done()
    resources, _ = await work

    stalled, retried = sink.answers()
    assert calls(stalled) == [[Resource.model_validate(first).model_dump(mode="json")]]
    assert calls(retried) == [[item.model_dump(mode="json")] for item in resources.items]
    assert len(fake_openai.requests) == 2


async def test_quiz_reporting_stops_at_an_invalid_question_and_the_reask_starts_over(
    fake_openai,
):
    first, second = VALID_QUIZ["questions"]
    fake_openai.script(ok({"questions": [first, {**second, "correct_answers": [5]}, first]}))
    sink = RecordingSink()

    quiz, _ = await get_provider().quiz(hooks_request(), sink)

    invalid, reasked = sink.answers()
    assert calls(invalid) == [[Question.model_validate(first).model_dump(mode="json")]]
    assert calls(reasked) == [[question.model_dump(mode="json")] for question in quiz.questions]
    assert quiz == Quiz.model_validate(VALID_QUIZ)


# --- Permanent errors and secrets ----------------------------------------------


@pytest.mark.parametrize("status", [400, 401, 403, 404])
async def test_permanent_error_fails_at_once(fake_openai, status):
    fake_openai.script(error(status))

    with pytest.raises(ProviderRejected) as raised:
        await get_provider().resources(hooks_request())

    assert len(fake_openai.requests) == 1  # no SDK retry, no backoff round
    assert not raised.value.retryable


async def test_exhausted_quota_is_permanent_despite_429(fake_openai, settings):
    quota = {"error": {"message": "You exceeded your quota.", "code": "insufficient_quota"}}
    fake_openai.script(*[error(429, quota)] * 10)

    with pytest.raises(ProviderRejected):
        await get_provider().resources(hooks_request())
    # The SDK retries every 429; our backoff does not repeat a permanent cause.
    assert len(fake_openai.requests) == settings.OPENAI_MAX_RETRIES + 1


@pytest.mark.parametrize("status", [400, 401, 500])
async def test_provider_body_with_secrets_stays_out_of_the_public_message(fake_openai, status):
    fake_openai.script(*[error(status, LEAKY_BODY)] * 10)

    with pytest.raises((ProviderRejected, ProviderUnavailable)) as raised:
        await get_provider().quiz(hooks_request())

    message = public_text(raised.value)
    assert FAKE_API_KEY not in message and SECRET_PATH not in message
    assert "secrets" not in message and "Traceback" not in message
    # The raw cause is kept for the log.
    assert FAKE_API_KEY in raised.value.detail


async def test_missing_api_key_is_rejected_without_a_request(fake_openai, settings):
    settings.OPENAI_API_KEY = ""

    with pytest.raises(ProviderRejected):
        await get_provider().quiz(hooks_request())
    assert fake_openai.requests == []


def test_one_provider_serves_successive_event_loops(fake_openai):
    """The engine may run the provider on different loops (server, command, Celery
    worker threads): one client per loop, reused on it, closed when it ends."""
    provider = get_provider()

    async def twice_on_one_loop():
        first, _ = await provider.quiz(hooks_request())
        second, _ = await provider.resources(hooks_request())
        return first, second, await provider.transport._client()

    quiz, resources, first_client = asyncio.run(twice_on_one_loop())
    *_, second_client = asyncio.run(twice_on_one_loop())

    assert quiz == Quiz.model_validate(VALID_QUIZ)
    assert resources == ResourceList.model_validate(VALID_RESOURCES)
    assert first_client is not second_client
    assert first_client.is_closed() and second_client.is_closed()
    assert len(fake_openai.requests) == 4


# --- Through the pipeline: state machine, events, storage --------------------


def tutorial_content(roadmap) -> ConceptContent:
    return ConceptContent.objects.select_related("concept").get(
        roadmap=roadmap, content_type="tutorial"
    )


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("status", [401, 500])
def test_failed_generation_leaks_no_secret(fake_openai, alice, make_roadmap, status):
    fake_openai.script(*[error(status, LEAKY_BODY)] * 10)
    roadmap = make_roadmap(alice)

    result = start_generation(
        roadmap=roadmap, user=alice, kind="retry", contents=[tutorial_content(roadmap)]
    )
    assert engine.wait_until_idle(timeout=10)

    content = tutorial_content(roadmap)
    assert content.status == "failed"
    assert content.public_error
    [failed] = Event.objects.filter(stream=result.task.pk, type="concept_failed")
    assert failed.body["retryable"] is (status == 500)
    stored = json.dumps([e.body for e in Event.objects.filter(stream=result.task.pk)])
    for public in (content.public_error, stored):
        assert FAKE_API_KEY not in public and SECRET_PATH not in public
        assert "Traceback" not in public and "127.0.0.1" not in public


@pytest.mark.django_db(transaction=True)
async def test_streamed_tutorial_completes_with_live_progress(
    api, fake_openai, alice, make_roadmap
):
    # Calling the ASGI app makes this test's loop the engine's server loop, so the
    # live-only progress events can be watched on the in-memory channel layer.
    assert (await api.get("/api/v1/health")).status_code == 200
    roadmap = await sync_to_async(make_roadmap)(alice)
    content = await sync_to_async(tutorial_content)(roadmap)
    # About 200 chunks over 1 s: some ten coalesced changes, not a borderline five.
    fake_openai.script(ok(LONG_TUTORIAL, delay=0.2, chunk_delay=0.005))

    # The roadmap's group, joined before the start: it carries the task's events
    # too, and none can be published before anyone listens.
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(feed_group("topic", roadmap_topic(roadmap.pk)), channel)
    await sync_to_async(start_generation)(
        roadmap=roadmap, user=alice, kind="retry", contents=[content]
    )
    # Not in the thread-sensitive executor: the runner needs that one for the database.
    assert await sync_to_async(engine.wait_until_idle, thread_sensitive=False)(timeout=10)

    content = await sync_to_async(tutorial_content)(roadmap)
    assert content.status == "completed", content.public_error
    assert content.model == FAKE_MODEL
    assert content.title == "React Hooks: a first tutorial"
    with default_storage.open(content.content_ref) as saved:
        assert saved.read().decode().strip() == LONG_TUTORIAL.strip()
    # Up to concept_complete, however late a publish (the Redis layer's in the
    # distributed pass), then whatever follows it closely.
    received = []
    async with asyncio.timeout(10):
        while not received or received[-1]["type"] != "concept_complete":
            received.append(json.loads((await layer.receive(channel))["text"]))
    while True:
        try:
            async with asyncio.timeout(0.2):
                received.append(json.loads((await layer.receive(channel))["text"]))
        except TimeoutError:
            break
    progress = [e["progress_percentage"] for e in received if e["type"] == "concept_progress"]
    assert progress and progress[-1] == 100
    assert progress == sorted(progress)
    assert [e["type"] for e in received if e["id"] is not None] == [
        "concept_start",
        "concept_complete",
    ]
    # The text reached the stream while it was written, and adds up to what is stored.
    live = LiveClient()
    for event in received:
        live.apply(event)
    [written] = live.held.values()
    assert live.deltas >= 5 and written.strip() == LONG_TUTORIAL.strip()
