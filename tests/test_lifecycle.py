"""The state machine's invariants, exercised through its services (I1-I4)."""

import contextlib
import signal
import socket
import subprocess
import threading
import time
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection, transaction
from django.utils import timezone

from generation import engine, state
from generation.errors import WorkerLost
from generation.models import GenerationItem, GenerationTask, ItemState, TaskKind
from generation.schemas import TutorialDraft
from notifications.models import Event
from roadmaps.models import ConceptContent
from tests.processes import manage, process_env

pytestmark = pytest.mark.django_db(transaction=True)


def tutorial_of(roadmap, concept_id="c001") -> ConceptContent:
    return ConceptContent.objects.select_related("concept", "roadmap").get(
        roadmap=roadmap, concept__concept_id=concept_id, content_type="tutorial"
    )


def retry(roadmap, content=None) -> GenerationTask:
    content = content or tutorial_of(roadmap)
    return state.start_generation(
        roadmap=roadmap, user=roadmap.owner, kind=TaskKind.RETRY, contents=[content]
    ).task


def wait_until(predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def event_types(task_id: str) -> list[str]:
    return list(Event.objects.filter(stream=task_id).order_by("seq").values_list("type", flat=True))


@pytest.fixture
def roadmap(alice, make_roadmap):
    return make_roadmap(alice, concepts=2)


@pytest.fixture
def no_runner(use_task_backend):
    """Enqueued work is stored but never run: a message the broker lost."""
    use_task_backend("django.tasks.backends.dummy.DummyBackend")


def test_start_is_a_conditional_update_not_a_python_check(roadmap, no_runner):
    """I1: two starts from the same stale read; the database lets only one through."""
    stale = tutorial_of(roadmap)
    first = retry(roadmap, stale)

    assert stale.status == "pending"  # the Python object still says startable
    with pytest.raises(state.AlreadyGenerating) as busy:
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

    task = retry(roadmap)
    [result] = default_task_backend.results
    assert result.args == [GenerationItem.objects.get(task=task).pk]


def test_lost_message_ends_failed_after_the_lease(roadmap, no_runner, settings):
    """I3: nobody ever runs the item; the sweeper fails it once the lease expires."""
    settings.GENERATION_LEASE_SECONDS = 0.3
    task = retry(roadmap)
    assert state.recover_stale() == 0  # the lease is still running

    time.sleep(0.4)
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
    engine.start_maintenance(engine._private())  # running already, if an earlier test ran work

    content = wait_until(lambda: (c := tutorial_of(roadmap)).status == "failed" and c, timeout=5)
    assert content.public_error == str(WorkerLost.public_message)


def test_killed_runner_ends_failed_within_the_lease(roadmap):
    """I3: a real process running the generation is killed with SIGKILL."""
    lease = 2.0
    content = tutorial_of(roadmap)
    script = (
        "from generation import state, engine;"
        "from roadmaps.models import ConceptContent as C;"
        f"c = C.objects.select_related('roadmap', 'concept').get(pk={content.pk});"
        "state.start_generation(roadmap=c.roadmap, user=c.roadmap.owner, kind='retry',"
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
            lambda: GenerationItem.objects.filter(state=ItemState.RUNNING).exists(), timeout=30
        )
        time.sleep(lease / 2)  # a heartbeat or two has happened
        runner.send_signal(signal.SIGKILL)
        runner.wait(10)
        killed_at = timezone.now()
    finally:
        runner.kill()

    wait_until(
        lambda: state.recover_stale() or tutorial_of(roadmap).status == "failed", timeout=lease * 3
    )
    content = tutorial_of(roadmap)
    assert content.status == "failed"
    assert content.updated_at <= killed_at + timedelta(seconds=lease + 1)
    task = GenerationTask.objects.get()
    assert event_types(task.pk) == ["concept_start", "concept_failed"]
    failed = Event.objects.get(stream=task.pk, type="concept_failed").body
    assert failed["error"] == str(WorkerLost.public_message) and failed["retryable"] is True


def test_late_result_of_superseded_attempt_is_ignored(roadmap, no_runner, settings):
    """I4: attempt A stalls, its lease expires, attempt B takes over; A's late
    result must not overwrite B's state."""
    settings.GENERATION_LEASE_SECONDS = 0.2
    first = retry(roadmap)
    run_a = state.begin_item(item_id=GenerationItem.objects.get(task=first).pk)
    time.sleep(0.3)  # A's lease expires without a heartbeat

    second = retry(roadmap)  # take-over of an expired generation
    run_b = state.begin_item(item_id=GenerationItem.objects.get(task=second).pk)
    draft = TutorialDraft(title="Late", summary="from A", markdown="# Late A")
    assert state.complete_item(run_a, draft=draft, model_name="a") is False
    assert state.heartbeat(run_a) is False

    content = tutorial_of(roadmap)
    assert content.status == "generating" and content.attempt_id == run_b.attempt_id
    assert content.version == 0 and content.title == ""
    assert state.complete_item(
        run_b, draft=TutorialDraft(title="B", summary="s", markdown="# B"), model_name="b"
    )
    content.refresh_from_db()
    assert (content.status, content.version, content.title) == ("completed", 1, "B")
    first.refresh_from_db()
    assert first.status != "running"


def test_generating_pair_with_live_lease_cannot_be_taken_over(roadmap, no_runner):
    task = retry(roadmap)
    with pytest.raises(state.AlreadyGenerating):
        retry(roadmap)
    assert tutorial_of(roadmap).task_id == task.pk


def test_admin_reset_fences_the_running_attempt_and_closes_its_task(roadmap, no_runner):
    task = retry(roadmap)
    run = state.begin_item(item_id=GenerationItem.objects.get(task=task).pk)

    assert state.set_status_outside_task(content=tutorial_of(roadmap), status="pending")

    assert state.heartbeat(run) is False
    assert (
        state.complete_item(
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


def test_take_over_of_a_dead_attempt_ends_its_task(roadmap, no_runner, settings):
    """I3: the superseded attempt's worker is gone; its task must still finish and
    its stream close, or it would stay `running` forever."""
    settings.GENERATION_LEASE_SECONDS = 0.2
    dead = retry(roadmap)
    state.begin_item(item_id=GenerationItem.objects.get(task=dead).pk)
    time.sleep(0.3)

    fresh = retry(roadmap)

    dead.refresh_from_db()
    assert dead.status == "failed" and dead.finished_at is not None
    final = Event.objects.filter(stream=dead.pk).order_by("seq").last()
    assert final.type == "concept_failed" and final.final is True
    assert final.body["error"] == str(WorkerLost.public_message)
    assert GenerationItem.objects.get(task=fresh).previous_status == "failed"


def test_cancel_after_a_take_over_restores_failed_not_generating(roadmap, no_runner, settings):
    settings.GENERATION_LEASE_SECONDS = 0.2
    retry(roadmap)
    time.sleep(0.3)
    batch = state.start_generation(
        roadmap=roadmap, user=roadmap.owner, kind=TaskKind.BATCH, contents=[tutorial_of(roadmap)]
    ).task

    state.cancel_task(task_id=batch.pk)

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


def test_sweep_never_fails_a_lease_renewed_while_it_waited(roadmap, no_runner):
    """I3 without false positives: the sweeper read an expired lease, then waited
    for the row while another process renewed it; the renewal wins."""
    task = retry(roadmap)
    item = GenerationItem.objects.get(task=task)
    ConceptContent.objects.filter(pk=item.content_id).update(
        lease_expires_at=timezone.now() - timedelta(seconds=5)
    )
    renewed, go, results = threading.Event(), threading.Event(), {}

    def renew() -> None:
        with transaction.atomic():
            results["renewed"] = state.renew_queued_leases(item_ids=[item.pk])
            renewed.set()
            go.wait(5)  # hold the row while the sweep starts
        connection.close()

    def sweep() -> None:
        results["recovered"] = state.recover_stale()
        connection.close()

    renewer = threading.Thread(target=renew)
    renewer.start()
    assert renewed.wait(5)
    sweeper = threading.Thread(target=sweep)
    sweeper.start()
    time.sleep(0.5)
    go.set()
    renewer.join(10)
    sweeper.join(10)

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
    roadmap, no_runner, fake_openai, black_hole_redis, settings
):
    """The heartbeat must stop before the terminal write: otherwise, while the
    failure's publish waits on a hanging layer, a beat sees the pair already moved
    on, takes it for fencing and cancels the run mid-write."""
    from asgiref.sync import sync_to_async

    from generation import runner
    from tests.fake_openai import error

    settings.GENERATION_LEASE_SECONDS = 0.2  # a beat every 50 ms
    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [black_hole_redis]},
        }
    }
    fake_openai.script(error(400))

    def start():
        task = retry(roadmap)
        return state.begin_item(item_id=GenerationItem.objects.get(task=task).pk)

    run = await runner.in_worker_thread(start)()
    await runner._execute(run)  # returns normally: not cancelled by its own heartbeat

    content = await sync_to_async(tutorial_of)(roadmap)
    assert content.status == "failed"
