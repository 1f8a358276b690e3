"""Liveness is progress (DESIGN §6): a stream with no bytes for the stall
window is a timeout; a lease is renewed only after progress, never by a timer
alone; every attempt has an overall deadline; an answer cut off at the length
limit is never stored as completed. Through the whole pipeline, over real HTTP
against the fake OpenAI server."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from generation import engine, liveness
from generation.errors import OutputTruncated, ProviderTimeout, TookTooLong, WorkerLost
from generation.providers import reset_provider
from generation.services import start_generation
from notifications.models import Event
from roadmaps.models import ConceptContent
from tests.support.fake_openai import LONG_TUTORIAL, VALID_TUTORIAL, ok
from tests.support.lifecycle import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def content_of(roadmap, content_type: str = "tutorial") -> ConceptContent:
    return ConceptContent.objects.select_related("concept", "roadmap").get(
        roadmap=roadmap, content_type=content_type
    )


def generate(roadmap, content_type: str = "tutorial") -> str:
    content = content_of(roadmap, content_type)
    result = start_generation(roadmap=roadmap, user=roadmap.owner, kind="retry", contents=[content])
    return result.task.pk


def failure(task_id: str) -> dict:
    return Event.objects.get(stream=task_id, type="concept_failed").body


@pytest.fixture
def one_round(settings):
    """No retries: each scenario's first failure is its last."""
    settings.OPENAI_MAX_RETRIES = 0
    settings.GENERATION_TRANSIENT_ATTEMPTS = 1


def test_hung_stream_fails_within_the_stall_window(
    fake_openai, alice, make_roadmap, settings, one_round
):
    settings.GENERATION_STALL_SECONDS = 0.3
    fake_openai.script(ok(LONG_TUTORIAL, hang_after_chunks=2))  # headers, then silence
    roadmap = make_roadmap(alice)

    task_id = generate(roadmap)
    assert engine.wait_until_idle(timeout=5)

    content = content_of(roadmap)
    assert content.status == "failed" and content.version == 0
    assert failure(task_id)["error"] == str(ProviderTimeout.public_message)


@pytest.fixture
def beats(monkeypatch) -> list[tuple[bool, bool]]:
    """(renewed, still held) of every running attempt at every heartbeat of the
    process's fence, in order."""
    real_heartbeat = liveness.heartbeat
    seen: list[tuple[bool, bool]] = []

    def heartbeat(runs, *, renewing=()):
        held = real_heartbeat(runs, renewing=renewing)
        seen.extend((run in renewing, run in held) for run in runs)
        return held

    monkeypatch.setattr(liveness, "heartbeat", heartbeat)
    return seen


@pytest.mark.stress
def test_without_progress_the_lease_runs_out_however_long_the_process_lives(
    fake_openai, alice, make_roadmap, settings, one_round, beats, monkeypatch
):
    """The heartbeat keeps beating, but a call that sends nothing is not renewed:
    the sweep fails it one lease later, long before its 30 s stall window. Warmed
    up first: in a cold process the first call's imports hold the event loop past
    the 0.8 s lease, and the sweep would fail the pair before any beat."""
    fake_openai.script(ok(VALID_TUTORIAL))
    generate(make_roadmap(alice))
    assert engine.wait_until_idle(timeout=10)
    beats.clear()
    settings.GENERATION_STALL_SECONDS = 30
    settings.GENERATION_LEASE_SECONDS = 0.8  # a beat every 0.2 s
    # A fresh fence: the warm-up's thread may be in a sleep of the longer interval.
    monkeypatch.setattr(liveness, "fence", liveness.Fence())
    reset_provider()  # the stall window is the client's read timeout
    fake_openai.script(ok(LONG_TUTORIAL, hang_after_chunks=2))
    roadmap = make_roadmap(alice)

    task_id = generate(roadmap)
    content = wait_until(lambda: (c := content_of(roadmap)).status == "failed" and c, timeout=5)

    assert content.public_error == str(WorkerLost.public_message)
    assert failure(task_id)["retryable"] is True
    assert engine.wait_until_idle(timeout=5)  # the fenced attempt stopped
    # The lease ran out although the heartbeat found the attempt alive beat after
    # beat once the bytes stopped: a beat without progress renews nothing.
    last_progress = max((i for i, (progressed, _) in enumerate(beats) if progressed), default=-1)
    idle_while_held = [held for progressed, held in beats[last_progress + 1 :] if held]
    assert len(idle_while_held) >= 2, beats


