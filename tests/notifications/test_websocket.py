"""The event streams through Channels' WebsocketCommunicator against the real ASGI
application (DESIGN §5, I5): replay, resume, no gap and no duplicate while events
are committed during the replay, close codes, the roadmap stream."""

import asyncio
import itertools
import json
import threading
import time
from functools import partial

import pytest
from asgiref.sync import sync_to_async
from channels import auth as channels_auth
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator

from generation import services
from notifications import auth as ws_auth
from notifications import consumers
from notifications import hub as hubs
from notifications.models import Event
from notifications.selectors import events_after
from notifications.services import feed_group
from roadmap_project.asgi import application
from roadmaps.models import ConceptContent
from tests.conftest import auth
from tests.support.retries import retry_url
from tests.support.sockets import (
    SITE,
    close_code,
    connect,
    finished_task,
    group_size,
    read_events,
    read_until_close,
    record_unpublished_event,
    replay_of_finished_retry,
    session_cookie,
    start_retry,
    stored,
)

pytestmark = pytest.mark.django_db(transaction=True)


# --- replay and resume ------------------------------------------------------------


async def test_late_subscriber_gets_every_event_once_then_close_1000(alice, make_roadmap):
    roadmap = await sync_to_async(make_roadmap)(alice)
    task_id = await finished_task(roadmap, alice)

    events = await replay_of_finished_retry(task_id, alice)

    assert events == await sync_to_async(stored)(stream=task_id)


async def test_late_subscriber_of_a_batch_gets_task_complete_last(alice, make_roadmap):
    roadmap = await sync_to_async(make_roadmap)(alice, concepts=3)
    task_id = await finished_task(roadmap, alice, concepts=3)

    communicator, _ = await connect(f"/api/v1/ws/{task_id}", user=alice)
    events, code = await read_until_close(communicator)

    assert code == 1000
    assert [e["seq"] for e in events] == list(range(1, 8))
    assert events[-1]["type"] == "task_complete"
    assert events[-1]["summary"] == {"total": 3, "completed": 3, "failed": 0}


async def test_resume_after_seq_replays_only_newer_events(alice, make_roadmap):
    roadmap = await sync_to_async(make_roadmap)(alice, concepts=2)
    task_id = await finished_task(roadmap, alice, concepts=2)

    communicator, _ = await connect(f"/api/v1/ws/{task_id}", user=alice, query="after=3")
    events, code = await read_until_close(communicator)
    assert [e["seq"] for e in events] == [4, 5] and code == 1000

    # A client that already has the final event is told the stream is over.
    communicator, _ = await connect(f"/api/v1/ws/{task_id}", user=alice, query="after=5")
    assert await read_until_close(communicator) == ([], 1000)


async def test_resume_a_roadmap_stream_after_a_global_id(alice, make_roadmap):
    roadmap = await sync_to_async(make_roadmap)(alice, concepts=2)
    await finished_task(roadmap, alice, concepts=2)
    everything = await sync_to_async(stored)(topic=f"roadmap-{roadmap.pk}")
    middle = everything[2]["id"]

    communicator, _ = await connect(
        f"/api/v1/ws/roadmaps/{roadmap.pk}", user=alice, query=f"after={middle}"
    )
    events = await read_events(communicator, len(everything) - 3)
    assert await communicator.receive_nothing(timeout=0.3)
    await communicator.disconnect()
    assert events == everything[3:]


# --- no gap, no duplicate while events are being committed ---------------------------


async def test_batch_events_committed_during_the_replay_arrive_once_in_order(
    api, alice, make_roadmap, settings
):
    """Subscribe-then-fetch: items complete while the socket connects and replays."""
    settings.OFFLINE_PROVIDER_DELAY_SECONDS = 0.1
    roadmap = await sync_to_async(make_roadmap)(alice, concepts=24)
    response = await api.post(
        f"/api/v1/roadmaps/{roadmap.pk}/concepts/retry-batch",
        json={"content_types": ["tutorial"], "statuses": ["pending"]},
        headers=auth(alice),
    )
    assert response.status_code == 202, response.text
    task_id = response.json()["data"]["task_id"]

    async def some_events_stored() -> bool:
        return await Event.objects.filter(stream=task_id).acount() >= 4

    async with asyncio.timeout(15):
        while not await some_events_stored():
            await asyncio.sleep(0.01)
    communicator, _ = await connect(f"/api/v1/ws/{task_id}", user=alice)
    events, code = await read_until_close(communicator, within=60)

    assert code == 1000
    total = await Event.objects.filter(stream=task_id).acount()
    assert [e["seq"] for e in events if e["seq"] is not None] == list(range(1, total + 1))
    assert events[-1]["type"] == "task_complete"
    assert [e for e in events if e["seq"]] == await sync_to_async(stored)(stream=task_id)


