"""I6: with the channel layer (Redis) unreachable, generations still complete, the
database stays right, events stay replayable and the API keeps answering."""

import asyncio
import time

import pytest
from asgiref.sync import sync_to_async

from generation.models import GenerationTask
from notifications.models import Event
from notifications.services import PUBLISH_TIMEOUT_SECONDS
from roadmaps.models import ConceptContent
from tests.conftest import auth
from tests.test_websocket import connect, read_until_close, retry_url

pytestmark = pytest.mark.django_db(transaction=True)

UNREACHABLE_REDIS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
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
