"""Fair scheduling (docs/decisions/0006-fair-scheduling.md): provider
slots go round-robin across users, so one user's backlog never starves another
user's single retry. Asserted on the stored order of `concept_start` events, not
on timings."""

import pytest
from asgiref.sync import sync_to_async

from generation.models import GenerationTask
from notifications.models import Event
from tests.conftest import auth
from tests.support.retries import task_finished, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


@sync_to_async
def last_event_id() -> int:
    return Event.objects.order_by("-id").values_list("id", flat=True).first() or 0


@sync_to_async
def starts_between(stream: str, after: int, before: int) -> int:
    """`concept_start` events of one stream stored between two event ids."""
    return Event.objects.filter(
        stream=stream, type="concept_start", id__gt=after, id__lt=before
    ).count()


@sync_to_async
def first_start(stream: str) -> int | None:
    start = Event.objects.filter(stream=stream, type="concept_start").first()
    return start.pk if start else None


async def test_a_single_retry_runs_next_while_another_users_backlog_waits(
    api, alice, bob, make_roadmap, settings
):
    settings.GENERATION_CONCURRENCY = 4
    settings.OFFLINE_PROVIDER_DELAY_SECONDS = 0.3
    backlog_roadmap = await sync_to_async(make_roadmap)(alice, concepts=20)
    bobs_roadmap = await sync_to_async(make_roadmap)(bob, concepts=1)

    response = await api.post(
        f"/api/v1/roadmaps/{backlog_roadmap.pk}/generate", headers=auth(alice)
    )
    assert response.status_code == 202, response.text
    backlog_id = response.json()["data"]["task_id"]  # 60 pairs, 15 rounds of 4 slots
    await wait_for(lambda: first_start(backlog_id))

    response = await api.post(
        f"/api/v1/roadmaps/{bobs_roadmap.pk}/concepts/c001/quiz/retry", headers=auth(bob)
    )
    assert response.status_code == 202, response.text
    accepted_after = await last_event_id()
    retry_id = response.json()["data"]["task_id"]
    retry = await wait_for(lambda: task_finished(retry_id), within=30)

    assert (retry.status, retry.completed) == ("completed", 1)
    bobs_start = await first_start(retry_id)
    # The next free slot took Bob's pair: at most the claims already in flight when
    # his start committed (one per slot) went to Alice first. First come, first
    # served, it was about 56.
    assert await starts_between(backlog_id, accepted_after, bobs_start) <= 4
    backlog = await GenerationTask.objects.aget(pk=backlog_id)
    assert backlog.status == "running" and backlog.completed < 60


@pytest.mark.stress
async def test_work_waiting_for_a_slot_outlives_the_lease(api, alice, make_roadmap, settings):
    """Queued items are alive while this process holds their units of work, even
    when the wait for a slot is several leases long (I3 without false positives)."""
    settings.GENERATION_CONCURRENCY = 1
    settings.GENERATION_LEASE_SECONDS = 0.6
    settings.OFFLINE_PROVIDER_DELAY_SECONDS = 0.2
    roadmap = await sync_to_async(make_roadmap)(alice, concepts=4)

    response = await api.post(f"/api/v1/roadmaps/{roadmap.pk}/generate", headers=auth(alice))
    assert response.status_code == 202, response.text
    # 12 pairs one at a time: the last waits about 2.4 s, four leases.
    task = await wait_for(lambda: task_finished(response.json()["data"]["task_id"]), within=30)

    assert (task.status, task.completed, task.failed) == ("completed", 12, 0)


@sync_to_async
def start_owners(after: int) -> list[str]:
    """Whose `concept_start` events came after an event id, in stored order. The
    streams are read once: the backlog is still running, and a second read could
    see a start that the owners' lookup did not."""
    starts = Event.objects.filter(type="concept_start", id__gt=after).order_by("id")
    streams = list(starts.values_list("stream", flat=True))
    owners = GenerationTask.objects.filter(pk__in=set(streams))
    owner_of = dict(owners.values_list("pk", "owner__username"))
    return [owner_of[stream] for stream in streams]


async def test_slots_go_round_robin_across_users_not_across_tasks(
    api, alice, bob, make_roadmap, settings
):
    """Alice has three tasks, Bob one: the two slots go one to each user, not one
    to each task. Taken per task, Alice's three tasks (all older than Bob's) would
    keep one of them free of running work at every turn and hold both slots until
    her whole backlog drained."""
    settings.GENERATION_CONCURRENCY = 2
    settings.OFFLINE_PROVIDER_DELAY_SECONDS = 0.1
    alices = [await sync_to_async(make_roadmap)(alice, concepts=4) for _ in range(3)]
    bobs_roadmap = await sync_to_async(make_roadmap)(bob, concepts=1)
    backlog = []
    for roadmap in alices:  # 3 tasks of 12 pairs
        response = await api.post(f"/api/v1/roadmaps/{roadmap.pk}/generate", headers=auth(alice))
        assert response.status_code == 202, response.text
        backlog.append(response.json()["data"]["task_id"])
    await wait_for(lambda: first_start(backlog[0]))

    response = await api.post(f"/api/v1/roadmaps/{bobs_roadmap.pk}/generate", headers=auth(bob))
    assert response.status_code == 202, response.text
    accepted_after = await last_event_id()
    bobs = await wait_for(lambda: task_finished(response.json()["data"]["task_id"]), within=30)

    assert (bobs.status, bobs.completed) == ("completed", 3)
    owners = await start_owners(accepted_after)
    bobs_last = len(owners) - owners[::-1].index("bob")
    # Bob's three pairs started within his share: one slot each, after at most the
    # claims in flight when his start committed (one per slot). Per task, Alice's
    # 36 pairs would all have started first.
    assert owners[:bobs_last].count("alice") <= 2 + 2 * 3, owners
    assert not all([await task_finished(task_id) for task_id in backlog])