@pytest.mark.stress
def test_progress_renews_the_lease_past_its_length(fake_openai, alice, make_roadmap, settings):
    """The converse: a slow stream that keeps sending outlives many leases."""
    settings.GENERATION_LEASE_SECONDS = 0.4
    fake_openai.script(ok(LONG_TUTORIAL, chunk_delay=0.01))  # ~250 chunks, ~2.5 s
    roadmap = make_roadmap(alice)

    generate(roadmap)
    assert engine.wait_until_idle(timeout=15)

    assert content_of(roadmap).status == "completed"


@pytest.mark.stress
def test_the_running_attempts_of_a_process_cost_one_query_a_round(
    fake_openai, alice, make_roadmap, settings, monkeypatch
):
    """The process's fence beats for all its running attempts together: a round is
    one query (two when it renews leases), however many attempts run, not one
    query per attempt every FENCE_CHECK_SECONDS."""
    real_heartbeat = liveness.heartbeat
    rounds: list[tuple[int, int, int]] = []  # (attempts, renewed, queries)

    def heartbeat(runs, *, renewing=()):
        with CaptureQueriesContext(connection) as queries:  # the fence thread's
            held = real_heartbeat(runs, renewing=renewing)
        rounds.append((len(runs), len(renewing), len(queries)))
        return held

    monkeypatch.setattr(liveness, "heartbeat", heartbeat)
    settings.GENERATION_LEASE_SECONDS = 4.0  # a round every 0.5 s, a beat every 1 s
    fake_openai.default = ok(LONG_TUTORIAL, chunk_delay=0.01)  # ~2.5 s each
    roadmap = make_roadmap(alice, concepts=4)
    contents = [content_of_concept(roadmap, f"c00{i}") for i in range(1, 5)]

    start_generation(roadmap=roadmap, user=alice, kind="batch", contents=contents)
    assert engine.wait_until_idle(timeout=20)

    assert [content_of_concept(roadmap, c.concept.concept_id).status for c in contents] == [
        "completed"
    ] * 4
    together = [r for r in rounds if r[0] == 4]
    assert len(together) >= 3, rounds  # all four were checked in one call, round after round
    assert any(renewed for _, renewed, _ in together), rounds  # and renewed after progress
    assert all(queries == 1 + (renewed > 0) for _, renewed, queries in rounds), rounds


def content_of_concept(roadmap, concept_id: str) -> ConceptContent:
    return ConceptContent.objects.select_related("concept", "roadmap").get(
        roadmap=roadmap, concept__concept_id=concept_id, content_type="tutorial"
    )


def test_an_attempt_past_its_deadline_fails_as_too_long(fake_openai, alice, make_roadmap, settings):
    settings.GENERATION_DEADLINE_SECONDS = 0.5
    fake_openai.script(ok(LONG_TUTORIAL, chunk_delay=0.02))  # progress, but ~5 s of it
    roadmap = make_roadmap(alice)

    task_id = generate(roadmap)
    assert engine.wait_until_idle(timeout=5)

    assert content_of(roadmap).status == "failed"
    assert failure(task_id)["error"] == str(TookTooLong.public_message)


@pytest.mark.parametrize("content_type", ["tutorial", "quiz"])
def test_an_answer_cut_off_at_the_length_limit_is_never_completed(
    fake_openai, alice, make_roadmap, settings, content_type
):
    fake_openai.script(*[ok(finish_reason="length")] * settings.GENERATION_OUTPUT_ATTEMPTS)
    roadmap = make_roadmap(alice)

    task_id = generate(roadmap, content_type)
    assert engine.wait_until_idle(timeout=5)

    content = content_of(roadmap, content_type)
    assert content.status == "failed" and content.version == 0
    assert failure(task_id)["error"] == str(OutputTruncated.public_message)
    assert len(fake_openai.requests) == settings.GENERATION_OUTPUT_ATTEMPTS  # re-asked


def test_a_truncated_answer_is_reasked(fake_openai, alice, make_roadmap):
    fake_openai.script(ok(VALID_TUTORIAL, finish_reason="length"), ok(VALID_TUTORIAL))
    roadmap = make_roadmap(alice)

    generate(roadmap)
    assert engine.wait_until_idle(timeout=5)

    assert content_of(roadmap).status == "completed"
    assert "cut off" in fake_openai.requests[1].body["messages"][-1]["content"]
