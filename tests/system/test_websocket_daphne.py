"""The event streams over a real socket: a daphne process (tests/support/daphne_server.py)
and the `websockets` client library. The server uses this test's database, so
what the test commits the server reads, and the other way round."""

import asyncio
import json

import httpx
import pytest
from asgiref.sync import sync_to_async
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from notifications.models import Event
from tests.conftest import auth
from tests.support.daphne_server import daphne_server
from tests.support.events import assert_valid_event
from tests.support.retries import retry_url
from tests.support.sockets import finished_task

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def server(tmp_path):
    with daphne_server(tmp_path) as running:
        yield running


async def read_until_close(url: str, *, within: float = 20.0) -> tuple[list[dict], int]:
    """Every event until the server closes the socket, and the close code."""
    events = []
    async with asyncio.timeout(within):
        async with ws_connect(url) as socket:
            try:
                while True:
                    event = json.loads(await socket.recv())
                    assert_valid_event(event)
                    events.append(event)
            except ConnectionClosed:
                return events, socket.close_code


async def test_late_subscriber_gets_the_replay_then_close_1000(server, alice, make_roadmap):
    roadmap = await sync_to_async(make_roadmap)(alice, concepts=2)
    task_id = await finished_task(roadmap, alice, concepts=2)

    events, code = await read_until_close(
        f"{server.ws_url}/api/v1/ws/{task_id}?token={alice.token}"
    )

    assert code == 1000
    assert [e["seq"] for e in events] == [1, 2, 3, 4, 5]
    assert events[-1]["type"] == "task_complete"
    resumed, code = await read_until_close(
        f"{server.ws_url}/api/v1/ws/{task_id}?token={alice.token}&after=3"
    )
    assert [e["seq"] for e in resumed] == [4, 5] and code == 1000


async def test_close_codes_reach_a_real_client(server, alice, bob, make_roadmap):
    roadmap = await sync_to_async(make_roadmap)(alice)
    task_id = await finished_task(roadmap, alice)
    base = server.ws_url + "/api/v1/ws"

    assert await read_until_close(f"{base}/{task_id}") == ([], 4401)
    assert await read_until_close(f"{base}/{task_id}?token={bob.token}") == ([], 4404)
    assert await read_until_close(f"{base}/roadmaps/{roadmap.pk}?token={bob.token}") == ([], 4404)
    assert await read_until_close(f"{base}/retry-unknown?token={alice.token}") == ([], 4404)
    assert await read_until_close(f"{base}/{task_id}?token={alice.token}&after=x") == ([], 4400)


async def follow_a_retry(ws_server, http_server, alice, roadmap) -> list[dict]:
    """Subscribe to the roadmap on one server, post a retry to another (or the
    same), then follow the task's own stream to its close."""
    roadmap_url = f"{ws_server.ws_url}/api/v1/ws/roadmaps/{roadmap.pk}?token={alice.token}"
    async with asyncio.timeout(30), ws_connect(roadmap_url) as roadmap_socket:
        async with httpx.AsyncClient(base_url=http_server.http_url) as client:
            response = await client.post(retry_url(roadmap), headers=auth(alice))
        assert response.status_code == 202, response.text
        task_id = response.json()["data"]["task_id"]
        task_events, code = await read_until_close(
            f"{ws_server.ws_url}/api/v1/ws/{task_id}?token={alice.token}"
        )
        roadmap_events = []  # stored ones; live-only progress rides along
        while len(roadmap_events) < 2:
            event = json.loads(await roadmap_socket.recv())
            assert_valid_event(event)
            if event["id"] is not None:
                roadmap_events.append(event)
    assert code == 1000
    stored = [e for e in task_events if e["seq"] is not None]
    assert [(e["seq"], e["type"]) for e in stored] == [
        (1, "concept_start"),
        (2, "concept_complete"),
    ]
    assert all(e["task_id"] == task_id for e in task_events)
    assert [e["type"] for e in roadmap_events] == ["concept_start", "concept_complete"]
    assert [e["id"] for e in roadmap_events] == [e["id"] for e in stored]
    return task_events


async def test_roadmap_and_task_streams_follow_a_retry_posted_over_http(
    server, alice, make_roadmap
):
    roadmap = await sync_to_async(make_roadmap)(alice)
    await follow_a_retry(server, server, alice, roadmap)
    assert await Event.objects.filter(topic=f"roadmap-{roadmap.pk}").acount() == 2


async def test_two_servers_share_events_over_redis(tmp_path, alice, make_roadmap, redis_url):
    """Distributed mode: the client is on server A, the retry runs on server B; the
    Redis layer carries the events (the store catch-up is set too slow to help)."""
    roadmap = await sync_to_async(make_roadmap)(alice)
    slow_catch_up = {"REDIS_URL": redis_url, "NOTIFICATIONS_CATCH_UP_SECONDS": "600"}
    with (
        daphne_server(tmp_path, **slow_catch_up) as server_a,
        daphne_server(tmp_path, **slow_catch_up) as server_b,
    ):
        events = await follow_a_retry(server_a, server_b, alice, roadmap)
    assert [e["type"] for e in events if e["seq"]] == ["concept_start", "concept_complete"]


async def test_a_real_client_pings_and_its_stray_frames_do_not_end_the_stream(
    server, alice, make_roadmap
):
    roadmap = await sync_to_async(make_roadmap)(alice)
    url = f"{server.ws_url}/api/v1/ws/roadmaps/{roadmap.pk}?token={alice.token}"
    async with asyncio.timeout(30), ws_connect(url) as socket:
        for frame in ("ping", b"\x00\x01binary", '{"type": "subscribe"}'):
            await socket.send(frame)
        await socket.send('{"type": "ping"}')
        assert json.loads(await socket.recv()) == {"type": "pong"}
        async with httpx.AsyncClient(base_url=server.http_url) as client:
            response = await client.post(retry_url(roadmap), headers=auth(alice))
        assert response.status_code == 202, response.text
        events = []
        while len(events) < 2:
            event = json.loads(await socket.recv())
            if event["id"] is not None:  # stored; live-only progress rides along
                events.append(event)

    assert [e["type"] for e in events] == ["concept_start", "concept_complete"]
