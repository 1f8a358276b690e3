"""I5: an event is stored in the transaction of the state change it describes and
published only after that commits; a rolled-back change leaves neither."""

import asyncio
import json

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.db import transaction

from generation import services
from notifications.models import Event
from notifications.services import feed_group
from roadmaps.models import ConceptContent

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
