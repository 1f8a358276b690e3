"""docs/event.schema.json is a valid JSON Schema and every kind of event a real
run produces satisfies it (DESIGN §5)."""

import asyncio
import json

import jsonschema
import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from generation import engine, services
from generation.providers import reset_provider
from notifications.models import Event
from roadmaps.models import ConceptContent
from tests.conftest import auth
from tests.support.events import EVENT_SCHEMA, assert_valid_event, event_validator

pytestmark = pytest.mark.django_db(transaction=True)


def test_schema_is_valid_json_schema():
    jsonschema.Draft202012Validator.check_schema(EVENT_SCHEMA)


def test_schema_rejects_what_the_contract_forbids():
    good = {
        "type": "status_changed",
        "id": 7,
        "seq": None,
        "task_id": None,
        "roadmap_id": "0b9f4a52-2b0c-4f38-9a4e-5c3f2a9d1e11",
        "timestamp": "2025-12-09T10:30:00+08:00",
        "message": "React (tutorial) is now pending",
        "concept_id": "concept_001",
        "concept_name": "React",
        "content_type": "tutorial",
        "status": "pending",
        "previous_status": "failed",
    }
    assert_valid_event(good)
    for broken in (
        {**good, "timestamp": "2025-12-09T10:30:00"},  # no offset
        {**good, "status": "done"},
        {**good, "unexpected": 1},
        {**good, "id": None},  # stored events have an id
        {key: value for key, value in good.items() if key != "message"},
        {**good, "type": "concept_exploded"},
    ):
        assert list(event_validator.iter_errors(broken)), broken


def _retry(roadmap, user, content_type: str):
    content = ConceptContent.objects.filter(roadmap=roadmap, content_type=content_type).first()
    return services.retry_content(content=content, user=user).task


def _run_every_kind_of_event(alice, make_roadmap, settings):
    """Retries of all three content types, a batch (task_complete), a failure
    (concept_failed) and an operator reset (status_changed), through the services."""
    roadmap = make_roadmap(alice, concepts=2)
    for content_type in ("tutorial", "resources", "quiz"):
        _retry(roadmap, alice, content_type)
    engine.wait_until_idle(30)
    contents = list(ConceptContent.objects.filter(roadmap=roadmap, content_type="tutorial"))
    services.start_generation(roadmap=roadmap, user=alice, kind="batch", contents=contents)
    engine.wait_until_idle(30)
    # A provider that cannot even be built: the runner fails the item (internal error).
    settings.GENERATION_PROVIDER = "misconfigured"
    reset_provider()
    _retry(roadmap, alice, "quiz")
    engine.wait_until_idle(30)
    content = ConceptContent.objects.filter(roadmap=roadmap, content_type="quiz").first()
    services.reset_status(content=content, status="pending")
    return roadmap


async def test_every_stored_event_type_validates(alice, make_roadmap, settings):
    # Not thread-sensitive: the engine's own sync_to_async calls need that thread.
    roadmap = await asyncio.to_thread(_run_every_kind_of_event, alice, make_roadmap, settings)
    events = await sync_to_async(list)(Event.objects.filter(topic=f"roadmap-{roadmap.pk}"))
    types = {event.type for event in events}
    assert {
        "concept_start",
        "concept_complete",
        "concept_failed",
        "task_complete",
        "status_changed",
    } <= types
    for event in events:
        assert_valid_event(event.as_message())


async def test_live_progress_events_validate(api, alice, make_roadmap, settings):
    """concept_progress is live-only: observed on a connected task stream while a
    retry posted over HTTP runs on this (the server's) event loop."""
    from roadmap_project.asgi import application

    settings.OFFLINE_PROVIDER_DELAY_SECONDS = 1.0
    roadmap = await sync_to_async(make_roadmap)(alice)
    response = await api.post(
        f"/api/v1/roadmaps/{roadmap.pk}/concepts/c001/tutorial/retry", headers=auth(alice)
    )
    assert response.status_code == 202, response.text
    task_id = response.json()["data"]["task_id"]
    communicator = WebsocketCommunicator(application, f"/api/v1/ws/{task_id}?token={alice.token}")
    connected, _ = await communicator.connect()
    assert connected
    received = []
    while True:
        output = await communicator.receive_output(timeout=10)
        if output["type"] == "websocket.close":
            assert output["code"] == 1000
            break
        received.append(json.loads(output["text"]))
    await communicator.disconnect()
    assert [event["type"] for event in received if event["seq"] is not None] == [
        "concept_start",
        "concept_complete",
    ]
    assert any(event["type"] == "concept_progress" for event in received), received
    for event in received:
        assert_valid_event(event)
