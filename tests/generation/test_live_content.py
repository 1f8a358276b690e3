"""Live content (DESIGN §5 "Live content", §4 "Live draft"): what the model has
written so far reaches every subscriber exactly once and in order, whenever it
subscribes, across reconnects and re-asks, and ends equal to what is stored."""

import asyncio
import time

import pytest
from asgiref.sync import sync_to_async

from generation.tutorial_files import read_tutorial
from notifications import live_store
from roadmaps.models import ConceptContent
from tests.conftest import auth
from tests.support.fake_openai import (
    CHUNK_CHARS,
    LONG_TUTORIAL,
    VALID_QUIZ,
    VALID_RESOURCES,
    VALID_TUTORIAL,
    ok,
)
from tests.support.live import LiveClient
from tests.support.redis_server import private_redis
from tests.support.retries import retry_url
from tests.support.sockets import connect

pytestmark = pytest.mark.django_db(transaction=True)

TUTORIAL = ("c001", "tutorial")


async def read_until(communicator, client: LiveClient, *, stop: str, within: float = 30.0) -> int:
    """Apply every event until one of type `stop` or the close; returns the last
    stored event's cursor seen (`seq` or `id`), for a resume."""
    cursor = 0
    async with asyncio.timeout(within):
        while True:
            output = await communicator.receive_output(timeout=within)
            if output["type"] == "websocket.close":
                return cursor
            event = client.apply_text(output["text"])
            cursor = event.get("seq") or event.get("id") or cursor
            if event["type"] == stop:
                return cursor


async def read_for(communicator, client: LiveClient, seconds: float) -> int:
    """Apply what arrives for `seconds`; returns the last `seq` seen (0: none)."""
    cursor = 0
    deadline = time.monotonic() + seconds
    while deadline > time.monotonic():
        # Not receive_output(timeout=...): its timeout cancels the application.
        if await communicator.receive_nothing(timeout=0.05):
            continue
        output = await communicator.receive_output()
        if output["type"] == "websocket.close":
            break
        event = client.apply_text(output["text"])
        cursor = event.get("seq") or cursor
    return cursor


async def start(api, user, roadmap, content_type: str = "tutorial") -> str:
    response = await api.post(retry_url(roadmap, content_type=content_type), headers=auth(user))
    assert response.status_code == 202, response.text
    return response.json()["data"]["task_id"]


def stored_markdown(roadmap) -> str:
    content = ConceptContent.objects.get(
        roadmap=roadmap, concept__concept_id="c001", content_type="tutorial"
    )
    assert content.status == "completed", content.status
    return read_tutorial(content)


@pytest.mark.stress
async def test_every_subscriber_ends_with_the_stored_tutorial_whenever_it_subscribed(
    api, alice, make_roadmap, fake_openai
):
    fake_openai.script(ok(LONG_TUTORIAL, chunk_delay=0.02))
    roadmap = await sync_to_async(make_roadmap)(alice)
    on_roadmap = LiveClient()
    roadmap_socket, _ = await connect(f"/api/v1/ws/roadmaps/{roadmap.pk}", user=alice)

    task_id = await start(api, alice, roadmap)
    from_the_start = LiveClient()
    first_socket, _ = await connect(f"/api/v1/ws/{task_id}", user=alice)
    await read_for(first_socket, from_the_start, 0.8)

    # Subscribes mid-stream, then disconnects and reconnects twice.
    reconnecting = LiveClient()
    after = 0
    for _ in range(2):
        socket, _ = await connect(f"/api/v1/ws/{task_id}", user=alice, query=f"after={after}")
        after = await read_for(socket, reconnecting, 0.5) or after
        await socket.disconnect()
        assert reconnecting.held.get(TUTORIAL), "mid-stream, a subscriber gets the text so far"
    socket, _ = await connect(f"/api/v1/ws/{task_id}", user=alice, query=f"after={after}")

    await asyncio.gather(
        read_until(roadmap_socket, on_roadmap, stop="concept_complete"),
        read_until(first_socket, from_the_start, stop="concept_complete"),
        read_until(socket, reconnecting, stop="concept_complete"),
    )
    markdown = await sync_to_async(stored_markdown)(roadmap)
    assert len(markdown) > 100 * CHUNK_CHARS
    for client in (on_roadmap, from_the_start, reconnecting):
        assert client.held[TUTORIAL] == markdown
        assert client.deltas > 10
    assert on_roadmap.snapshots == from_the_start.snapshots == 1
    assert reconnecting.snapshots == 3  # one per subscription mid-stream
    await roadmap_socket.disconnect()


