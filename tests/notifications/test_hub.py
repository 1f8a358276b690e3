"""The per-process hub (notifications.hub): one layer subscription per
stream or topic however many sockets watch it, each event's text written as the
publisher encoded it, exactly once and in order through dropped layer messages,
publishes out of commit order, and a broker that goes away and comes back."""

import asyncio
import json

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer

from generation import services
from notifications import hub as hubs
from notifications import services as notification_services
from notifications.models import Event
from notifications.services import envelopes, feed_group
from roadmaps.models import ConceptContent
from tests.support.layers import RedisSwitch, live_again, store_checks
from tests.support.sockets import (
    connect,
    group_size,
    read_events,
    record_unpublished_event,
    stored,
)

pytestmark = pytest.mark.django_db(transaction=True)


def topic_of(roadmap) -> str:
    return f"roadmap-{roadmap.pk}"


def reset_unpublished(content: ConceptContent, status: str, captured: list) -> None:
    """An admin-style reset whose publish is held back: its envelopes go to
    `captured`, for the test to publish when and in what order it likes."""
    real_publish = notification_services.publish
    notification_services.publish = lambda events: captured.extend(events)
    try:
        assert services.reset_status(content=content, status=status)
    finally:
        notification_services.publish = real_publish


async def attached(sockets: list) -> None:
    """Wait until each socket's connect (replay, attach) is done: a consumer
    handles one message at a time, so its pong comes after."""
    for socket in sockets:
        await socket.send_to(text_data='{"type": "ping"}')
        assert json.loads(await socket.receive_from(timeout=5)) == {"type": "pong"}


async def test_many_sockets_share_one_subscription_and_one_encoding(alice, make_roadmap):
    roadmap = await sync_to_async(make_roadmap)(alice)
    content = await ConceptContent.objects.filter(roadmap=roadmap).afirst()
    sockets = [
        (await connect(f"/api/v1/ws/roadmaps/{roadmap.pk}", user=alice))[0] for _ in range(20)
    ]
    await attached(sockets)
    layer = get_channel_layer()
    assert await group_size(layer, feed_group("topic", topic_of(roadmap))) == 1

    # The feed learns its position from the first event (a store read: a feed
    # from after=0 starts without one), then takes the fast path.
    assert await asyncio.to_thread(services.reset_status, content=content, status="failed")
    for socket in sockets:
        await read_events(socket, 1, within=5)
    captured: list[Event] = []
    await asyncio.to_thread(reset_unpublished, content, "pending", captured)
    [published] = [e for e in envelopes(captured[0]) if e["kind"] == "topic"]
    await notification_services.apublish([published])
    texts = [(await socket.receive_output(timeout=5))["text"] for socket in sockets]
    for socket in sockets:
        await socket.disconnect()

    assert texts == [published["text"]] * 20  # the publisher's bytes, not re-encoded
    assert json.loads(texts[0]) == (await sync_to_async(stored)(topic=topic_of(roadmap)))[-1]
    assert await group_size(layer, feed_group("topic", topic_of(roadmap))) == 0


async def test_a_dropped_layer_message_is_read_once_for_every_socket(
    alice, make_roadmap, settings, monkeypatch
):
    """A stored event whose publish never arrived: the next event shows the gap, and
    the feed reads the store once for all its sockets, whatever their cursors;
    each gets both events, in order, once. No periodic check helps (60 s)."""
    settings.NOTIFICATIONS_CATCH_UP_SECONDS = 60
    roadmap = await sync_to_async(make_roadmap)(alice)
    content = await ConceptContent.objects.filter(roadmap=roadmap).afirst()
    path = f"/api/v1/ws/roadmaps/{roadmap.pk}"
    sockets = [(await connect(path, user=alice))[0] for _ in range(10)]
    await attached(sockets)
    reads = []
    real_events_after = hubs.events_after
    monkeypatch.setattr(
        hubs,
        "events_after",
        lambda **kwargs: (
            reads.append(__import__("traceback").format_stack()) or real_events_after(**kwargs)
        ),
    )

    await asyncio.to_thread(record_unpublished_event, roadmap)  # the dropped one
    assert await asyncio.to_thread(services.reset_status, content=content, status="failed")
    received = [await read_events(socket, 2, within=5) for socket in sockets]
    assert all(await asyncio.gather(*(socket.receive_nothing(timeout=0.1) for socket in sockets)))
    for socket in sockets:
        await socket.disconnect()

    expected = await sync_to_async(stored)(topic=topic_of(roadmap))
    assert [e["previous_status"] for e in expected] == ["pending", "pending"]
    assert received == [expected] * 10
    assert len(reads) == 1  # one store read for ten sockets


