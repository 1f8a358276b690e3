"""The distributed mode for real (DESIGN §9): PostgreSQL, Redis, Celery
worker processes and two daphne processes, all started here as subprocesses.

The web processes enqueue to Celery (TASK_BACKEND=celery in their environment), so
this test process never enqueues: it only creates users and roadmaps (committed,
transaction=True, so the subprocesses see them), calls the HTTP and WebSocket APIs
of the servers, and reads the database the workers write."""

import asyncio
import contextlib
import json
import time
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import websockets
from asgiref.sync import sync_to_async
from django.db import connections
from prometheus_client.parser import text_string_to_metric_families

from generation import services
from generation.errors import WorkerLost
from generation.models import GenerationItem, GenerationTask
from generation.tutorial_files import read_tutorial
from notifications.models import Event
from roadmaps.models import ConceptContent
from tests.conftest import auth
from tests.support import processes
from tests.support.celery_workers import Stack, running_stack
from tests.support.fake_openai import FAKE_API_KEY, LONG_TUTORIAL, ok
from tests.support.lifecycle import (
    assert_coherent_stream,
    stored_stream,
    wait_until,
    wait_until_finished,
)
from tests.support.live import LiveClient

pytestmark = [
    pytest.mark.celery,
    pytest.mark.postgres,
    pytest.mark.redis,
    pytest.mark.django_db(transaction=True),
]


@pytest.fixture
def start_stack(transactional_db, redis_url, tmp_path):
    """Start daphne servers and Celery workers against this test's database (SQLite
    in the embedded CI pass, PostgreSQL in the distributed one); all of them stop
    before the database is flushed."""
    with ExitStack() as stacks:

        def start(**options) -> Stack:
            return stacks.enter_context(
                running_stack(
                    database_url=processes.test_database_url(),
                    redis_url=redis_url,
                    log_dir=tmp_path / "logs",
                    media_root=tmp_path / "media",
                    **options,
                )
            )

        yield start


def start_batch(server_url: str, user, roadmap, count: int) -> str:
    response = httpx.post(
        f"{server_url}/api/v1/roadmaps/{roadmap.pk}/concepts/retry-batch",
        json={"content_types": ["tutorial"], "statuses": ["pending"]},
        headers=auth(user),
        timeout=10,
    )
    assert response.status_code == 202, response.text
    assert response.json()["data"]["total"] == count
    return response.json()["data"]["task_id"]


async def retry_tutorial(server_url: str, user, roadmap) -> str:
    """POST the tutorial retry of the roadmap's first concept to one server; its task id."""
    async with httpx.AsyncClient(base_url=server_url, timeout=10) as client:
        response = await client.post(
            f"/api/v1/roadmaps/{roadmap.pk}/concepts/c001/tutorial/retry", headers=auth(user)
        )
    assert response.status_code == 202, response.text
    return response.json()["data"]["task_id"]


@pytest.fixture
def one_concept_roadmap(alice, make_roadmap):
    return make_roadmap(alice, concepts=1)


@pytest.fixture
async def closes_thread_connections():
    """ORM calls of an async test run in asgiref's sync thread; close its connection,
    or PostgreSQL refuses to drop the test database at the end of the run."""
    yield
    await sync_to_async(connections.close_all)()


async def test_retry_posted_to_one_server_reaches_a_websocket_client_on_the_other(
    start_stack, alice, one_concept_roadmap, closes_thread_connections
):
    # A second and a half per tutorial: the client is subscribed while the worker
    # still streams, so it gets live progress as well as the stored events.
    stack = await sync_to_async(start_stack)(OFFLINE_PROVIDER_DELAY_SECONDS=1.5)
    server_a, server_b = stack.servers
    roadmap = one_concept_roadmap

    task_id = await retry_tutorial(server_b.url, alice, roadmap)

    received = []
    ws_url = server_a.url.replace("http://", "ws://") + f"/api/v1/ws/{task_id}?token={alice.token}"
    async with websockets.connect(ws_url, open_timeout=10) as socket:
        async with asyncio.timeout(30):
            async for message in socket:
                received.append(json.loads(message))
    assert socket.close_code == 1000

    stored = [event for event in received if event["seq"] is not None]
    assert [event["seq"] for event in stored] == [1, 2]
    assert [event["type"] for event in stored] == ["concept_start", "concept_complete"]
    # concept_progress is live-only (never stored): it can only have come from the
    # worker process through Redis to daphne A.
    live = [event for event in received if event["type"] == "concept_progress"]
    assert live and all(event["seq"] is None for event in live)
    assert all(event["task_id"] == task_id for event in received)
    assert stored[1]["data"]["content_version"] == 1

    store = await sync_to_async(stored_stream)(task_id)
    assert [event.id for event in store] == [event["id"] for event in stored]
    content = await ConceptContent.objects.aget(roadmap=roadmap, content_type="tutorial")
    assert (content.status, content.version, content.model) == ("completed", 1, "offline")
    # A worker logs the task's success just after the commit read above.
    await asyncio.to_thread(
        wait_until,
        lambda: sum(worker.succeeded_tasks() for worker in stack.workers) == 1,
        10,
        "the worker did not log the success",
    )