async def test_an_event_committed_right_after_the_replay_read_arrives_once(
    alice, make_roadmap, settings, monkeypatch
):
    """The worst moment for subscribe-then-fetch: an event commits just after the
    replay has read the store. Only the group joined before the replay carries it;
    the catch-up poll is too far off (60 s) to rescue a lost one."""
    settings.NOTIFICATIONS_CATCH_UP_SECONDS = 60
    roadmap = await sync_to_async(make_roadmap)(alice)
    content = await ConceptContent.objects.filter(roadmap=roadmap).afirst()
    await asyncio.to_thread(toggle_statuses, [content], 2)  # two stored events to replay

    pages = []

    def events_after_then_commit(**kwargs):
        page = events_after(**kwargs)
        pages.append(page)
        if len(pages) == 1:  # after the first replay page, before the replay ends
            writer = threading.Thread(target=toggle_statuses, args=([content], 1))
            writer.start()
            writer.join()
        return page

    monkeypatch.setattr(hubs, "events_after", events_after_then_commit)
    communicator, _ = await connect(f"/api/v1/ws/roadmaps/{roadmap.pk}", user=alice)
    events = await read_events(communicator, 3, within=5)
    assert await communicator.receive_nothing(timeout=0.3)
    await communicator.disconnect()

    assert [e["status"] for e in events] == ["failed", "pending", "failed"]
    assert [event.id for event in pages[0]] == [e["id"] for e in events[:2]]  # the replay
    assert events == await sync_to_async(stored)(topic=f"roadmap-{roadmap.pk}")


def toggle_statuses(contents: list[ConceptContent], rounds: int) -> None:
    """Operator resets through the state machine: one status_changed each."""
    for round_ in range(rounds):
        status = "failed" if round_ % 2 == 0 else "pending"
        for content in contents:
            assert services.reset_status(content=content, status=status)


@pytest.mark.stress
async def test_roadmap_events_committed_during_the_replay_arrive_once_in_order(alice, make_roadmap):
    roadmap = await sync_to_async(make_roadmap)(alice, concepts=20)
    contents = await sync_to_async(list)(ConceptContent.objects.filter(roadmap=roadmap))
    await asyncio.to_thread(toggle_statuses, contents, 10)  # 600 stored: a replay of two pages

    writer = threading.Thread(target=toggle_statuses, args=(contents, 5))
    writer.start()  # 300 more, committed while the socket connects and replays
    try:
        communicator, _ = await connect(f"/api/v1/ws/roadmaps/{roadmap.pk}", user=alice)
        events = await read_events(communicator, 900, within=60)
    finally:  # a failed read must not leave the writer running into the next test
        await asyncio.to_thread(writer.join)
    assert await communicator.receive_nothing(timeout=2.5)  # one catch-up round later
    await communicator.disconnect()

    assert events == await sync_to_async(stored)(topic=f"roadmap-{roadmap.pk}")
    assert len({e["id"] for e in events}) == 900


# --- the roadmap stream --------------------------------------------------------


