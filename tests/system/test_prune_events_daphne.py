"""A client resuming below what `prune_events` removed is closed 4410 with the
cursor to use, in process and through a real daphne (which must pass the close
reason on). The command itself: tests/notifications/test_prune_events.py."""

import asyncio
import json

import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from generation import engine, services
from notifications.models import Event
from roadmaps.models import ConceptContent
from tests.support.daphne_server import daphne_server
from tests.support.pruning import age, prune

pytestmark = pytest.mark.django_db(transaction=True)


async def test_resuming_below_the_pruned_mark_is_told_4410_with_the_cursor_to_use(
    alice, make_roadmap, tmp_path
):
    """Pruning leaves a mark; a client whose cursor is below it would miss
    events, so it is closed 4410 and told where the store's history now starts."""
    from asgiref.sync import sync_to_async
    from channels.testing import WebsocketCommunicator

    from roadmap_project.asgi import application

    roadmap = await sync_to_async(make_roadmap)(alice, concepts=2)
    first, second = [
        c
        async for c in ConceptContent.objects.select_related("concept", "roadmap").filter(
            roadmap=roadmap, content_type="tutorial"
        )
    ]
    topic = f"roadmap-{roadmap.pk}"

    def prune_the_first_task():
        old = services.retry_content(content=first, user=alice).task
        assert engine.wait_until_idle(30)
        services.retry_content(content=second, user=alice)
        assert engine.wait_until_idle(30)
        age(40, stream=old.pk)
        pruned = list(Event.objects.filter(stream=old.pk).values_list("id", flat=True))
        prune("--older-than", "30")
        return old, pruned

    old, pruned_ids = await asyncio.to_thread(prune_the_first_task)
    mark = max(pruned_ids)

    async def first_output(path: str) -> dict:
        client = WebsocketCommunicator(application, f"{path}&token={alice.token}")
        assert (await client.connect())[0]
        output = await client.receive_output(timeout=5)
        await client.disconnect()
        return output

    below = await first_output(f"/api/v1/ws/roadmaps/{roadmap.pk}?after={min(pruned_ids)}")
    assert below == {
        "type": "websocket.close",
        "code": 4410,
        "reason": f"pruned; resume with after={mark}",
    }
    at_the_mark = await first_output(f"/api/v1/ws/roadmaps/{roadmap.pk}?after={mark}")
    assert at_the_mark["type"] == "websocket.send"  # the second task's events
    assert json.loads(at_the_mark["text"])["id"] > mark
    stream = await first_output(f"/api/v1/ws/{old.pk}?after=1")
    assert (stream["code"], stream["reason"]) == (4410, "pruned; resume with after=2")
    assert await Event.objects.filter(topic=topic).acount() == 2

    # A real client behind daphne gets the reason too (roadmap_project/patches/daphne.py).
    with daphne_server(tmp_path) as server:
        url = f"{server.ws_url}/api/v1/ws/roadmaps/{roadmap.pk}"
        async with ws_connect(f"{url}?after={min(pruned_ids)}&token={alice.token}") as socket:
            with pytest.raises(ConnectionClosed):
                await asyncio.wait_for(socket.recv(), 10)
    assert (socket.close_code, socket.close_reason) == (4410, f"pruned; resume with after={mark}")
