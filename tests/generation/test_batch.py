"""Batch retry, whole-roadmap generation and cancel (DESIGN §4)."""

import logging
import threading
import time

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings

from generation import engine, liveness, runner, services
from generation.models import GenerationTask
from notifications.models import Event
from roadmaps.models import Roadmap
from roadmaps.services import delete_roadmap
from tests.conftest import auth
from tests.support.fake_openai import ok
from tests.support.retries import (
    batch_url,
    events_of,
    fail_contents,
    statuses,
    task_finished,
    wait_for,
)

pytestmark = pytest.mark.django_db(transaction=True)


async def test_batch_of_30_failed_pairs_reports_each_and_the_total(
    api, alice, make_roadmap, settings
):
    settings.OFFLINE_PROVIDER_DELAY_SECONDS = 0.05
    roadmap = await sync_to_async(make_roadmap)(alice, concepts=12)
    await fail_contents(roadmap, 30)

    response = await api.post(batch_url(roadmap), json={}, headers=auth(alice))

    assert response.status_code == 202, response.text
    data = response.json()["data"]
    assert data["task_id"].startswith("batch-retry-") and len(data["task_id"]) == 12 + 32
    assert data["total"] == 30 and data["skipped"] == []
    task = await wait_for(lambda: task_finished(data["task_id"]), within=60)
    assert (task.status, task.completed, task.failed) == ("completed", 30, 0)
    events = await events_of(data["task_id"])
    starts = [e for e in events if e["type"] == "concept_start"]
    assert sorted(e["progress"]["current"] for e in starts) == list(range(1, 31))
    assert all(e["progress"]["total"] == 30 for e in starts)
    assert all(
        e["progress"]["percentage"] == round(e["progress"]["current"] / 30 * 100, 1) for e in starts
    )
    assert len([e for e in events if e["type"] == "concept_complete"]) == 30
    assert [e["seq"] for e in events] == list(range(1, 62))
    assert events[-1]["type"] == "task_complete"
    assert events[-1]["summary"] == {"total": 30, "completed": 30, "failed": 0}
    remaining = await statuses(roadmap)
    assert list(remaining.values()).count("completed") == 30


async def test_batch_skips_and_lists_pairs_already_generating(api, alice, make_roadmap, settings):
    settings.OFFLINE_PROVIDER_DELAY_SECONDS = 2.0
    roadmap = await sync_to_async(make_roadmap)(alice, concepts=3)
    busy = await api.post(
        f"/api/v1/roadmaps/{roadmap.pk}/concepts/c001/tutorial/retry", headers=auth(alice)
    )
    assert busy.status_code == 202

    response = await api.post(
        batch_url(roadmap),
        json={"statuses": ["pending", "generating"], "content_types": ["tutorial"]},
        headers=auth(alice),
    )

    data = response.json()["data"]
    assert response.status_code == 202
    assert data["total"] == 2
    assert data["skipped"] == [
        {"concept_id": "c001", "content_type": "tutorial", "reason": "already generating"}
    ]
    for task_id in (data["task_id"], busy.json()["data"]["task_id"]):
        await api.post(f"/api/v1/tasks/{task_id}/cancel", headers=auth(alice))


async def test_empty_selection_answers_200_without_a_task(api, alice, make_roadmap):
    roadmap = await sync_to_async(make_roadmap)(alice, concepts=2)

    response = await api.post(batch_url(roadmap), json={}, headers=auth(alice))

    assert response.status_code == 200
    assert response.json()["data"] == {"task_id": None, "total": 0, "skipped": []}
    assert not await GenerationTask.objects.aexists()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"content_types": ["video"]}, "content_types"),
        ({"statuses": ["done"]}, "statuses"),
        ({"concept_ids": ["bad id!"]}, "concept_ids"),
        ({"concept_ids": "c001"}, "concept_ids"),
        ({"preferences": {"mood": "x"}}, "mood"),
    ],
)
async def test_bad_batch_input_answers_400_and_changes_nothing(
    api, alice, make_roadmap, body, field
):
    roadmap = await sync_to_async(make_roadmap)(alice, concepts=2)
    await fail_contents(roadmap, 2)

    response = await api.post(batch_url(roadmap), json=body, headers=auth(alice))

    assert response.status_code == 400
    assert field in response.text
    assert list((await statuses(roadmap)).values()).count("failed") == 2
    assert not await GenerationTask.objects.aexists()


async def test_selection_above_the_cap_answers_400_asking_to_narrow_it(
    api, alice, make_roadmap, settings
):
    settings.BATCH_MAX_PAIRS = 5
    roadmap = await sync_to_async(make_roadmap)(alice, concepts=2)

    response = await api.post(
        batch_url(roadmap), json={"statuses": ["pending"]}, headers=auth(alice)
    )

    assert response.status_code == 400
    assert "narrow" in response.text and "6" in response.text
    assert set((await statuses(roadmap)).values()) == {"pending"}