async def test_roadmap_stream_carries_a_retry_and_an_operator_reset(
    api, alice, make_roadmap, settings
):
    # A long catch-up period: what arrives here came by the live path.
    settings.NOTIFICATIONS_CATCH_UP_SECONDS = 60
    settings.OFFLINE_PROVIDER_DELAY_SECONDS = 0.3
    roadmap = await sync_to_async(make_roadmap)(alice)
    communicator, _ = await connect(f"/api/v1/ws/roadmaps/{roadmap.pk}", user=alice)

    response = await api.post(retry_url(roadmap), headers=auth(alice))
    assert response.status_code == 202, response.text
    task_id = response.json()["data"]["task_id"]
    live = []
    while not live or live[-1]["type"] != "concept_complete":
        live += await read_events(communicator, 1)
    start, *progress, complete = live

    content = await ConceptContent.objects.aget(
        roadmap=roadmap, concept__concept_id="c001", content_type="tutorial"
    )
    assert await asyncio.to_thread(services.reset_status, content=content, status="pending")
    [changed] = await read_events(communicator, 1)
    assert await communicator.receive_nothing(timeout=0.3)
    await communicator.disconnect()

    assert (start["type"], complete["type"]) == ("concept_start", "concept_complete")
    # The task's live-only progress and content ride the roadmap stream too (DESIGN §5).
    live_types = {e["type"] for e in progress}
    assert {"concept_progress", "content_snapshot"} <= live_types
    assert live_types <= {"concept_progress", "content_snapshot", "content_delta"}
    assert all(e["id"] is None and e["task_id"] == task_id for e in progress)
    assert start["task_id"] == complete["task_id"] == task_id
    assert changed["status"] == "pending" and changed["previous_status"] == "completed"
    assert changed["task_id"] is None and changed["seq"] is None
    assert start["id"] < complete["id"] < changed["id"]


@pytest.mark.parametrize("spelling", [str.upper, lambda roadmap_id: roadmap_id.replace("-", "")])
async def test_a_roadmap_id_spelled_otherwise_is_the_same_stream(
    api, alice, make_roadmap, spelling
):
    """REST accepts the id in upper case or without dashes; the stream is the
    roadmap's own, not an empty one named after the spelling."""
    roadmap = await sync_to_async(make_roadmap)(alice)
    communicator, accepted = await connect(
        f"/api/v1/ws/roadmaps/{spelling(str(roadmap.pk))}", user=alice
    )
    assert accepted

    response = await api.post(retry_url(roadmap), headers=auth(alice))
    assert response.status_code == 202, response.text
    # Live or by the store catch-up (every 2 s): either way within a few seconds.
    [first] = await read_events(communicator, 1, within=6)
    await communicator.disconnect()

    assert first["type"] == "concept_start"
    assert first["task_id"] == response.json()["data"]["task_id"]


# --- who may subscribe -------------------------------------------------------------


async def test_close_codes(alice, bob, make_roadmap, make_user):
    roadmap = await sync_to_async(make_roadmap)(alice)
    task_id = await finished_task(roadmap, alice)
    task_path, roadmap_path = f"/api/v1/ws/{task_id}", f"/api/v1/ws/roadmaps/{roadmap.pk}"

    assert await close_code(task_path) == 4401
    assert await close_code(task_path, query="token=not-a-token") == 4401
    # PostgreSQL refuses a NUL in a query: looked up, it would be a 500, not a 4401.
    assert await close_code(task_path, query="token=a%00b") == 4401
    assert await close_code(task_path, query=f"token={'a' * 5000}") == 4401
    assert await close_code(roadmap_path) == 4401
    assert await close_code(task_path, user=bob) == 4404
    assert await close_code(roadmap_path, user=bob) == 4404
    assert await close_code("/api/v1/ws/retry-tutorial-nope", user=alice) == 4404
    assert (
        await close_code(f"/api/v1/ws/roadmaps/{'0' * 8}-0000-0000-0000-{'0' * 12}", user=alice)
        == 4404
    )
    assert await close_code(task_path, user=alice, query="after=abc") == 4400
    assert await close_code(task_path, user=alice, query="after=-1") == 4400
    assert await close_code(task_path, user=alice, query=f"after={2**64}") == 4400
    # An id no stream could have, or no stream path at all: the same refusals, not a
    # router error (an HTTP 500 on the handshake and a traceback per attempt).
    for path in ("/api/v1/ws/a b", f"/api/v1/ws/{'a' * 101}", "/api/v1/ws/roadmaps/zz", "/x"):
        assert await close_code(path) == 4401
        assert await close_code(path, user=bob) == 4404
    staff = await sync_to_async(make_user)("operator", is_staff=True)
    communicator, _ = await connect(task_path, user=staff)
    events, code = await read_until_close(communicator)  # staff see all: replay, then end
    assert len(events) == 2 and code == 1000


