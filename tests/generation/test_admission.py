"""Admission control: GENERATION_MAX_ACTIVE_PER_USER bounds the pairs
one user has queued or generating. A start past it answers 429, says how many are
active and the limit, and changes nothing; other users are unaffected, and two
starts at once cannot both pass it."""

import asyncio
import threading
import time

import pytest
from asgiref.sync import sync_to_async
from django.db import connection

from generation import ledger
from generation.models import GenerationTask
from roadmaps.models import ConceptContent, Roadmap
from tests.conftest import auth, framework_with
from tests.support.locks import another_connection_waits_for_a_lock

pytestmark = pytest.mark.django_db(transaction=True)


@sync_to_async
def snapshot(user) -> tuple:
    contents = ConceptContent.objects.filter(roadmap__owner=user)
    return (
        sorted(contents.values_list("pk", "status", "attempt_id")),
        GenerationTask.objects.filter(owner=user).count(),
        Roadmap.objects.filter(owner=user).count(),
    )


@pytest.fixture
def cap_of_six(settings, no_runner):
    """Work is queued but never runs, so it stays active until cancelled."""
    settings.GENERATION_MAX_ACTIVE_PER_USER = 6


async def generate(api, user, roadmap):
    return await api.post(f"/api/v1/roadmaps/{roadmap.pk}/generate", headers=auth(user))


async def test_a_start_past_the_cap_is_refused_until_a_cancel_frees_room(
    api, alice, bob, make_roadmap, cap_of_six
):
    first, second = [await sync_to_async(make_roadmap)(alice, concepts=n) for n in (1, 2)]
    bobs = await sync_to_async(make_roadmap)(bob, concepts=2)
    started = await generate(api, alice, first)
    assert started.status_code == 202, started.text  # 3 active
    before = await snapshot(alice)

    refused = await generate(api, alice, second)  # 3 + 6 > 6

    assert refused.status_code == 429
    assert refused.json() == {
        "detail": "You have 3 contents queued or generating and this would start 6 more; "
        "the limit is 6. Wait for some to finish or cancel a task, then try again.",
        "code": "active_limit",
    }
    assert await snapshot(alice) == before
    # Another user is unaffected.
    assert (await generate(api, bob, bobs)).status_code == 202
    # A single retry counts too.
    retry = await api.post(
        f"/api/v1/roadmaps/{second.pk}/concepts/c001/quiz/retry", headers=auth(alice)
    )
    assert retry.status_code == 202  # 3 + 1 <= 6
    task_id = started.json()["data"]["task_id"]
    cancelled = await api.post(f"/api/v1/tasks/{task_id}/cancel", headers=auth(alice))
    assert cancelled.status_code == 202

    accepted = await generate(api, alice, second)  # 1 + 5 pending pairs <= 6

    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["data"]["total"] == 5


async def test_creating_a_roadmap_with_generate_past_the_cap_creates_nothing(
    api, alice, make_roadmap, cap_of_six
):
    started = await generate(api, alice, await sync_to_async(make_roadmap)(alice, concepts=1))
    assert started.status_code == 202
    before = await snapshot(alice)

    response = await api.post(
        "/api/v1/roadmaps",
        json={"title": "Too much", "framework": framework_with(2), "generate": True},
        headers=auth(alice),
    )

    assert response.status_code == 429
    assert "the limit is 6" in response.json()["detail"]
    assert await snapshot(alice) == before


async def test_creating_a_roadmap_with_generate_is_throttled_like_any_start(
    api, alice, settings, no_runner
):
    settings.RETRY_THROTTLE_RATE = "1/minute"
    body = {"title": "T", "framework": framework_with(1)}

    codes = [
        (
            await api.post("/api/v1/roadmaps", json=body | {"generate": g}, headers=auth(alice))
        ).status_code
        for g in (True, False, True)
    ]

    assert codes == [201, 201, 429]  # creating without generate starts nothing
    assert await sync_to_async(Roadmap.objects.filter(owner=alice).count)() == 2


@pytest.fixture
def starts_meet_after_reading(monkeypatch):
    """Forces the race of two starts: each, having read the user's active count in
    its transaction, waits until the other has read it too, or is blocked on a lock
    the first holds. With the user's row locked at admission the second blocks, so
    the first goes on, commits, and the second then reads its pairs; without that
    lock both read 0 and both pass. On SQLite the second start cannot even begin its
    transaction while the first is open (BEGIN IMMEDIATE), so there is nothing to
    wait for there."""
    real = ledger.active_items_of
    met = threading.Condition()
    readers = 0

    def active_items_of(user) -> int:
        nonlocal readers
        active = real(user)
        with met:
            readers += 1
            met.notify_all()
        if connection.vendor != "postgresql":
            return active
        deadline = time.monotonic() + 10
        with met:
            while readers < 2 and not another_connection_waits_for_a_lock():
                assert time.monotonic() < deadline, "the other start never read nor waited"
                met.wait(0.02)
        return active

    monkeypatch.setattr(ledger, "active_items_of", active_items_of)


async def test_two_starts_at_once_on_two_roadmaps_cannot_both_pass_the_cap(
    api, alice, make_roadmap, cap_of_six, starts_meet_after_reading
):
    """Each roadmap locks only its own row: the cap holds because admission locks
    the user's. Two requests at once, on two request threads."""
    first, second = [await sync_to_async(make_roadmap)(alice, concepts=2) for _ in range(2)]

    responses = await asyncio.gather(generate(api, alice, first), generate(api, alice, second))

    assert sorted(r.status_code for r in responses) == [202, 429], [r.text for r in responses]
    [refused] = [r for r in responses if r.status_code == 429]
    assert refused.json()["detail"].startswith("You have 6 contents queued or generating")
    tasks = GenerationTask.objects.filter(owner=alice)
    assert [t.total async for t in tasks] == [6]
