"""The whole pipeline against a real OpenAI-compatible HTTP server (the fake):
failures end `failed` with a sanitized error (I3, I7), batches report partial
success, and GENERATION_CONCURRENCY caps provider calls in flight."""

import pytest
from asgiref.sync import sync_to_async
from django.core.management import CommandError, call_command

from generation.models import GenerationTask
from notifications.models import Event
from roadmaps.models import ConceptContent
from tests.conftest import auth
from tests.support.fake_openai import FAKE_API_KEY, error
from tests.support.retries import events_of, fail_contents, task_finished, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

SECRET_PATH = "/srv/roadmaps/roadmap_project/settings.py"


async def test_failing_provider_leaves_failed_with_a_sanitized_error(
    api, alice, make_roadmap, fake_openai
):
    leaky = f"Incorrect API key provided: {FAKE_API_KEY} (see {SECRET_PATH}, host db.internal)"
    fake_openai.script(error(401, {"error": {"message": leaky, "type": "auth"}}))
    roadmap = await sync_to_async(make_roadmap)(alice)

    response = await api.post(
        f"/api/v1/roadmaps/{roadmap.pk}/concepts/c001/quiz/retry", headers=auth(alice)
    )
    task_id = response.json()["data"]["task_id"]
    task = await wait_for(lambda: task_finished(task_id))

    assert task.status == "failed"
    content = await ConceptContent.objects.aget(
        roadmap=roadmap, content_type="quiz", concept__concept_id="c001"
    )
    assert content.status == "failed"
    events = await events_of(task_id)
    assert [e["type"] for e in events] == ["concept_start", "concept_failed"]
    assert events[-1]["retryable"] is False
    assert len(fake_openai.requests) == 1  # a permanent error is not retried
    public = [
        content.public_error,
        (await api.get(f"/api/v1/tasks/{task_id}", headers=auth(alice))).text,
        (await api.get(f"/api/v1/roadmaps/{roadmap.pk}/", headers=auth(alice))).text,
        *[str(e.body) async for e in Event.objects.all()],
    ]
    for text in public:
        for secret in (FAKE_API_KEY, SECRET_PATH, "db.internal", "Traceback", "Incorrect API"):
            assert secret not in text


async def test_batch_with_provider_failures_ends_partial(api, alice, make_roadmap, fake_openai):
    roadmap = await sync_to_async(make_roadmap)(alice, concepts=10)
    await fail_contents(roadmap, 10, content_types=("quiz",))
    fake_openai.script(*[error(400) for _ in range(3)])

    response = await api.post(
        f"/api/v1/roadmaps/{roadmap.pk}/concepts/retry-batch", json={}, headers=auth(alice)
    )
    task_id = response.json()["data"]["task_id"]
    task = await wait_for(lambda: task_finished(task_id), within=30)

    assert (task.status, task.total, task.completed, task.failed) == ("partial", 10, 7, 3)
    events = await events_of(task_id)
    assert [e["type"] for e in events].count("concept_failed") == 3
    assert events[-1]["summary"] == {"total": 10, "completed": 7, "failed": 3}


async def test_generation_concurrency_caps_provider_calls_in_flight(
    api, alice, make_roadmap, fake_openai, settings
):
    settings.GENERATION_CONCURRENCY = 4
    fake_openai.delay = 0.15
    roadmap = await sync_to_async(make_roadmap)(alice, concepts=10)

    response = await api.post(
        f"/api/v1/roadmaps/{roadmap.pk}/concepts/retry-batch",
        json={"statuses": ["pending"], "content_types": ["resources", "quiz"]},
        headers=auth(alice),
    )
    assert response.json()["data"]["total"] == 20
    task = await wait_for(lambda: task_finished(response.json()["data"]["task_id"]), within=60)

    assert task.completed == 20
    assert len(fake_openai.requests) == 20
    assert fake_openai.max_in_flight == 4


def test_retry_content_dry_run_changes_nothing(alice, make_roadmap, capsys):
    roadmap = make_roadmap(alice, concepts=2)
    call_command("retry_content", "--status", "pending", "--dry-run")

    out = capsys.readouterr().out
    assert "6 pair(s) selected." in out and "c002" in out
    assert set(ConceptContent.objects.values_list("status", flat=True)) == {"pending"}
    assert not GenerationTask.objects.exists()
    assert roadmap.contents.count() == 6


def test_retry_content_wait_exits_0_when_all_succeed(alice, make_roadmap, capsys):
    make_roadmap(alice, concepts=2)
    make_roadmap(alice, concepts=1)

    call_command("retry_content", "--status", "pending", "--content-type", "quiz", "--wait")

    out = capsys.readouterr().out
    assert out.count("task batch-retry-") == 2
    assert "3 completed, 0 failed." in out
    assert set(
        ConceptContent.objects.filter(content_type="quiz").values_list("status", flat=True)
    ) == {"completed"}


def test_retry_content_wait_exits_1_when_any_fail(alice, make_roadmap, fake_openai):
    roadmap = make_roadmap(alice, concepts=3)
    fake_openai.script(error(400))

    with pytest.raises(CommandError) as failed:
        call_command(
            "retry_content",
            "--roadmap",
            str(roadmap.pk),
            "--status",
            "pending",
            "--content-type",
            "resources",
            "--wait",
        )

    assert failed.value.returncode == 1
    statuses = sorted(
        ConceptContent.objects.filter(content_type="resources").values_list("status", flat=True)
    )
    assert statuses == ["completed", "completed", "failed"]