@pytest.mark.stress
async def test_deltas_are_coalesced_to_one_per_pair_per_100_ms(
    api, alice, make_roadmap, fake_openai
):
    # 200 chunks of 40 characters over about 2 s: 20 changes, not 200.
    fake_openai.script(ok(LONG_TUTORIAL, chunk_delay=0.01))
    roadmap = await sync_to_async(make_roadmap)(alice)
    task_id = await start(api, alice, roadmap)
    client = LiveClient()
    socket, _ = await connect(f"/api/v1/ws/{task_id}", user=alice)
    await read_until(socket, client, stop="concept_complete")

    assert client.held[TUTORIAL] == await sync_to_async(stored_markdown)(roadmap)
    chunks = len(LONG_TUTORIAL) // CHUNK_CHARS
    assert client.snapshots + client.deltas < chunks / 3


@pytest.mark.stress
async def test_a_reask_starts_the_text_over_with_a_snapshot_at_offset_0(
    api, alice, make_roadmap, fake_openai
):
    # The first answer streams, then is unusable (no summary paragraph): re-asked.
    fake_openai.script(
        ok("# Only a title\n\n" + "- a list, no prose\n" * 20, chunk_delay=0.05),
        ok(VALID_TUTORIAL, chunk_delay=0.05),
    )
    roadmap = await sync_to_async(make_roadmap)(alice)
    task_id = await start(api, alice, roadmap)
    client = LiveClient()
    socket, _ = await connect(f"/api/v1/ws/{task_id}", user=alice)
    await read_until(socket, client, stop="concept_complete")

    assert len(fake_openai.requests) == 2
    assert client.snapshots == 2
    assert client.held[TUTORIAL] == await sync_to_async(stored_markdown)(roadmap)


def draft_url(roadmap, content_type: str = "tutorial") -> str:
    return f"/api/v1/roadmaps/{roadmap.pk}/concepts/c001/{content_type}/draft"


@pytest.mark.stress
async def test_the_draft_serves_the_text_so_far_while_generating_and_404_otherwise(
    api, alice, bob, make_roadmap, fake_openai
):
    fake_openai.script(ok(LONG_TUTORIAL, chunk_delay=0.02))
    roadmap = await sync_to_async(make_roadmap)(alice)
    pending = await api.get(draft_url(roadmap), headers=auth(alice))
    assert pending.status_code == 404 and pending.json()["status"] == "pending"

    task_id = await start(api, alice, roadmap)
    assert (await api.get(draft_url(roadmap), headers=auth(bob))).status_code == 404
    drafts = []  # three polls, once the first token has arrived
    while len(drafts) < 3:
        await asyncio.sleep(0.4)
        response = await api.get(draft_url(roadmap), headers=auth(alice))
        assert response.status_code == 200, response.text
        if response.json()["offset"] or drafts:
            drafts.append(response.json())
    socket, _ = await connect(f"/api/v1/ws/{task_id}", user=alice)
    await read_until(socket, LiveClient(), stop="concept_complete")

    markdown = await sync_to_async(stored_markdown)(roadmap)
    assert [d["offset"] for d in drafts] == sorted(d["offset"] for d in drafts)
    assert drafts[-1]["offset"] > drafts[0]["offset"] > 0
    for draft in drafts:
        assert draft["status"] == "generating" and draft["task_id"] == task_id
        assert draft["provider"] == "openai" and draft["model"] == "gpt-test"
        assert draft["offset"] == len(draft["text"]) and markdown.startswith(draft["text"])
    done = await api.get(draft_url(roadmap), headers=auth(alice))
    assert done.status_code == 404 and done.json()["status"] == "completed"


async def test_offsets_count_code_points_for_chinese_and_emoji(
    api, alice, make_roadmap, fake_openai
):
    text = "# 钩子 🎣 入门\n\n" + "状态与副作用 🚀 让函数组件更强大。" * 60 + "\n"
    # About 28 chunks over 1.4 s: several coalesced changes reach a socket that
    # subscribes after the start's response (over 0.3 s, one could be all).
    fake_openai.script(ok(text, chunk_delay=0.05))
    roadmap = await sync_to_async(make_roadmap)(alice)
    task_id = await start(api, alice, roadmap)
    client = LiveClient()
    socket, _ = await connect(f"/api/v1/ws/{task_id}", user=alice)
    await read_until(socket, client, stop="concept_complete")

    assert client.held[TUTORIAL] == await sync_to_async(stored_markdown)(roadmap) == text
    assert client.deltas > 1


