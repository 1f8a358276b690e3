"""Infrastructure outages in the distributed mode (DESIGN I3, I6): the
database connections of the processes running a generation are killed as it
completes, and Redis (broker and channel layer) stops in the middle of a batch.

Real processes (daphne, Celery workers) against PostgreSQL and a Redis: marked
`distributed`, they run in the distributed CI pass, where a missing service fails
them (tests/conftest.py), and the embedded pass deselects them."""

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

import httpx
import psycopg
import pytest
import redis
import websockets
import websockets.sync.client

from generation.models import GenerationItem
from roadmaps.models import ConceptContent
from tests.conftest import auth
from tests.support import processes
from tests.support.celery_workers import Stack, running_stack
from tests.support.fake_openai import streaming_seconds
from tests.support.lifecycle import assert_coherent_stream, wait_until, wait_until_finished
from tests.support.redis_server import PrivateRedis, private_redis

pytestmark = [
    pytest.mark.distributed,
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.celery,
    pytest.mark.django_db(transaction=True),
]

# The processes of the stack name themselves, so the test kills their connections
# and no other (its own, other tests').
APPLICATION_NAME = "outage-stack"


def stack_database_url() -> str:
    return f"{processes.test_database_url()}?application_name={APPLICATION_NAME}"


def terminate_stack_connections() -> int:
    """pg_terminate_backend on every connection of the stack's processes."""
    with psycopg.connect(processes.test_database_url(), autocommit=True) as admin:
        rows = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            [APPLICATION_NAME],
        ).fetchall()
    return len(rows)


# --- The database connection killed as a generation completes ---------------


def start_batch(server: str, user, roadmap, statuses: list[str]) -> str:
    response = httpx.post(
        f"{server}/api/v1/roadmaps/{roadmap.pk}/concepts/retry-batch",
        json={"content_types": ["tutorial"], "statuses": statuses},
        headers=auth(user),
        timeout=10,
    )
    assert response.status_code == 202, response.text
    return response.json()["data"]["task_id"]


@pytest.mark.parametrize("engine", ["inprocess", "celery"])
def test_connections_killed_as_a_generation_completes_leave_nothing_generating(
    engine, fake_openai, redis_url, alice, make_roadmap, tmp_path
):
    """Four generations stream side by side; as the first is about to complete,
    every connection of the processes is terminated. Each pair ends completed or
    failed (none stays generating), the stream is whole, and the same processes
    then complete a second batch of the four: every thread that held a killed
    connection replaced it."""
    lease, concepts = 3.0, 4
    kills: list[int] = []
    pace = streaming_seconds(1.0)
    fake_openai.default = pace
    fake_openai.script(
        replace(pace, before_finish=lambda: kills.append(terminate_stack_connections()))
    )
    roadmap = make_roadmap(alice, concepts=concepts)
    with running_stack(
        database_url=stack_database_url(),
        redis_url=redis_url,
        log_dir=tmp_path / "logs",
        media_root=tmp_path / "media",
        servers=1,
        workers=1 if engine == "celery" else 0,
        TASK_BACKEND=engine,
        GENERATION_PROVIDER="openai",
        OPENAI_BASE_URL=fake_openai.base_url,
        OPENAI_API_KEY="sk-test",
        GENERATION_LEASE_SECONDS=lease,
        GENERATION_STALL_SECONDS=5,
    ) as stack:
        server = stack.servers[0].url
        first = start_batch(server, alice, roadmap, ["pending"])

        # Within a lease and a sweep of the kill, every pair has left generating.
        task = wait_until_finished(first, lease * 3 + 10)
        assert kills and kills[0] >= 1, "no connection of the stack was terminated"
        contents = ConceptContent.objects.filter(roadmap=roadmap, content_type="tutorial")
        assert set(contents.values_list("status", flat=True)) <= {"completed", "failed"}
        assert not GenerationItem.objects.filter(task_id=first, state__in=["queued", "running"])
        assert_coherent_stream(task)
        for content in contents.filter(status="failed"):
            assert content.public_error and "Traceback" not in content.public_error
        outcome = sorted(contents.values_list("status", flat=True))
        print(f"outage[{engine}]: {kills[0]} connections terminated; pairs ended {outcome}")

        # The processes recovered their connections: the next batch completes.
        second = start_batch(server, alice, roadmap, ["completed", "failed"])
        task = wait_until_finished(second, 30)
        logs = [service.log()[-3000:] for service in stack.servers + stack.workers]
        assert (task.status, task.completed) == ("completed", concepts), logs
        assert set(contents.values_list("status", flat=True)) == {"completed"}
        assert_coherent_stream(task)


# --- Redis stopped in the middle of a batch ----------------------------------


def stream_frames(url: str, timeout: float) -> tuple[list[dict], int | None]:
    """Every event frame of a task stream until the server closes it, and the code."""
    frames: list[dict] = []
    with websockets.sync.client.connect(url, open_timeout=10) as socket_:
        try:
            while True:
                frames.append(json.loads(socket_.recv(timeout=timeout)))
        except websockets.ConnectionClosed as closed:
            return frames, closed.rcvd.code if closed.rcvd else None


@contextmanager
def stack_on_private_redis(tmp_path, **settings) -> Iterator[tuple[PrivateRedis, Stack]]:
    """One daphne and one Celery worker on the test database and a Redis of the
    test's own, to stop and start under them."""
    with (
        private_redis(tmp_path) as redis_server,
        running_stack(
            database_url=processes.test_database_url(),
            redis_url=redis_server.url,
            log_dir=tmp_path / "logs",
            media_root=tmp_path / "media",
            servers=1,
            workers=1,
            **settings,
        ) as stack,
    ):
        yield redis_server, stack


