"""Events another process commits reach a socket of this one by the periodic
store read: the in-memory layer does not cross processes (a `manage.py shell`)."""

import asyncio
import subprocess

import pytest
from asgiref.sync import sync_to_async

from roadmaps.models import ConceptContent
from tests.support.processes import manage, process_env
from tests.support.sockets import connect, read_events

pytestmark = pytest.mark.django_db(transaction=True)


async def test_events_of_another_process_arrive_by_store_catch_up(alice, make_roadmap):
    """The in-memory layer does not cross processes: the periodic store read delivers."""
    roadmap = await sync_to_async(make_roadmap)(alice)
    content = await ConceptContent.objects.filter(roadmap=roadmap).afirst()
    communicator, _ = await connect(f"/api/v1/ws/roadmaps/{roadmap.pk}", user=alice)
    script = (
        "from generation import services; from roadmaps.models import ConceptContent as C;"
        f"services.reset_status(content=C.objects.get(pk={content.pk}), status='failed')"
    )
    other = await asyncio.to_thread(
        manage, "shell", "-c", script, env=process_env(), stderr=subprocess.DEVNULL
    )
    assert await asyncio.to_thread(other.wait, 60) == 0

    [event] = await read_events(communicator, 1, within=5)
    await communicator.disconnect()
    assert event["type"] == "status_changed" and event["status"] == "failed"
