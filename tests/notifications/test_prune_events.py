"""`manage.py prune_events --older-than DAYS`: old events go, a stream goes only
whole and only once it has ended, so replay never shows a gap."""

import asyncio

import pytest
from django.core.management import CommandError
from django.db import transaction

from generation import engine, services
from notifications.models import Event
from notifications.services import record_event
from roadmaps.models import ConceptContent
from tests.support.pruning import age, prune

pytestmark = pytest.mark.django_db(transaction=True)


def test_prune_deletes_old_events_but_never_part_of_an_open_or_recent_stream(alice, make_roadmap):
    roadmap = make_roadmap(alice, concepts=2)
    first, second = ConceptContent.objects.filter(roadmap=roadmap, content_type="tutorial")
    old_task = services.retry_content(content=first, user=alice).task
    recent_task = services.retry_content(content=second, user=alice).task
    assert engine.wait_until_idle(30)
    services.reset_status(content=first, status="failed")  # a topic-only event
    services.reset_status(content=first, status="pending")
    with transaction.atomic():  # a stream that has not ended (no final event yet)
        record_event(topic="elsewhere", stream="open-stream", type="concept_start", body={})

    age(40, stream=old_task.pk)
    age(40, stream="open-stream")
    age(40, stream=recent_task.pk, seq=1)  # started long ago, ended just now
    old_change, new_change = Event.objects.filter(type="status_changed").order_by("id")
    age(40, pk=old_change.pk)

    output = prune("--older-than", "30")

    assert output.strip() == "Deleted 3 event(s) older than 30 day(s)."
    assert not Event.objects.filter(stream=old_task.pk).exists()
    assert not Event.objects.filter(pk=old_change.pk).exists()
    assert Event.objects.filter(pk=new_change.pk).exists()
    assert list(Event.objects.filter(stream=recent_task.pk).values_list("seq", flat=True)) == [1, 2]
    assert Event.objects.filter(stream="open-stream").count() == 1
    assert prune("--older-than", "30").strip() == "Deleted 0 event(s) older than 30 day(s)."


@pytest.mark.parametrize("days", ["-1", "abc", "100000"])
def test_prune_rejects_bad_days_and_deletes_nothing(alice, make_roadmap, days):
    roadmap = make_roadmap(alice)
    content = ConceptContent.objects.filter(roadmap=roadmap).first()
    services.reset_status(content=content, status="failed")
    age(400)

    with pytest.raises(CommandError):
        prune("--older-than", days)
    assert Event.objects.count() == 1


async def test_a_pruned_finished_stream_still_closes_1000(alice, make_roadmap):
    """DESIGN §5: a client that connects after the end gets the replay (now empty),
    then the close, even once the stream's events were pruned."""
    from asgiref.sync import sync_to_async
    from channels.testing import WebsocketCommunicator

    from roadmap_project.asgi import application

    roadmap = await sync_to_async(make_roadmap)(alice)
    content = await ConceptContent.objects.select_related("concept", "roadmap").aget(
        roadmap=roadmap, concept__concept_id="c001", content_type="quiz"
    )

    def finished_task():
        task = services.retry_content(content=content, user=alice).task
        assert engine.wait_until_idle(30)
        age(40, stream=task.pk)
        prune("--older-than", "30")
        return task

    task = await asyncio.to_thread(finished_task)  # the engine needs the sync thread free
    assert not await Event.objects.filter(stream=task.pk).aexists()

    client = WebsocketCommunicator(application, f"/api/v1/ws/{task.pk}?token={alice.token}")
    connected, _ = await client.connect()
    assert connected
    closed = await client.receive_output(timeout=5)
    assert closed == {"type": "websocket.close", "code": 1000}
    await client.disconnect()