@pytest.mark.stress
async def test_cancel_mid_stream_closes_the_provider_connection_and_ends_the_live_text(
    api, alice, make_roadmap, fake_openai
):
    fake_openai.script(ok(LONG_TUTORIAL, chunk_delay=0.05))  # about 10 s
    roadmap = await sync_to_async(make_roadmap)(alice)
    task_id = await start(api, alice, roadmap)
    client = LiveClient()
    socket, _ = await connect(f"/api/v1/ws/{task_id}", user=alice)
    await read_for(socket, client, 1.0)
    await socket.disconnect()
    assert client.deltas > 0

    cancel = await api.post(f"/api/v1/tasks/{task_id}/cancel", headers=auth(alice))
    cancelled_at = time.monotonic()
    assert cancel.status_code == 202
    async with asyncio.timeout(5):
        while not fake_openai.closed_by_client:
            await asyncio.sleep(0.02)
    assert fake_openai.closed_by_client[0] - cancelled_at < 1.0

    after_cancel = LiveClient()
    socket, _ = await connect(f"/api/v1/ws/{task_id}", user=alice)
    await read_until(socket, after_cancel, stop="task_complete")
    await read_for(socket, after_cancel, 0.5)
    assert after_cancel.snapshots == after_cancel.deltas == 0
    assert (await api.get(draft_url(roadmap), headers=auth(alice))).status_code == 404


@pytest.fixture
def live_store_in(settings):
    """Point the live store at a given Redis for one test."""

    def point(url: str) -> None:
        settings.NOTIFICATIONS_LIVE_REDIS_URL = url
        live_store.store.cache_clear()
        live_store.store()

    yield point
    live_store.store.cache_clear()


@pytest.mark.stress
async def test_redis_stopping_mid_stream_stops_the_live_text_not_the_generation(
    api, alice, make_roadmap, fake_openai, live_store_in, tmp_path, caplog
):
    """I6 for live content: the live store (Redis) stops while the tutorial
    streams; live text stops, and the generation completes and is stored."""
    fake_openai.script(ok(LONG_TUTORIAL, chunk_delay=0.03))  # about 6 s
    roadmap = await sync_to_async(make_roadmap)(alice)
    with private_redis(tmp_path) as redis_server:
        live_store_in(redis_server.url)
        task_id = await start(api, alice, roadmap)
        client = LiveClient()
        socket, _ = await connect(f"/api/v1/ws/{task_id}", user=alice)
        await read_for(socket, client, 1.5)
        assert client.deltas > 0, "live text flows while the store is up"
        await asyncio.to_thread(redis_server.stop)
        await read_until(socket, client, stop="concept_complete")

    markdown = await sync_to_async(stored_markdown)(roadmap)
    assert markdown == LONG_TUTORIAL.strip() + "\n"
    held = client.held[TUTORIAL]
    assert markdown.startswith(held) and len(held) < len(markdown)
    assert any("Live content of" in r.getMessage() for r in caplog.records)


@pytest.mark.stress
@pytest.mark.parametrize(
    ("content_type", "key", "answer"),
    [("resources", "items", VALID_RESOURCES), ("quiz", "questions", VALID_QUIZ)],
)
async def test_items_arrive_one_by_one_and_end_equal_to_the_stored_ones(
    api, alice, make_roadmap, fake_openai, content_type, key, answer
):
    many = {key: [dict(item) for item in answer[key] * 4]}  # 8 items, 40-odd chunks, over about 3 s
    if content_type == "quiz":
        for number, question in enumerate(many[key], start=1):
            question["question_id"] = f"q{number}"
    fake_openai.script(ok(many, chunk_delay=0.08))
    roadmap = await sync_to_async(make_roadmap)(alice)
    task_id = await start(api, alice, roadmap, content_type=content_type)
    client = LiveClient()
    socket, _ = await connect(f"/api/v1/ws/{task_id}", user=alice)
    await read_for(socket, client, 1.5)
    draft = (await api.get(draft_url(roadmap, content_type), headers=auth(alice))).json()
    assert "text" not in draft and draft["offset"] == len(draft["items"])
    # Subscribed mid-stream: the items so far, then the rest.
    later = LiveClient()
    second, _ = await connect(f"/api/v1/ws/roadmaps/{roadmap.pk}", user=alice)
    await asyncio.gather(
        read_until(socket, client, stop="concept_complete"),
        read_until(second, later, stop="concept_complete"),
    )

    content = await ConceptContent.objects.aget(roadmap=roadmap, content_type=content_type)
    stored = content.payload[key]
    assert len(stored) == 8
    for follower in (client, later):
        assert follower.held[("c001", content_type)] == stored
    assert client.deltas >= 3  # items came as they were completed, not all at the end
    await second.disconnect()