def test_batch_of_50_is_spread_over_two_workers(start_stack, alice, make_roadmap):
    stack = start_stack(OFFLINE_PROVIDER_DELAY_SECONDS=0.3, GENERATION_CONCURRENCY=2)
    roadmap = make_roadmap(alice, concepts=50)

    task_id = start_batch(stack.servers[1].url, alice, roadmap, 50)
    task = wait_until_finished(task_id, timeout=90)

    assert (task.status, task.completed, task.failed) == ("completed", 50, 0)
    statuses = ConceptContent.objects.filter(roadmap=roadmap, content_type="tutorial")
    assert set(statuses.values_list("status", flat=True)) == {"completed"}
    events = assert_coherent_stream(task)
    assert len(events) == 50 * 2 + 1
    # Each worker's own log names the generations it finished; a worker logs a
    # task's success just after the commit the database already shows.
    wait_until(
        lambda: sum(worker.succeeded_tasks() for worker in stack.workers) == 50,
        timeout=10,
        message="the workers did not log 50 successes",
    )
    done_by = [worker.succeeded_tasks() for worker in stack.workers]
    assert all(count > 0 for count in done_by), done_by


def test_killed_worker_mid_batch_ends_every_pair_within_the_lease(start_stack, alice, make_roadmap):
    lease, concurrency, delay = 3.0, 2, 1.0
    sweep = min(lease / 2, 30.0)  # generation.liveness.sweep_interval() in the workers
    stack = start_stack(
        servers=1,
        OFFLINE_PROVIDER_DELAY_SECONDS=delay,
        GENERATION_CONCURRENCY=concurrency,
        GENERATION_LEASE_SECONDS=lease,
        METRICS_TOKEN="metrics-token",
    )
    doomed, survivor = stack.workers
    roadmap = make_roadmap(alice, concepts=16)
    task_id = start_batch(stack.servers[0].url, alice, roadmap, 16)

    # Kill the doomed worker during its second round of generations, once each of
    # the two workers' threads holds an item: after the doomed worker finished a
    # generation, that means its threads took their next ones.
    deadline = time.monotonic() + 30
    while doomed.succeeded_tasks() < 1:
        assert time.monotonic() < deadline, "the worker never finished a generation"
        time.sleep(0.05)
    running = GenerationItem.objects.filter(task_id=task_id, state="running")
    while running.count() < 2 * concurrency:
        assert time.monotonic() < deadline, "the workers' threads never all held an item"
        time.sleep(0.05)
    assert stack.waiting_messages() > 0, "the batch ended before the kill; make it longer"
    doomed.kill()
    killed_at = datetime.now(UTC)
    finished_by_doomed = doomed.succeeded_tasks()

    # Items queued behind the kill keep their leases while their messages wait in
    # Redis; once the queue is empty, an item still queued has lost its message.
    queue_empty_at = None
    deadline = time.monotonic() + 90
    while GenerationTask.objects.get(pk=task_id).status == "running":
        if queue_empty_at is None and stack.waiting_messages() == 0:
            queue_empty_at = datetime.now(UTC)
        assert time.monotonic() < deadline, "the batch never finished after the kill"
        time.sleep(0.1)
    task = GenerationTask.objects.get(pk=task_id)

    contents = ConceptContent.objects.filter(roadmap=roadmap, content_type="tutorial")
    assert not contents.filter(status="generating").exists()
    assert task.completed + task.failed == 16
    # At most the doomed worker's in-flight work is lost, and some was.
    assert 1 <= task.failed <= concurrency
    assert task.status == "partial"
    # Every success a worker logged is a completed pair. The converse holds only
    # for the survivor: a SIGKILL takes the doomed worker's unflushed log lines (and
    # any result committed just before it) with it, so it may have completed more.
    assert task.completed >= finished_by_doomed + survivor.succeeded_tasks()
    failed = contents.filter(status="failed")
    assert set(failed.values_list("public_error", flat=True)) == {str(WorkerLost.public_message)}
    last_renewal = max(killed_at, queue_empty_at or killed_at)
    latest_allowed = last_renewal + timedelta(seconds=lease + sweep + 2.0)
    for content in failed:
        assert content.updated_at <= latest_allowed, (content.updated_at, killed_at)
    assert not GenerationItem.objects.filter(task_id=task_id, state__in=["queued", "running"])

    events = assert_coherent_stream(task)
    failures = [event for event in events if event.type == "concept_failed"]
    assert len(failures) == task.failed and all(event.body["retryable"] for event in failures)

    # /metrics counts what both workers did, the dead one's completions included, and
    # each pair its lease failed, whichever process swept it.
    scraped = httpx.get(
        f"{stack.servers[0].url}/metrics",
        headers={"Authorization": "Bearer metrics-token"},
        timeout=10,
    )
    assert scraped.status_code == 200, scraped.text
    samples = [s for f in text_string_to_metric_families(scraped.text) for s in f.samples]
    completed = sum(
        s.value
        for s in samples
        if s.name == "roadmap_generations_total" and s.labels["outcome"] == "completed"
    )
    [expiries] = [s.value for s in samples if s.name == "roadmap_lease_expiries_total"]
    assert (completed, expiries) == (task.completed, task.failed)


