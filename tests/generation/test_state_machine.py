"""The state machine's own tests: fencing by attempt id (I4), take-overs, lease
renewal racing the sweeper, and the order of terminal writes. They drive the
transitions the runner makes (begin, heartbeat, complete) one at a time."""

import contextlib
import socket
import threading

import pytest
from django.db import connection, transaction

from generation import engine, liveness, runner, services
from generation.errors import WorkerLost
from generation.models import GenerationItem
from generation.schemas import TutorialDraft
from notifications.models import Event
from tests.support.lifecycle import expire_lease, retry, tutorial_of

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def roadmap(alice, make_roadmap):
    return make_roadmap(alice, concepts=2)


def test_late_result_of_superseded_attempt_is_ignored(roadmap, no_runner):
    """I4: attempt A stalls, its lease expires, attempt B takes over; A's late
    result must not overwrite B's state."""
    first = retry(roadmap)
    run_a = runner.begin_item(item_id=GenerationItem.objects.get(task=first).pk)
    expire_lease(tutorial_of(roadmap))  # A's lease runs out without a heartbeat

    second = retry(roadmap)  # take-over of an expired generation
    run_b = runner.begin_item(item_id=GenerationItem.objects.get(task=second).pk)
    draft = TutorialDraft(title="Late", summary="from A", markdown="# Late A")
    assert runner.complete_item(run_a, draft=draft, model_name="a") is False
    assert liveness.heartbeat([run_a], renewing=[run_a]) == set()

    content = tutorial_of(roadmap)
    assert content.status == "generating" and content.attempt_id == run_b.attempt_id
    assert content.version == 0 and content.title == ""
    assert runner.complete_item(
        run_b, draft=TutorialDraft(title="B", summary="s", markdown="# B"), model_name="b"
    )
    content.refresh_from_db()
    assert (content.status, content.version, content.title) == ("completed", 1, "B")
    first.refresh_from_db()
    assert first.status != "running"


def test_admin_reset_fences_the_running_attempt_and_closes_its_task(roadmap, no_runner):
    task = retry(roadmap)
    run = runner.begin_item(item_id=GenerationItem.objects.get(task=task).pk)

    assert services.reset_status(content=tutorial_of(roadmap), status="pending")

    assert liveness.heartbeat([run], renewing=[run]) == set()
    assert (
        runner.complete_item(
            run, draft=TutorialDraft(title="t", summary="s", markdown="m"), model_name="x"
        )
        is False
    )
    assert tutorial_of(roadmap).status == "pending"
    task.refresh_from_db()
    assert task.status == "cancelled" and task.finished_at is not None
    topic = f"roadmap-{roadmap.pk}"
    changed = Event.objects.get(topic=topic, type="status_changed").body
    assert (changed["previous_status"], changed["status"]) == ("generating", "pending")


def test_take_over_of_a_dead_attempt_ends_its_task(roadmap, no_runner):
    """I3: the superseded attempt's worker is gone; its task must still finish and
    its stream close, or it would stay `running` forever."""
    dead = retry(roadmap)
    runner.begin_item(item_id=GenerationItem.objects.get(task=dead).pk)
    expire_lease(tutorial_of(roadmap))

    fresh = retry(roadmap)

    dead.refresh_from_db()
    assert dead.status == "failed" and dead.finished_at is not None
    final = Event.objects.filter(stream=dead.pk).order_by("seq").last()
    assert final.type == "concept_failed" and final.final is True
    assert final.body["error"] == str(WorkerLost.public_message)
    assert GenerationItem.objects.get(task=fresh).previous_status == "failed"


def test_sweep_never_fails_a_lease_renewed_while_it_waited(roadmap, no_runner):
    """I3 without false positives: the sweeper read an expired lease, then waited
    for the row while another process renewed it; the renewal wins."""
    task = retry(roadmap)
    expire_lease(tutorial_of(roadmap))
    renewed, read_stale, go, results = threading.Event(), threading.Event(), threading.Event(), {}

    def renew() -> None:
        with transaction.atomic():
            results["renewed"] = liveness.renew_queued(enqueued_since=task.created_at)
            renewed.set()
            go.wait(5)  # hold the row until the sweep has read it as expired
        connection.close()

    def signal_after_the_first_query(execute, sql, params, many, context):
        try:
            return execute(sql, params, many, context)
        finally:
            read_stale.set()

    def sweep() -> None:
        # The sweep's first query reads the expired leases (the renewal is not
        # committed yet); its next statements wait for the renewer's lock.
        with connection.execute_wrapper(signal_after_the_first_query):
            results["recovered"] = services.recover_stale()
        connection.close()

    renewer, sweeper = threading.Thread(target=renew), threading.Thread(target=sweep)
    renewer.start()
    try:
        assert renewed.wait(5), "the renewer never renewed"
        sweeper.start()
        assert read_stale.wait(5), "the sweep never read the leases"
    finally:  # neither thread outlives the test, whatever failed
        go.set()
        renewer.join(10)
        if sweeper.ident is not None:
            sweeper.join(10)
    assert not renewer.is_alive() and not sweeper.is_alive()

    assert results == {"renewed": 1, "recovered": 0}
    assert tutorial_of(roadmap).status == "generating"


@pytest.fixture
def black_hole_redis():
    """A TCP server that accepts and never answers: a Redis that hangs."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError, OSError):
                accepted.append(server.accept()[0])

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"redis://127.0.0.1:{server.getsockname()[1]}/0"
    stop.set()
    thread.join(2)
    for conn in accepted:
        conn.close()
    server.close()


async def test_failure_is_recorded_even_when_publishing_it_is_slow(
    roadmap, no_runner, fake_openai, black_hole_redis, settings, monkeypatch
):
    """The heartbeat must stop before the terminal write: otherwise, while the
    failure's publish waits on a hanging layer, a beat sees the pair already moved
    on, takes it for fencing and cancels the run mid-write."""
    from asgiref.sync import sync_to_async

    from notifications import services as notification_services
    from tests.support.fake_openai import error

    settings.GENERATION_LEASE_SECONDS = 0.2  # a beat every 50 ms
    # Each publish gives up on the hanging layer after five beats, not the usual 2 s.
    monkeypatch.setattr(notification_services, "PUBLISH_TIMEOUT_SECONDS", 0.25)
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [black_hole_redis]},
        }
    }
    fake_openai.script(error(400))

    def start():
        task = retry(roadmap)
        return runner.begin_item(item_id=GenerationItem.objects.get(task=task).pk)

    run = await engine.in_worker_thread(start)()
    await runner._execute(run)  # returns normally: not cancelled by its own heartbeat

    content = await sync_to_async(tutorial_of)(roadmap)
    assert content.status == "failed"