async def test_generate_starts_every_pending_pair(api, alice, make_roadmap):
    roadmap = await sync_to_async(make_roadmap)(alice, concepts=3)
    await fail_contents(roadmap, 1)

    response = await api.post(f"/api/v1/roadmaps/{roadmap.pk}/generate", headers=auth(alice))

    data = response.json()["data"]
    assert response.status_code == 202
    assert data["task_id"].startswith("generate-") and data["total"] == 8
    task = await wait_for(lambda: task_finished(data["task_id"]), within=30)
    assert task.status == "completed"
    final = await statuses(roadmap)
    assert list(final.values()).count("completed") == 8
    assert list(final.values()).count("failed") == 1


async def test_a_process_stores_one_result_at_a_time(
    api, alice, make_roadmap, settings, monkeypatch
):
    """Results are stored one at a time on the engine's loop (engine.write_slot):
    threads storing at once take the GIL from the loop that streams live text."""
    settings.GENERATION_CONCURRENCY = 6
    storing, most, counting = 0, 0, threading.Lock()
    store = runner.complete_item

    def counted(*args, **kwargs):
        nonlocal storing, most
        with counting:
            storing += 1
            most = max(most, storing)
        try:
            time.sleep(0.05)  # long enough for the stores of six slots to overlap
            return store(*args, **kwargs)
        finally:
            with counting:
                storing -= 1

    monkeypatch.setattr(runner, "complete_item", counted)
    roadmap = await sync_to_async(make_roadmap)(alice, concepts=4)

    response = await api.post(f"/api/v1/roadmaps/{roadmap.pk}/generate", headers=auth(alice))

    assert response.status_code == 202, response.text
    task = await wait_for(lambda: task_finished(response.json()["data"]["task_id"]), within=30)
    assert (task.status, task.completed) == ("completed", 12)
    assert most == 1


@pytest.mark.stress
async def test_cancel_restores_unstarted_and_fails_in_flight_pairs(
    api, alice, make_roadmap, settings
):
    settings.GENERATION_CONCURRENCY = 2
    # Long enough that the item seen running is still running when the cancel lands
    # (at 0.6 s it had finished in between once under CI's load).
    settings.OFFLINE_PROVIDER_DELAY_SECONDS = 1.2
    roadmap = await sync_to_async(make_roadmap)(alice, concepts=20)
    await fail_contents(roadmap, 10, content_types=("tutorial",))
    response = await api.post(
        batch_url(roadmap),
        json={"content_types": ["tutorial"], "statuses": ["failed", "pending"]},
        headers=auth(alice),
    )
    task_id = response.json()["data"]["task_id"]

    async def a_few_completed_and_one_just_started():
        """The slots run in step: just as the third completes, the fourth may be a
        moment from completing too, and both slots between two items when the
        cancel lands. The newest event a start: that item runs for 1.2 s more."""
        task = await GenerationTask.objects.aget(pk=task_id)
        newest = await Event.objects.filter(stream=task_id).order_by("-seq").afirst()
        return task.completed >= 3 and newest is not None and newest.type == "concept_start"

    await wait_for(a_few_completed_and_one_just_started, within=30)
    cancel = await api.post(f"/api/v1/tasks/{task_id}/cancel", headers=auth(alice))

    assert cancel.status_code == 202
    task = await GenerationTask.objects.aget(pk=task_id)
    assert task.status == "cancelled"
    final = await statuses(roadmap)
    assert "generating" not in final.values()
    events = await events_of(task_id)
    started = {e["concept_id"] for e in events if e["type"] == "concept_start"}
    completed = {e["concept_id"] for e in events if e["type"] == "concept_complete"}
    cancelled_in_flight = {
        e["concept_id"]
        for e in events
        if e["type"] == "concept_failed" and e["error"] == "Cancelled" and not e["retryable"]
    }
    in_flight = started - completed
    assert in_flight and in_flight == cancelled_in_flight
    async for item in task.items.select_related("content__concept"):
        concept_id = item.content.concept.concept_id
        if concept_id in completed:
            assert final[(concept_id, "tutorial")] == "completed"
        elif concept_id in in_flight:
            assert final[(concept_id, "tutorial")] == "failed"
            assert item.content.public_error == "Cancelled"
        else:  # never started: back to where it was
            assert final[(concept_id, "tutorial")] == item.previous_status
    unstarted = task.total - len(started)
    assert unstarted > 0
    assert events[-1]["type"] == "task_complete" and events[-1]["status"] == "cancelled"
    assert events[-1]["summary"]["cancelled"] == unstarted + len(in_flight)

    again = await api.post(f"/api/v1/tasks/{task_id}/cancel", headers=auth(alice))
    assert again.status_code == 409