def test_work_queued_behind_another_task_outlives_the_lease_but_a_lost_message_does_not(
    start_stack, alice, make_roadmap, use_task_backend
):
    lease = 2.0
    sweep = min(lease / 2, 30.0)
    stack = start_stack(
        servers=1,
        workers=1,
        OFFLINE_PROVIDER_DELAY_SECONDS=0.4,
        GENERATION_CONCURRENCY=1,
        GENERATION_LEASE_SECONDS=lease,
    )
    server = stack.servers[0]
    roadmap = make_roadmap(alice, concepts=10)
    # About 4 s of work ahead, twice the lease...
    backlog_id = start_batch(server.url, alice, roadmap, 10)
    # ...and one retry of another task waiting behind it in the queue.
    response = httpx.post(
        f"{server.url}/api/v1/roadmaps/{roadmap.pk}/concepts/c001/quiz/retry",
        headers=auth(alice),
        timeout=10,
    )
    assert response.status_code == 202, response.text
    waiting_id = response.json()["data"]["task_id"]
    # A generation whose message never reached the broker (the dummy backend
    # drops it): only the lease can end it.
    use_task_backend("django.tasks.backends.dummy.DummyBackend")
    lost = ConceptContent.objects.get(
        roadmap=roadmap, concept__concept_id="c002", content_type="quiz"
    )
    lost_id = services.retry_content(content=lost, user=alice).task.pk

    assert wait_until_finished(backlog_id, timeout=60).status == "completed"
    queue_empty_at = datetime.now(UTC)
    waiting = wait_until_finished(waiting_id, timeout=30)
    assert (waiting.status, waiting.completed) == ("completed", 1)

    lost_task = wait_until_finished(lost_id, timeout=lease + sweep + 10)
    lost.refresh_from_db()
    assert (lost_task.status, lost.status) == ("failed", "failed")
    assert lost.public_error == str(WorkerLost.public_message)
    assert lost.updated_at <= queue_empty_at + timedelta(seconds=lease + sweep + 2.0)
    assert [e.type for e in stored_stream(lost_id)] == ["concept_failed"]


def test_a_single_retry_runs_next_while_another_users_backlog_waits_in_the_broker(
    start_stack, alice, bob, make_roadmap
):
    """Fair scheduling across Celery workers (docs/decisions/0006-fair-scheduling.md):
    the broker holds units of work, the database decides which item each one runs."""
    stack = start_stack(servers=1, OFFLINE_PROVIDER_DELAY_SECONDS=0.3, GENERATION_CONCURRENCY=2)
    server = stack.servers[0]
    backlog_id = start_batch(server.url, alice, make_roadmap(alice, concepts=40), 40)
    deadline = time.monotonic() + 30
    while not Event.objects.filter(stream=backlog_id, type="concept_start").exists():
        assert time.monotonic() < deadline, "the backlog never started"
        time.sleep(0.05)

    response = httpx.post(
        f"{server.url}/api/v1/roadmaps/{make_roadmap(bob, concepts=1).pk}/concepts/c001/quiz/retry",
        headers=auth(bob),
        timeout=10,
    )
    assert response.status_code == 202, response.text
    accepted_after = Event.objects.order_by("-id").values_list("id", flat=True).first()
    retry = wait_until_finished(response.json()["data"]["task_id"], timeout=30)

    assert (retry.status, retry.completed) == ("completed", 1)
    bobs_start = Event.objects.get(stream=retry.pk, type="concept_start").pk
    # Two workers of two slots: at most the claims in flight when Bob's start
    # committed went to Alice first (first come, first served: ~36).
    overtaken = Event.objects.filter(
        stream=backlog_id, type="concept_start", id__gt=accepted_after, id__lt=bobs_start
    )
    assert overtaken.count() <= 4
    assert GenerationTask.objects.get(pk=backlog_id).status == "running"


