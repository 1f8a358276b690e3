"""I6: with the channel layer (Redis) unreachable, generations still complete, the
database stays right, events stay replayable and the API keeps answering."""

import asyncio
import time

import pytest
from asgiref.sync import sync_to_async

from generation import services
from generation.models import GenerationTask
from notifications import hub as hubs
from notifications.models import Event
from notifications.services import PUBLISH_TIMEOUT_SECONDS
from roadmaps.models import ConceptContent
from tests.conftest import auth
from tests.support.layers import RedisSwitch, live_again, store_checks
from tests.support.retries import retry_url
from tests.support.sockets import (
    connect,
    finished_task,
    read_events,
    read_until_close,
    replay_of_finished_retry,
)

pytestmark = pytest.mark.django_db(transaction=True)

UNREACHABLE_REDIS = {
    "default": {
        "BACKEND": "roadmap_project.patches.channels_redis.RedisPubSubChannelLayer",
        "CONFIG": {"hosts": ["redis://127.0.0.1:1/0"]},
    }
}


async def test_retry_completes_and_replays_with_the_layer_down(api, alice, make_roadmap, settings):
    in_memory = settings.CHANNEL_LAYERS
    settings.CHANNEL_LAYERS = UNREACHABLE_REDIS
    roadmap = await sync_to_async(make_roadmap)(alice)

    health = await api.get("/api/v1/health")
    assert health.status_code == 200
    assert health.json() == {"status": "ok", "database": "ok", "channel_layer": "unavailable"}

    began = time.monotonic()
    response = await api.post(retry_url(roadmap), headers=auth(alice))
    assert response.status_code == 202, response.text
    task_id = response.json()["data"]["task_id"]
    async with asyncio.timeout(20):
        while not (task := await GenerationTask.objects.aget(pk=task_id)).finished_at:
            await asyncio.sleep(0.05)
    # Each publish gives up within its timeout: start and complete, a few seconds at most.
    assert time.monotonic() - began < 2 * PUBLISH_TIMEOUT_SECONDS + 5

    content = await ConceptContent.objects.aget(
        roadmap=roadmap, concept__concept_id="c001", content_type="tutorial"
    )
    assert task.status == "completed"
    assert (content.status, content.version, content.attempt_id) == ("completed", 1, None)
    stored = [e.type async for e in Event.objects.filter(stream=task_id).order_by("seq")]
    assert stored == ["concept_start", "concept_complete"]

    # The layer comes back: a subscriber gets everything from the store, then the end.
    settings.CHANNEL_LAYERS = in_memory
    communicator, _ = await connect(f"/api/v1/ws/{task_id}", user=alice)
    events, code = await read_until_close(communicator)
    assert [e["type"] for e in events] == stored and code == 1000


async def test_a_client_connecting_while_the_layer_is_down_is_served_from_the_store(
    alice, make_roadmap, settings, caplog
):
    """The hub's layer subscription fails: no connection ends for it, none waits
    for it once the hub knows, and new events come by the store catch-up."""
    settings.NOTIFICATIONS_CATCH_UP_SECONDS = 0.25
    roadmap = await sync_to_async(make_roadmap)(alice)
    task_id = await finished_task(roadmap, alice)
    settings.CHANNEL_LAYERS = UNREACHABLE_REDIS  # the layer manager drops its cached layers

    await replay_of_finished_retry(task_id, alice)

    communicator, accepted = await connect(f"/api/v1/ws/roadmaps/{roadmap.pk}", user=alice)
    replay = await read_events(communicator, 2)
    content = await ConceptContent.objects.aget(
        roadmap=roadmap, concept__concept_id="c001", content_type="tutorial"
    )
    assert await asyncio.to_thread(services.reset_status, content=content, status="pending")
    committed = time.monotonic()
    [changed] = await read_events(communicator, 1, within=10)
    waited = time.monotonic() - committed
    await store_checks(hubs.hub(), 2)  # two more rounds of joins that fail
    assert await communicator.receive_nothing(timeout=0.2)
    await communicator.disconnect()

    assert accepted and [e["type"] for e in replay] == ["concept_start", "concept_complete"]
    assert changed["type"] == "status_changed" and changed["status"] == "pending"
    assert changed["id"] > replay[-1]["id"]
    assert waited < settings.NOTIFICATIONS_CATCH_UP_SECONDS + 1.0
    # One warning per failing operation and streak, not one per retry or per
    # connection: two connections and several rounds of joins failed here.
    failures = [r.getMessage() for r in caplog.records if r.name == "notifications.hub"]
    operations = [message.split()[2] for message in failures]
    assert "group_add" in operations and len(operations) == len(set(operations)), failures


@pytest.mark.stress
async def test_live_delivery_resumes_when_the_layer_comes_back(
    alice, make_roadmap, settings, redis_url
):
    """Connected while Redis is down, the consumer retries the group join and the
    layer receive; once Redis is back, events arrive live again."""
    settings.NOTIFICATIONS_CATCH_UP_SECONDS = 0.5
    roadmap = await sync_to_async(make_roadmap)(alice)
    content = await ConceptContent.objects.filter(roadmap=roadmap).afirst()
    async with RedisSwitch(redis_url) as redis:
        settings.CHANNEL_LAYERS = {
            "default": {
                "BACKEND": "roadmap_project.patches.channels_redis.RedisPubSubChannelLayer",
                "CONFIG": {"hosts": [redis.url]},
            }
        }
        communicator, accepted = await connect(f"/api/v1/ws/roadmaps/{roadmap.pk}", user=alice)
        checks = hubs.hub()
        await store_checks(checks, 2)  # the join fails, and fails again at each check
        assert "group_add" in checks.failing
        redis.up = True
        await live_again([communicator], f"roadmap-{roadmap.pk}")  # joined, receiving
        # After the check under way, the store is read once a minute: what arrives
        # from here on came live.
        settings.NOTIFICATIONS_CATCH_UP_SECONDS = 60
        await store_checks(checks, 1)
        assert await asyncio.to_thread(services.reset_status, content=content, status="failed")
        [changed] = await read_events(communicator, 1, within=3)
        await communicator.disconnect()

    assert accepted
    assert changed["type"] == "status_changed" and changed["status"] == "failed"