async def test_publishes_out_of_commit_order_arrive_in_order_once(
    alice, make_roadmap, settings, monkeypatch
):
    """Two writers commit 1 then 2 and publish 2 then 1 (their on_commit hooks race):
    the feed sees a gap at 2, reads both from the store, and drops the late 1
    without reading again."""
    settings.NOTIFICATIONS_CATCH_UP_SECONDS = 60
    roadmap = await sync_to_async(make_roadmap)(alice)
    content = await ConceptContent.objects.filter(roadmap=roadmap).afirst()
    early, _ = await connect(f"/api/v1/ws/roadmaps/{roadmap.pk}", user=alice)
    await attached([early])

    captured: list[Event] = []
    await asyncio.to_thread(reset_unpublished, content, "failed", captured)
    await asyncio.to_thread(reset_unpublished, content, "pending", captured)
    first, second = ([e for e in envelopes(event) if e["kind"] == "topic"] for event in captured)
    reads = []
    real_events_after = hubs.events_after
    monkeypatch.setattr(
        hubs, "events_after", lambda **kwargs: reads.append(kwargs) or real_events_after(**kwargs)
    )
    await notification_services.apublish(second)
    await notification_services.apublish(first)
    events = await read_events(early, 2, within=5)
    assert await early.receive_nothing(timeout=0.3)
    await early.disconnect()

    assert [e["id"] for e in events] == [event.id for event in captured]
    assert [e["status"] for e in events] == ["failed", "pending"]
    assert len(reads) == 1


@pytest.mark.stress
async def test_a_socket_attaching_while_events_flow_misses_none(alice, make_roadmap, settings):
    """Sockets connect while the feed delivers: each replays, attaches, and has
    every event above its cursor exactly once."""
    settings.NOTIFICATIONS_CATCH_UP_SECONDS = 60
    roadmap = await sync_to_async(make_roadmap)(alice)
    content = await ConceptContent.objects.filter(roadmap=roadmap).afirst()
    path = f"/api/v1/ws/roadmaps/{roadmap.pk}"
    first, _ = await connect(path, user=alice)

    def toggle(times: int) -> None:
        for index in range(times):
            services.reset_status(content=content, status="pending" if index % 2 else "failed")

    writer = asyncio.create_task(asyncio.to_thread(toggle, 20))
    late = []
    while not writer.done():
        late.append((await connect(path, user=alice))[0])
    await writer
    every = await sync_to_async(stored)(topic=topic_of(roadmap))
    assert len(every) == 20
    for socket in [first, *late]:
        events = await read_events(socket, 20, within=10)
        assert await socket.receive_nothing(timeout=0.1)
        await socket.disconnect()
        assert events == every
    assert late


async def events_before_pong(socket) -> list[dict]:
    """The events a socket sends before it answers a ping: everything its connect
    (replay, attach) sent, since a consumer handles one message at a time."""
    await socket.send_to(text_data='{"type": "ping"}')
    events = []
    while (message := json.loads(await socket.receive_from(timeout=5))) != {"type": "pong"}:
        events.append(message)
    return events