@pytest.mark.parametrize("credential", ["token", "session"])
async def test_the_handshake_is_accepted_before_any_database_call(
    alice, make_roadmap, monkeypatch, credential
):
    """In a connect storm the database calls of a thousand handshakes queue on one
    thread; a handshake that waited for its own outlived daphne's handshake
    timeout (5 s) and was dropped without an answer. The accept comes first; the
    credentials are read after it."""
    roadmap = await sync_to_async(make_roadmap)(alice)
    database = asyncio.Event()  # the queue of database calls, held until set
    token_lookup, session_lookup = ws_auth._user_for_token, channels_auth.get_user

    async def queued(lookup, *args):
        await database.wait()
        return await lookup(*args)

    monkeypatch.setattr(ws_auth, "_user_for_token", partial(queued, token_lookup))
    monkeypatch.setattr(channels_auth, "get_user", partial(queued, session_lookup))
    path = f"/api/v1/ws/roadmaps/{roadmap.pk}"
    if credential == "token":
        communicator = WebsocketCommunicator(application, f"{path}?token={alice.token}")
    else:
        origin = (b"origin", b"http://127.0.0.1:8000")
        headers = [SITE, await session_cookie(alice), origin]
        communicator = WebsocketCommunicator(application, path, headers=headers)

    accepted, _ = await communicator.connect(timeout=2)
    database.set()
    await communicator.send_to(text_data='{"type": "ping"}')

    assert accepted
    assert json.loads(await communicator.receive_from(timeout=5)) == {"type": "pong"}
    await communicator.disconnect()


async def stays_open(path: str, *, user=None, headers=None) -> bool:
    communicator, accepted = await connect(path, user=user, headers=headers)
    open_ = accepted and await communicator.receive_nothing(timeout=0.2)
    await communicator.disconnect()
    return open_


async def test_this_sites_own_origin_may_open_a_stream(alice, make_roadmap, settings):
    roadmap = await sync_to_async(make_roadmap)(alice)
    path = f"/api/v1/ws/roadmaps/{roadmap.pk}"
    cookie = await session_cookie(alice)
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    behind_tls = [SITE, (b"x-forwarded-proto", b"https")]

    assert await stays_open(path, headers=[SITE, cookie, (b"origin", b"http://127.0.0.1:8000")])
    # Behind a proxy that ends TLS, as Django reads the scheme of a request.
    assert await stays_open(
        path, headers=[*behind_tls, cookie, (b"origin", b"https://127.0.0.1:8000")]
    )
    assert await stays_open(path, user=alice, headers=[SITE, (b"origin", b"http://127.0.0.1:8000")])
    assert await stays_open(path, user=alice)  # a token client without Origin (not a browser)


@pytest.mark.parametrize(
    "origin",
    [
        b"http://127.0.0.1:9999",  # another port
        b"https://127.0.0.1:8000",  # another scheme
        b"https://localhost",  # another host, though in ALLOWED_HOSTS
        b"http://localhost.",
        b"http://localhost:8000",
        b"https://evil.example",
        None,  # no Origin: a cookie alone could be a cross-site request
    ],
)
async def test_a_session_cookie_from_another_origin_is_closed_4403(alice, make_roadmap, origin):
    """Origins compared whole (scheme, host and port), as Django's CSRF check does."""
    roadmap = await sync_to_async(make_roadmap)(alice)
    headers = [SITE, await session_cookie(alice)]
    if origin is not None:
        headers.append((b"origin", origin))

    assert await close_code(f"/api/v1/ws/roadmaps/{roadmap.pk}", headers=headers) == 4403


async def test_a_csrf_trusted_origin_may_use_the_session_cookie(alice, make_roadmap, settings):
    """The public origin of a site behind a proxy that rewrites Host, say."""
    settings.CSRF_TRUSTED_ORIGINS = ["https://roadmaps.example.org", "https://*.example.net"]
    roadmap = await sync_to_async(make_roadmap)(alice)
    path = f"/api/v1/ws/roadmaps/{roadmap.pk}"
    cookie = await session_cookie(alice)

    for origin in (b"https://roadmaps.example.org", b"https://app.example.net"):
        assert await stays_open(path, headers=[SITE, cookie, (b"origin", origin)])
    for origin in (
        b"http://roadmaps.example.org",
        b"https://example.org",
        b"http://app.example.net",
    ):
        assert await close_code(path, headers=[SITE, cookie, (b"origin", origin)]) == 4403


# --- client frames and every exit path ---------------------------------------------


