"""The generation lifecycle's invariants, exercised through its services (I1-I3):
starts, lost messages, killed runners, take-overs, storage failures. The state
machine's own fencing tests are in test_state_machine.py."""

import signal
import sqlite3
import subprocess
from datetime import timedelta

import httpx
import pytest
from django.core.management import call_command
from django.db import connection, transaction
from django.utils import timezone

from generation import engine, services
from generation.errors import AlreadyGenerating, WorkerLost
from generation.models import GenerationItem, GenerationTask, ItemState, TaskKind
from notifications.models import Event
from tests.support.daphne_server import daphne_server
from tests.support.lifecycle import event_types, expire_lease, retry, tutorial_of, wait_until
from tests.support.processes import manage, process_env

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def roadmap(alice, make_roadmap):
    return make_roadmap(alice, concepts=2)


def test_start_is_a_conditional_update_not_a_python_check(roadmap, no_runner):
    """I1: two starts from the same stale read; the database lets only one through."""
    stale = tutorial_of(roadmap)
    first = retry(roadmap, stale)

    assert stale.status == "pending"  # the Python object still says startable
    with pytest.raises(AlreadyGenerating) as busy:
        retry(roadmap, stale)
    assert busy.value.task_id == first.pk
    assert GenerationTask.objects.count() == 1


def test_work_is_enqueued_only_when_the_start_commits(roadmap, use_task_backend):
    """I2: a start rolled back with its transaction enqueues nothing."""
    use_task_backend("django.tasks.backends.dummy.DummyBackend")
    from django.tasks import default_task_backend

    with pytest.raises(RuntimeError), transaction.atomic():
        retry(roadmap)
        assert default_task_backend.results == []  # not before commit either
        raise RuntimeError("request failed after the start")

    assert default_task_backend.results == []
    assert tutorial_of(roadmap).status == "pending"
    assert not GenerationTask.objects.exists()

    retry(roadmap)
    [result] = default_task_backend.results  # one unit of work per queued item
    assert result.task.name == "generate_content"


def test_lost_message_ends_failed_after_the_lease(roadmap, no_runner):
    """I3: nobody ever runs the item; the sweeper fails it once the lease expires."""
    task = retry(roadmap)
    assert services.recover_stale() == 0  # the lease is still running

    expire_lease(tutorial_of(roadmap))
    call_command("recover_stale")

    content = tutorial_of(roadmap)
    assert content.status == "failed"
    assert content.public_error == str(WorkerLost.public_message)
    task.refresh_from_db()
    assert task.status == "failed" and task.finished_at is not None
    assert event_types(task.pk) == ["concept_failed"]


def test_engine_sweeps_stale_rows_by_itself(roadmap, no_runner, settings):
    """I3: the periodic maintenance of the in-process engine, not a manual call."""
    settings.GENERATION_LEASE_SECONDS = 0.4
    retry(roadmap)
    engine.start_maintenance(engine._private())  # as an enqueue outside a server does

    content = wait_until(
        lambda: (c := tutorial_of(roadmap)).status == "failed" and c,
        timeout=5,
        message="the engine's maintenance did not fail the expired pair",
    )
    assert content.public_error == str(WorkerLost.public_message)


def test_the_engine_signals_each_unit_of_work_like_djangos_backends(roadmap, use_task_backend):
    """task_enqueued, task_started, task_finished, in that order, as Django's own
    backends send them; the finished result says the work succeeded."""
    from django.tasks.signals import task_enqueued, task_finished, task_started

    use_task_backend("generation.engine.InProcessBackend")
    seen: list[tuple[str, str]] = []

    def recorder(name: str):
        def record(sender, task_result, **kwargs) -> None:
            seen.append((name, task_result.status))

        return record

    receivers = {
        task_enqueued: recorder("enqueued"),
        task_started: recorder("started"),
        task_finished: recorder("finished"),
    }
    for signal_, receiver in receivers.items():
        signal_.connect(receiver)
    try:
        retry(roadmap)
        assert engine.wait_until_idle(timeout=10)
    finally:
        for signal_, receiver in receivers.items():
            signal_.disconnect(receiver)
    assert seen == [("enqueued", "READY"), ("started", "RUNNING"), ("finished", "SUCCESSFUL")]
    assert tutorial_of(roadmap).status == "completed"


def test_a_server_sweeps_stale_generations_by_itself(roadmap, no_runner, settings, tmp_path):
    """I3: a daphne with the in-process engine fails what a dead process left
    `generating`, at start and then periodically, with nobody calling the sweep."""
    settings.GENERATION_LEASE_SECONDS = 1.0
    retry(roadmap)  # enqueued to nobody: the process that took it is gone
    assert tutorial_of(roadmap).status == "generating"

    with daphne_server(tmp_path, GENERATION_LEASE_SECONDS="1.0"):
        content = wait_until(
            lambda: (c := tutorial_of(roadmap)).status == "failed" and c,
            timeout=10,
            message="the server did not fail the stale pair",
        )

    assert content.public_error == str(WorkerLost.public_message)
    assert event_types(GenerationTask.objects.get().pk) == ["concept_failed"]