async def test_an_event_delivered_between_a_sockets_replay_and_its_attach_reaches_it(
    alice, make_roadmap, settings, monkeypatch
):
    """The race of a connect, forced: a late socket has replayed the store (empty)
    and is held before it attaches while the feed delivers an event to the sockets
    already attached. Attaching, it reads the store again and gets that event."""
    settings.NOTIFICATIONS_CATCH_UP_SECONDS = 60
    roadmap = await sync_to_async(make_roadmap)(alice)
    content = await ConceptContent.objects.filter(roadmap=roadmap).afirst()
    path = f"/api/v1/ws/roadmaps/{roadmap.pk}"
    first, _ = await connect(path, user=alice)
    await attached([first])
    replayed, release = asyncio.Event(), asyncio.Event()
    real_attach = hubs.Feed.attach

    async def attach(feed, socket) -> None:
        if feed.sockets:  # not the first socket: hold it between replay and attach
            replayed.set()
            await release.wait()
        await real_attach(feed, socket)

    monkeypatch.setattr(hubs.Feed, "attach", attach)
    late, _ = await connect(path, user=alice)
    async with asyncio.timeout(5):
        await replayed.wait()

    assert await asyncio.to_thread(services.reset_status, content=content, status="failed")
    delivered = await read_events(first, 1, within=5)  # the feed has passed it on
    release.set()
    received = await events_before_pong(late)
    for socket in (first, late):
        await socket.disconnect()

    assert delivered == await sync_to_async(stored)(topic=topic_of(roadmap))
    assert received == delivered


@pytest.mark.stress
async def test_redis_down_and_back_loses_nothing_and_repeats_nothing(
    alice, make_roadmap, settings, redis_url
):
    """Live through Redis, then Redis goes away (events are stored, their publishes
    fail), then it comes back: the sockets get every event once, in order, and
    live delivery resumes."""
    settings.NOTIFICATIONS_CATCH_UP_SECONDS = 0.5
    roadmap = await sync_to_async(make_roadmap)(alice)
    content = await ConceptContent.objects.filter(roadmap=roadmap).afirst()

    def reset(status: str) -> None:
        assert services.reset_status(content=content, status=status)

    async with RedisSwitch(redis_url) as redis:
        redis.up = True
        settings.CHANNEL_LAYERS = {
            "default": {
                "BACKEND": "roadmap_project.patches.channels_redis.RedisPubSubChannelLayer",
                "CONFIG": {"hosts": [redis.url]},
            }
        }
        sockets = [
            (await connect(f"/api/v1/ws/roadmaps/{roadmap.pk}", user=alice))[0] for _ in range(5)
        ]
        await asyncio.to_thread(reset, "failed")
        live = [await read_events(socket, 1, within=3) for socket in sockets]

        redis.up = False
        for writer in list(redis.writers):
            writer.close()
        await asyncio.to_thread(reset, "pending")
        await asyncio.to_thread(reset, "failed")
        redis.up = True
        caught_up = [await read_events(socket, 2, within=10) for socket in sockets]

        # Live again: the layer's receiver reconnects and subscribes again. After
        # the check under way, the store is read once a minute: what arrives from
        # here on came through the layer.
        await live_again(sockets, topic_of(roadmap))
        settings.NOTIFICATIONS_CATCH_UP_SECONDS = 60
        await store_checks(hubs.hub(), 1)
        await asyncio.to_thread(reset, "pending")
        after = [await read_events(socket, 1, within=3) for socket in sockets]
        assert all([await socket.receive_nothing(timeout=0.2) for socket in sockets])
        for socket in sockets:
            await socket.disconnect()

    every = await sync_to_async(stored)(topic=topic_of(roadmap))
    assert [e["status"] for e in every] == ["failed", "pending", "failed", "pending"]
    for index in range(5):
        assert live[index] + caught_up[index] + after[index] == every


@pytest.mark.stress
async def test_connect_disconnect_cycles_leave_nothing_behind(alice, make_roadmap):
    """1,000 connections opened and closed one after another: no task, feed, group
    membership or layer channel is left behind (counted before and after)."""
    roadmap = await sync_to_async(make_roadmap)(alice)
    path = f"/api/v1/ws/roadmaps/{roadmap.pk}"
    layer = get_channel_layer()
    warm, _ = await connect(path, user=alice)  # the hub's one receive loop starts here
    await warm.disconnect()
    tasks_before = len(asyncio.all_tasks())
    channels_before = len(getattr(layer, "channels", {}))

    for _ in range(1000):
        communicator, accepted = await connect(path, user=alice)
        assert accepted
        await communicator.disconnect()

    assert len(asyncio.all_tasks()) == tasks_before
    assert len(getattr(layer, "channels", {})) == channels_before
    assert not hubs.hub().feeds
    assert await group_size(layer, feed_group("topic", topic_of(roadmap))) == 0
