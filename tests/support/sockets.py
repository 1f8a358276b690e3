"""WebSocket clients against the ASGI application in this process (Channels'
WebsocketCommunicator), and the events and tasks they watch."""

import asyncio
import json

from asgiref.sync import sync_to_async
from channels.layers import InMemoryChannelLayer
from channels.testing import WebsocketCommunicator
from django.db import transaction
from django.test import Client

from generation import engine, services
from notifications.models import Event
from notifications.services import _next_seq
from roadmap_project.asgi import application
from roadmaps.models import ConceptContent
from tests.support.events import assert_valid_event


async def connect(path: str, *, user=None, query: str = "", headers=None):
    """Open a socket; returns (communicator, accepted)."""
    params = "&".join(part for part in (f"token={user.token}" if user else "", query) if part)
    communicator = WebsocketCommunicator(
        application, f"{path}?{params}" if params else path, headers=headers
    )
    accepted, _ = await communicator.connect(timeout=5)
    return communicator, accepted


async def read_until_close(communicator, *, within: float = 15.0) -> tuple[list[dict], int]:
    """Every event until the server closes; each is checked against the schema."""
    events = []
    async with asyncio.timeout(within):
        while True:
            output = await communicator.receive_output(timeout=within)
            if output["type"] == "websocket.close":
                return events, output.get("code", 1000)
            event = json.loads(output["text"])
            assert_valid_event(event)
            events.append(event)


async def read_events(communicator, count: int, *, within: float = 15.0) -> list[dict]:
    """The next `count` events of a stream that does not close (a roadmap)."""
    events = []
    async with asyncio.timeout(within):
        while len(events) < count:
            output = await communicator.receive_output(timeout=within)
            assert output["type"] == "websocket.send", output
            event = json.loads(output["text"])
            assert_valid_event(event)
            events.append(event)
    return events


async def replay_of_finished_retry(task_id: str, user) -> list[dict]:
    """Connect after a single retry finished: its two events, once, then 1000."""
    communicator, accepted = await connect(f"/api/v1/ws/{task_id}", user=user)
    events, code = await read_until_close(communicator)
    assert accepted and code == 1000
    assert [(e["seq"], e["type"]) for e in events] == [
        (1, "concept_start"),
        (2, "concept_complete"),
    ]
    return events


async def close_code(path: str, **kwargs) -> int:
    communicator, accepted = await connect(path, **kwargs)
    assert accepted, "the handshake is accepted, then closed with a code"
    output = await communicator.receive_output(timeout=5)
    assert output["type"] == "websocket.close", output
    await communicator.disconnect()
    return output["code"]


def stored(**filters) -> list[dict]:
    return [event.as_message() for event in Event.objects.filter(**filters).order_by("id")]


def start_retry(roadmap, user, *, content_type="tutorial", concepts=1):
    contents = list(
        ConceptContent.objects.filter(roadmap=roadmap, content_type=content_type).order_by(
            "concept__order"
        )[:concepts]
    )
    kind = "retry" if concepts == 1 else "batch"
    return services.start_generation(roadmap=roadmap, user=user, kind=kind, contents=contents).task


async def finished_task(roadmap, user, **kwargs) -> str:
    """A task that ran to its end before anyone subscribed. Off the event loop's
    thread-sensitive executor, which the engine's own sync calls need."""
    task = await asyncio.to_thread(start_retry, roadmap, user, **kwargs)
    assert await asyncio.to_thread(engine.wait_until_idle, 30)
    return task.pk


# The handshake's Host: a server at http://127.0.0.1:8000 (browsers always send it).
SITE = (b"host", b"127.0.0.1:8000")


async def session_cookie(user) -> tuple[bytes, bytes]:
    """A `Cookie` header with a logged-in session of `user`."""
    client = Client()
    await sync_to_async(client.force_login)(user)
    return (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode())


async def group_size(layer, group: str) -> int:
    """Members of a group, in either layer (channels_redis' pub/sub layer keeps
    them in process, under its own name for the group)."""
    if isinstance(layer, InMemoryChannelLayer):
        return len(layer.groups.get(group, {}))
    return len(layer.groups.get(layer._get_group_channel_name(group), {}))


def record_unpublished_event(roadmap) -> None:
    """Stored, not published: only the store catch-up can deliver it."""
    body = {
        "type": "status_changed",
        "task_id": None,
        "roadmap_id": str(roadmap.pk),
        "timestamp": "2026-11-30T10:30:00+00:00",
        "message": "Concept 1 (Tutorial) is now Failed",
        "concept_id": "c001",
        "concept_name": "Concept 1",
        "content_type": "tutorial",
        "status": "failed",
        "previous_status": "pending",
    }
    topic = f"roadmap-{roadmap.pk}"
    with transaction.atomic():  # as record_event stores it, without the publish
        topic_seq = _next_seq(topic)
        Event.objects.create(topic=topic, topic_seq=topic_seq, type="status_changed", body=body)