def test_killed_runner_ends_failed_within_the_lease(roadmap):
    """I3: a real process running the generation is killed with SIGKILL."""
    lease = 2.0
    content = tutorial_of(roadmap)
    script = (
        "from generation import services, engine;"
        "from roadmaps.models import ConceptContent as C;"
        f"c = C.objects.select_related('roadmap', 'concept').get(pk={content.pk});"
        "services.start_generation(roadmap=c.roadmap, user=c.roadmap.owner, kind='retry',"
        " contents=[c]);"
        "engine.wait_until_idle()"
    )
    runner = manage(
        "shell",
        "-c",
        script,
        env=process_env(OFFLINE_PROVIDER_DELAY_SECONDS=60, GENERATION_LEASE_SECONDS=lease),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(
            lambda: GenerationItem.objects.filter(state=ItemState.RUNNING).exists(),
            timeout=30,
            message="the runner never began the item",
        )
        # Killed mid-call: a 60 s answer is still streaming, whatever its
        # heartbeats renewed before the kill.
        runner.send_signal(signal.SIGKILL)
        runner.wait(10)
        killed_at = timezone.now()
    finally:
        runner.kill()

    # The dead attempt's lease ends at most a lease after the kill (it was set or
    # renewed before it); the sweep fails the pair once it has run out, not before.
    lease_at_kill = tutorial_of(roadmap).lease_expires_at
    assert lease_at_kill is not None, "the pair ended before the kill"
    assert lease_at_kill <= killed_at + timedelta(seconds=lease)
    wait_until(
        lambda: services.recover_stale() or tutorial_of(roadmap).status == "failed",
        timeout=lease * 3,
        message="the killed runner's pair was not failed",
    )
    content = tutorial_of(roadmap)
    assert content.status == "failed"
    assert content.updated_at >= lease_at_kill
    task = GenerationTask.objects.get()
    assert event_types(task.pk) == ["concept_start", "concept_failed"]
    failed = Event.objects.get(stream=task.pk, type="concept_failed").body
    assert failed["error"] == str(WorkerLost.public_message) and failed["retryable"] is True


def test_generating_pair_with_live_lease_cannot_be_taken_over(roadmap, no_runner):
    task = retry(roadmap)
    with pytest.raises(AlreadyGenerating):
        retry(roadmap)
    assert tutorial_of(roadmap).task_id == task.pk


def test_cancel_after_a_take_over_restores_failed_not_generating(roadmap, no_runner):
    retry(roadmap)
    expire_lease(tutorial_of(roadmap))
    batch = services.start_generation(
        roadmap=roadmap, user=roadmap.owner, kind=TaskKind.BATCH, contents=[tutorial_of(roadmap)]
    ).task

    services.cancel_task(task_id=batch.pk, user=roadmap.owner)

    content = tutorial_of(roadmap)
    assert content.status == "failed" and content.attempt_id is None
    batch.refresh_from_db()
    assert batch.status == "cancelled"


def test_storage_failure_while_saving_fails_at_once_not_after_the_lease(
    roadmap, settings, tmp_path
):
    """I3: the result cannot be stored (the media root is not a directory)."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    settings.MEDIA_ROOT = blocker
    settings.GENERATION_LEASE_SECONDS = 600
    task = retry(roadmap)

    assert engine.wait_until_idle(timeout=10)

    content = tutorial_of(roadmap)
    assert content.status == "failed" and content.version == 0
    assert str(blocker) not in content.public_error
    assert event_types(task.pk) == ["concept_start", "concept_failed"]


# A hang lasts forever; anything well past the engine's own bound means one.
EXIT_WITHIN_SECONDS = engine.SERVER_SHUTDOWN_SECONDS + 15


def start_generating(server, alice, roadmap) -> None:
    response = httpx.post(
        f"{server.http_url}/api/v1/roadmaps/{roadmap.pk}/generate",
        headers={"Authorization": f"Token {alice.token}"},
        timeout=10,
    )
    assert response.status_code == 202, response.text


def assert_exits(server) -> None:
    try:
        server.process.wait(EXIT_WITHIN_SECONDS)
    except subprocess.TimeoutExpired:
        pytest.fail(f"daphne still running {EXIT_WITHIN_SECONDS} s after SIGTERM")
    assert server.process.returncode == 0, server.output()


def test_a_server_stopped_mid_batch_exits_promptly(alice, make_roadmap, tmp_path):
    """SIGTERM while a batch is starting: the engine's work is cancelled before
    the loop stops, so no thread is left waiting for it (a publish after commit
    calls back into the loop) and the process exits instead of hanging until it
    is killed. The pairs left generating are the lease's to fail (I3)."""
    roadmap = make_roadmap(alice, concepts=40)
    with daphne_server(tmp_path, OFFLINE_PROVIDER_DELAY_SECONDS="5") as server:
        start_generating(server, alice, roadmap)
        server.process.send_signal(signal.SIGTERM)
        assert_exits(server)


def test_a_server_stopped_while_its_writes_wait_for_a_lock_exits(alice, make_roadmap, tmp_path):
    """The worse case: engine threads are still inside a database call when the
    wind-down's wait ends (another writer holds SQLite's lock past it) and commit
    after the loop stopped. Their publishes are skipped (the store has the events)
    instead of waiting for the stopped loop forever."""
    if connection.vendor != "sqlite":
        pytest.skip("holds SQLite's database lock; the PostgreSQL pass has no such lock")
    roadmap = make_roadmap(alice, concepts=40)
    with daphne_server(tmp_path, OFFLINE_PROVIDER_DELAY_SECONDS="5") as server:
        start_generating(server, alice, roadmap)
        blocker = sqlite3.connect(connection.settings_dict["NAME"], timeout=30)
        blocker.isolation_level = None
        blocker.execute("BEGIN IMMEDIATE")  # the claims still running wait for it
        server.process.send_signal(signal.SIGTERM)
        try:
            wait_until(
                lambda: "engine wound down" in server.output(),
                timeout=engine.SERVER_SHUTDOWN_SECONDS + 10,
                message="the engine did not wind down",
            )
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert_exits(server)
        # The threads were inside their calls past the wind-down: they committed,
        # and published nothing, after the loop stopped.
        assert "Not publishing" in server.log.read_text()