def test_redis_stopped_mid_batch_loses_nothing(alice, make_roadmap, tmp_path):
    """Redis (broker, channel layer, cache) stops while a batch runs on a Celery
    worker, then comes back with its append-only file. The generations running
    at the stop complete and are stored; reads keep working; after the restart
    the worker takes the queued rest; the database ends right, and a client that
    lost its socket during the outage replays the missed events exactly once."""
    concepts = 8
    roadmap = make_roadmap(alice, concepts=concepts)
    with stack_on_private_redis(
        tmp_path, GENERATION_CONCURRENCY=2, OFFLINE_PROVIDER_DELAY_SECONDS=1.0
    ) as (redis_server, stack):
        server = stack.servers[0].url
        task_id = start_batch(server, alice, roadmap, ["pending"])
        ws_url = f"{server.replace('http', 'ws', 1)}/api/v1/ws/{task_id}?token={alice.token}"
        # The client reads until it has seen a first generation complete.
        last_seen = 0
        with websockets.sync.client.connect(ws_url, open_timeout=10) as client:
            while True:
                frame = json.loads(client.recv(timeout=20))
                last_seen = max(last_seen, frame["seq"] or 0)  # progress has no seq
                if frame["type"] == "concept_complete":
                    break
            # Stop while the next generations run and more wait in the queue.
            running = wait_until(
                lambda: set(
                    GenerationItem.objects.filter(task_id=task_id, state="running").values_list(
                        "pk", flat=True
                    )
                ),
                10,
                "no generation running after the first completed",
            )
            assert stack.waiting_messages() > 0, "the batch ended before the stop; make it longer"
            redis_server.stop()

        # Redis is down. What was running completes and is stored (I6)...
        wait_until(
            lambda: not GenerationItem.objects.filter(pk__in=running, state="running").exists(),
            20,
            "the generations running at the stop did not end",
        )
        assert set(
            GenerationItem.objects.filter(pk__in=running).values_list("state", flat=True)
        ) == {"completed"}
        # ...and reads don't need Redis.
        detail = httpx.get(f"{server}/api/v1/roadmaps/{roadmap.pk}/", headers=auth(alice))
        assert detail.status_code == 200, detail.text

        redis_server.start()
        task = wait_until_finished(task_id, 60)
        assert (task.status, task.completed, task.failed) == ("completed", concepts, 0)
        contents = ConceptContent.objects.filter(roadmap=roadmap, content_type="tutorial")
        assert set(contents.values_list("status", flat=True)) == {"completed"}
        events = assert_coherent_stream(task)

        # The client reconnects from the last event it saw and gets the rest, once.
        frames, code = stream_frames(f"{ws_url}&after={last_seen}", timeout=10)
        replayed = [frame["seq"] for frame in frames if frame["seq"] is not None]
        assert replayed == [e.seq for e in events[last_seen:]]
        assert code == 1000
        print(
            f"outage[redis]: {len(running)} generations running at the stop completed; "
            f"{task.completed}/{concepts} completed; {len(frames)} events replayed "
            f"after seq {last_seen}"
        )


def orphan_one_waiting_message(redis_url: str, queue: str) -> str:
    """Take a waiting message as a worker's kombu does (into the `unacked` hash)
    and let no worker hold it: what a worker leaves behind when it loses the
    broker with a message taken and not started. Returns its delivery tag."""
    client = redis.Redis.from_url(redis_url)
    raw = client.rpop(queue)
    assert raw is not None, "no message waited; make the batch longer"
    message = json.loads(raw)
    tag, delivery = message["properties"]["delivery_tag"], message["properties"]["delivery_info"]
    client.hset(
        "unacked", tag, json.dumps([message, delivery["exchange"], delivery["routing_key"]])
    )
    client.zadd("unacked_index", {tag: time.time()})
    return tag


def test_messages_taken_before_redis_stopped_run_after_it_restarts(alice, make_roadmap, tmp_path):
    """A message a worker had taken but not started when Redis stopped would wait in
    Redis's `unacked` hash for the visibility timeout (1 h) and its item fail after
    the lease: after reconnecting, the worker puts it back, and the batch completes
    long before the lease."""
    roadmap = make_roadmap(alice, concepts=3)
    with stack_on_private_redis(
        tmp_path,
        GENERATION_CONCURRENCY=1,
        OFFLINE_PROVIDER_DELAY_SECONDS=1.0,
        GENERATION_LEASE_SECONDS=60,
    ) as (redis_server, stack):
        task_id = start_batch(stack.servers[0].url, alice, roadmap, ["pending"])
        wait_until(
            lambda: GenerationItem.objects.filter(task_id=task_id, state="running").exists(),
            10,
            "the batch did not start",
        )
        orphan = orphan_one_waiting_message(redis_server.url, stack.queue)
        redis_server.stop()
        redis_server.start()

        task = wait_until_finished(task_id, 20)
        assert (task.status, task.completed, task.failed) == ("completed", 3, 0)
        # The copy put back keeps the orphan's delivery tag, and it is in `unacked`
        # again while a worker runs it: the item's commit ends the task a moment
        # before the worker acknowledges that copy. Without the return it would stay
        # there for the visibility timeout (1 h).
        client = redis.Redis.from_url(redis_server.url)
        wait_until(
            lambda: not client.hexists("unacked", orphan),
            10,
            "the orphaned message was never run and acknowledged",
        )
        assert "Returned" in stack.workers[0].log()
