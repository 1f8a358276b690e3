"""I5: an event is stored in the transaction of the state change it describes and
published only after that commits; a rolled-back change leaves neither. Checked
for an operator's reset (status_changed) and for every event of a task."""

import asyncio
import json

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.db import connection, transaction

from generation import services
from generation.models import GenerationTask
from notifications.models import Event
from notifications.services import feed_group
from roadmaps.models import ConceptContent
from tests.conftest import auth
from tests.support.fake_openai import error
from tests.support.retries import fail_contents, task_finished, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


class RolledBack(Exception):
    pass


def reset_then_roll_back(content: ConceptContent, topic: str) -> int:
    """The change and its event inside one transaction that then rolls back;
    returns how many events of the topic the transaction itself could see."""
    try:
        with transaction.atomic():
            assert services.reset_status(content=content, status="failed")
            seen_inside = Event.objects.filter(topic=topic).count()
            raise RolledBack
    except RolledBack:
        return seen_inside


async def collect(layer, channel: str, into: list) -> None:
    """One receive loop for the whole test: channels_redis' pub/sub layer drops a
    channel whose receive is cancelled, so no receive may time out."""
    while True:
        into.append(await layer.receive(channel))


async def test_events_are_stored_with_their_change_and_published_after_commit(alice, make_roadmap):
    roadmap = await sync_to_async(make_roadmap)(alice)
    content = await ConceptContent.objects.filter(roadmap=roadmap).afirst()
    topic = f"roadmap-{roadmap.pk}"
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(feed_group("topic", topic), channel)
    received: list[dict] = []
    collector = asyncio.create_task(collect(layer, channel, received))

    seen_inside = await asyncio.to_thread(reset_then_roll_back, content, topic)
    stored_after_rollback = await Event.objects.filter(topic=topic).acount()
    await content.arefresh_from_db()
    status_after_rollback = content.status

    # The same change, committed: its publish comes after anything the rolled-back
    # one published, and the channel delivers in order, so whatever arrives before
    # it was published before (or without) a commit. No window to sleep through.
    assert await asyncio.to_thread(services.reset_status, content=content, status="failed")
    [stored] = [event async for event in Event.objects.filter(topic=topic)]
    committed = stored.as_message()
    async with asyncio.timeout(5):
        while committed not in (arrived := [json.loads(m["text"]) for m in received]):
            await asyncio.sleep(0.05)
    collector.cancel()
    await layer.group_discard(feed_group("topic", topic), channel)

    assert seen_inside == 1  # stored in the change's own transaction, not on commit
    assert arrived[: arrived.index(committed)] == []  # nothing published before the commit
    assert (stored_after_rollback, status_after_rollback) == (0, "pending")
    assert arrived == [committed]


def committed(event_id: int) -> bool:
    """Whether another connection sees the event: only a committed row is visible."""
    try:
        return Event.objects.filter(pk=event_id).exists()
    finally:
        connection.close()


@pytest.fixture
def publishes(monkeypatch) -> list[tuple[str, bool]]:
    """(type, committed) of every stored event as the channel layer is handed it,
    checked from another connection meanwhile. The publisher waits for the layer,
    so an event published inside its transaction is caught before the commit:
    no window to sleep through."""
    layer = get_channel_layer()
    real_group_send = layer.group_send
    seen: list[tuple[str, bool]] = []

    async def group_send(group: str, message: dict) -> None:
        if message["kind"] == "topic" and message["cursor"] is not None:  # once per event
            visible = await asyncio.to_thread(committed, message["cursor"])
            seen.append((json.loads(message["text"])["type"], visible))
        await real_group_send(group, message)

    monkeypatch.setattr(layer, "group_send", group_send)
    return seen


async def test_every_task_event_is_published_after_its_transaction_commits(
    api, alice, make_roadmap, fake_openai, publishes
):
    """A batch of two pairs, one failing: concept_start, concept_failed,
    concept_complete and task_complete each reach the layer committed."""
    roadmap = await sync_to_async(make_roadmap)(alice, concepts=2)
    await fail_contents(roadmap, 2, content_types=("quiz",))
    publishes.clear()  # the resets' status_changed
    fake_openai.script(error(400))

    response = await api.post(
        f"/api/v1/roadmaps/{roadmap.pk}/concepts/retry-batch", json={}, headers=auth(alice)
    )
    assert response.status_code == 202, response.text
    task = await wait_for(lambda: task_finished(response.json()["data"]["task_id"]), within=30)
    stored = [e.type async for e in Event.objects.filter(stream=task.pk).order_by("seq")]

    async def all_published() -> bool:  # the last publish follows the last commit
        return len(publishes) >= len(stored)

    await wait_for(all_published)

    assert (task.status, task.completed, task.failed) == ("partial", 1, 1)
    assert {"concept_start", "concept_complete", "concept_failed", "task_complete"} <= {*stored}
    # In any order: the two pairs commit from different threads, and two publishes
    # may reach the layer in either order (a feed reads such a gap from the store).
    assert sorted(publishes) == sorted((event_type, True) for event_type in stored)


def cancel_then_roll_back(task_id: str, user) -> int:
    """A cancel whose transaction rolls back; returns how many events of the task
    the transaction itself stored."""
    try:
        with transaction.atomic():
            services.cancel_task(task_id=task_id, user=user)
            stored_inside = Event.objects.filter(stream=task_id).count()
            raise RolledBack
    except RolledBack:
        return stored_inside


async def test_a_rolled_back_cancel_publishes_nothing_and_a_committed_one_publishes_after(
    api, alice, make_roadmap, no_runner, publishes
):
    """Cancel writes its task's terminal events; rolled back, none reaches the layer."""
    roadmap = await sync_to_async(make_roadmap)(alice)
    response = await api.post(f"/api/v1/roadmaps/{roadmap.pk}/generate", headers=auth(alice))
    assert response.status_code == 202, response.text
    task_id = response.json()["data"]["task_id"]

    stored_inside = await asyncio.to_thread(cancel_then_roll_back, task_id, alice)
    assert stored_inside == 1  # task_complete, stored in the cancel's own transaction
    assert publishes == []
    assert (await GenerationTask.objects.aget(pk=task_id)).status == "running"

    await asyncio.to_thread(services.cancel_task, task_id=task_id, user=alice)
    assert [t for t, _ in publishes if t == "task_complete"] == ["task_complete"]
    assert all(visible for _, visible in publishes), publishes