def feeds() -> dict:
    """The streams and topics this loop's hub still watches."""
    return hubs.hub().feeds


async def test_ping_is_answered_and_other_frames_are_ignored(alice, make_roadmap, settings):
    settings.NOTIFICATIONS_CATCH_UP_SECONDS = 0.2
    roadmap = await sync_to_async(make_roadmap)(alice)
    communicator, _ = await connect(f"/api/v1/ws/roadmaps/{roadmap.pk}", user=alice)

    await communicator.send_to(text_data='{"type": "ping"}')
    assert json.loads(await communicator.receive_from(timeout=5)) == {"type": "pong"}
    for frame in (
        {"text_data": "ping"},
        {"bytes_data": b"\x00\xff"},
        {"text_data": "[1, 2]"},
        {"text_data": "[" * 100_000},  # json.loads raises RecursionError, not ValueError
    ):
        await communicator.send_to(**frame)
    assert await communicator.receive_nothing(timeout=0.3)
    # The stream goes on delivering, live or by catch-up.
    await asyncio.to_thread(start_retry, roadmap, alice)
    received = []
    while not received or received[-1]["type"] != "concept_complete":
        received += await read_events(communicator, 1)
    assert received[0]["type"] == "concept_start"

    await communicator.disconnect()
    assert not feeds()


async def test_a_crashed_consumer_releases_its_feed_and_group(alice, make_roadmap, monkeypatch):
    """A handler error ends the consumer without a clean close; what it held goes."""
    roadmap = await sync_to_async(make_roadmap)(alice)
    communicator, _ = await connect(f"/api/v1/ws/roadmaps/{roadmap.pk}", user=alice)
    layer = get_channel_layer()
    group = feed_group("topic", f"roadmap-{roadmap.pk}")
    await communicator.send_to(text_data='{"type": "ping"}')  # answered once connected
    assert json.loads(await communicator.receive_from(timeout=5)) == {"type": "pong"}
    assert feeds() and await group_size(layer, group) == 1

    async def crash(self, text_data=None, bytes_data=None):
        raise ValueError("a handler that fails")

    monkeypatch.setattr(consumers.EventStreamConsumer, "receive", crash)
    await communicator.send_to(text_data="anything")
    with pytest.raises(ValueError, match="a handler that fails"):
        await communicator.wait(timeout=5)

    assert not feeds()
    assert await group_size(layer, group) == 0


async def test_idle_sockets_share_one_store_check_per_period(
    alice, make_roadmap, settings, monkeypatch
):
    """The store catch-up is one check per period per process, not one per socket
    (20 sockets each polling on its own would make 200 reads a second); a feed
    that is behind reads its events once for all its sockets."""
    settings.NOTIFICATIONS_CATCH_UP_SECONDS = 0.1
    roadmap = await sync_to_async(make_roadmap)(alice)
    sockets = [
        (await connect(f"/api/v1/ws/roadmaps/{roadmap.pk}", user=alice))[0] for _ in range(20)
    ]
    checks = hubs.hub()
    catch_ups = checks.catch_ups
    reads: list[float] = []  # when each check asked the store for the newest cursors
    newest_cursors = hubs.newest_cursors

    def timed_newest_cursors(**kwargs):
        reads.append(time.monotonic())
        return newest_cursors(**kwargs)

    monkeypatch.setattr(hubs, "newest_cursors", timed_newest_cursors)
    async with asyncio.timeout(5):  # five periods of 0.1 s, ten times over
        while len(reads) < 6:
            await asyncio.sleep(0.02)
    # Checks a period apart, however many sockets: a slow machine only spaces
    # them more, so only the lower bound is asserted.
    gaps = [later - earlier for earlier, later in itertools.pairwise(reads[:6])]
    idle_catch_ups = checks.catch_ups - catch_ups
    # An event the live path does not carry (another process's, say): the feed is
    # behind at the next check, and reads it once for its 20 sockets.
    await asyncio.to_thread(record_unpublished_event, roadmap)
    events = [await read_events(socket, 1, within=5) for socket in sockets]
    for socket in sockets:
        await socket.disconnect()

    assert min(gaps) >= 0.05, gaps
    assert idle_catch_ups == 0
    assert all(event[0]["type"] == "status_changed" for event in events)
    assert checks.catch_ups - catch_ups == 1
    assert not feeds()