async def test_cancel_of_someone_elses_task_answers_404(api, alice, bob, make_roadmap, settings):
    settings.OFFLINE_PROVIDER_DELAY_SECONDS = 2.0
    roadmap = await sync_to_async(make_roadmap)(alice, concepts=1)
    started = await api.post(
        f"/api/v1/roadmaps/{roadmap.pk}/concepts/c001/quiz/retry", headers=auth(alice)
    )
    task_id = started.json()["data"]["task_id"]

    assert (await api.post(f"/api/v1/tasks/{task_id}/cancel", headers=auth(bob))).status_code == 404
    assert (await api.get(f"/api/v1/tasks/{task_id}", headers=auth(bob))).status_code == 404
    assert (await GenerationTask.objects.aget(pk=task_id)).status == "running"
    await api.post(f"/api/v1/tasks/{task_id}/cancel", headers=auth(alice))


# --- Cancel stops the provider; a deleted roadmap ends its work quietly ------------


async def streaming(fake_openai) -> bool:
    return fake_openai.in_flight > 0


async def engine_idle() -> bool:
    return await sync_to_async(engine.wait_until_idle, thread_sensitive=False)(timeout=10)


def errors_logged(caplog) -> list[str]:
    return [f"{r.name}: {r.getMessage()}" for r in caplog.records if r.levelno >= logging.ERROR]


async def test_cancel_closes_the_provider_connection_within_a_second_then_delete_is_quiet(
    api, alice, make_roadmap, fake_openai, caplog
):
    """DESIGN §4, §5: the pair in flight is cancelled and its provider request
    stops within 1 s (the fake server sees the connection closed); the roadmap
    deleted right after ends nothing with an error."""
    caplog.set_level(logging.INFO)
    fake_openai.default = ok(chunk_delay=0.5)  # a tutorial streamed over about 8 s
    roadmap = await sync_to_async(make_roadmap)(alice, concepts=1)
    started = await api.post(
        f"/api/v1/roadmaps/{roadmap.pk}/concepts/c001/tutorial/retry", headers=auth(alice)
    )
    task_id = started.json()["data"]["task_id"]
    await wait_for(lambda: streaming(fake_openai))

    cancel = await api.post(f"/api/v1/tasks/{task_id}/cancel", headers=auth(alice))
    cancelled_at = time.monotonic()
    deleted = await api.delete(f"/api/v1/roadmaps/{roadmap.pk}/", headers=auth(alice))

    assert cancel.status_code == 202 and deleted.status_code == 204
    await wait_for(lambda: closed_by_client(fake_openai), within=5)
    stopped_after = fake_openai.closed_by_client[0] - cancelled_at
    assert stopped_after < 1.0, f"the provider request ran {stopped_after:.2f} s past the cancel"
    assert await engine_idle()
    assert not await Roadmap.objects.filter(pk=roadmap.pk).aexists()
    assert len(fake_openai.requests) == 1  # nothing asked again after the cancel
    assert errors_logged(caplog) == []


async def closed_by_client(fake_openai) -> bool:
    return bool(fake_openai.closed_by_client)


async def test_an_answer_arriving_after_cancel_and_delete_ends_its_work_quietly(
    api, alice, make_roadmap, fake_openai, caplog, monkeypatch
):
    """The task is cancelled and its roadmap deleted (task, items, pairs) just
    before the provider's last chunk, too late for the cancel to stop it: nothing
    to store and nothing to fail, an INFO line, no error, no file left."""
    caplog.set_level(logging.INFO)
    # Too late, always: a fence round between the delete and the last chunk would
    # stop the stream first (a quiet end too, but not this one). A fresh fence: the
    # running one's thread may be in an earlier test's short sleep.
    monkeypatch.setattr(liveness, "FENCE_CHECK_SECONDS", 60.0)
    monkeypatch.setattr(liveness, "fence", liveness.Fence())
    roadmap = await sync_to_async(make_roadmap)(alice, concepts=1)

    def cancel_and_delete() -> None:  # in the fake server's thread
        task = GenerationTask.objects.get(roadmap=roadmap)
        services.cancel_task(task_id=task.pk, user=alice)
        delete_roadmap(roadmap=Roadmap.objects.get(pk=roadmap.pk))

    fake_openai.script(ok(before_finish=cancel_and_delete))

    started = await api.post(
        f"/api/v1/roadmaps/{roadmap.pk}/concepts/c001/tutorial/retry", headers=auth(alice)
    )

    assert started.status_code == 202
    await wait_for(lambda: closed_or_done(fake_openai))
    assert await engine_idle()
    assert not await Roadmap.objects.filter(pk=roadmap.pk).aexists()
    assert errors_logged(caplog) == []
    assert any("deleted under its work" in r.getMessage() for r in caplog.records)
    assert not list(settings.MEDIA_ROOT.rglob("*.md"))


async def closed_or_done(fake_openai) -> bool:
    return len(fake_openai.requests) == 1 and fake_openai.in_flight == 0