def test_cancel_stops_a_workers_provider_request_within_a_second_and_delete_is_quiet(
    start_stack, fake_openai, alice, make_roadmap
):
    """DESIGN §5 in the distributed mode: the cancel reaches a web process, the
    worker streaming from the provider notices through the database and closes
    the connection within 1 s; the roadmap deleted right after logs no error."""
    fake_openai.default = ok(chunk_delay=0.5)  # a tutorial streamed over about 8 s
    stack = start_stack(
        servers=1,
        workers=1,
        GENERATION_PROVIDER="openai",
        OPENAI_BASE_URL=fake_openai.base_url,
        OPENAI_API_KEY=FAKE_API_KEY,
        OPENAI_MODEL="gpt-test",
    )
    server, worker = stack.servers[0], stack.workers[0]
    roadmap = make_roadmap(alice, concepts=1)
    with httpx.Client(base_url=server.url, headers=auth(alice), timeout=10) as client:
        started = client.post(f"/api/v1/roadmaps/{roadmap.pk}/concepts/c001/tutorial/retry")
        assert started.status_code == 202, started.text
        wait_until(lambda: fake_openai.in_flight > 0, timeout=30, message="no provider request")

        cancel = client.post(f"/api/v1/tasks/{started.json()['data']['task_id']}/cancel")
        cancelled_at = time.monotonic()
        deleted = client.delete(f"/api/v1/roadmaps/{roadmap.pk}/")

    assert cancel.status_code == 202 and deleted.status_code == 204
    wait_until(lambda: fake_openai.closed_by_client, timeout=5, message="the request ran on")
    stopped_after = fake_openai.closed_by_client[0] - cancelled_at
    assert stopped_after < 1.0, f"the provider request ran {stopped_after:.2f} s past the cancel"
    wait_until(lambda: worker.succeeded_tasks() == 1, timeout=10, message="the work did not end")
    assert len(fake_openai.requests) == 1
    for service in (worker, server):
        assert " ERROR" not in service.log() and "ERROR/" not in service.log(), service.log()


async def test_live_text_from_a_worker_reaches_clients_of_both_servers_exactly_once(
    start_stack, fake_openai, alice, one_concept_roadmap, closes_thread_connections
):
    """DESIGN §5 "Live content" in the distributed mode: the worker keeps the text
    so far in Redis and publishes its changes there; a client of either daphne,
    subscribed from the start or reconnecting mid-stream, ends with the stored
    Markdown, every delta following on from what it held."""
    fake_openai.default = ok(LONG_TUTORIAL, chunk_delay=0.05)  # about 10 s
    stack = await sync_to_async(start_stack)(
        workers=1,
        GENERATION_PROVIDER="openai",
        OPENAI_BASE_URL=fake_openai.base_url,
        OPENAI_API_KEY=FAKE_API_KEY,
        OPENAI_MODEL="gpt-test",
    )
    server_a, server_b = stack.servers
    roadmap = one_concept_roadmap
    task_id = await retry_tutorial(server_b.url, alice, roadmap)

    def url(server, after: int = 0) -> str:
        base = server.url.replace("http://", "ws://")
        return f"{base}/api/v1/ws/{task_id}?token={alice.token}&after={after}"

    async def follow(socket, client: LiveClient, *, for_seconds: float | None = None) -> int:
        seq = 0
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(for_seconds or 30):
                async for message in socket:
                    event = client.apply_text(message)
                    seq = event["seq"] or seq
        return seq

    from_the_start, reconnecting = LiveClient(), LiveClient()
    async with websockets.connect(url(server_a), open_timeout=10) as first:
        following = asyncio.create_task(follow(first, from_the_start))
        async with asyncio.timeout(30):  # the worker has started writing
            while not from_the_start.held.get(("c001", "tutorial")):
                await asyncio.sleep(0.05)
        after = 0
        for server in (server_b, server_a):
            async with websockets.connect(url(server, after), open_timeout=10) as socket:
                after = await follow(socket, reconnecting, for_seconds=0.7) or after
        async with websockets.connect(url(server_b, after), open_timeout=10) as socket:
            await follow(socket, reconnecting)
        await following

    content = await ConceptContent.objects.aget(roadmap=roadmap, content_type="tutorial")
    markdown = await sync_to_async(read_tutorial)(content)
    assert content.status == "completed" and len(markdown) > 4000
    for client in (from_the_start, reconnecting):
        assert client.held[("c001", "tutorial")] == markdown
        assert client.deltas > 5
    assert reconnecting.snapshots == 3
