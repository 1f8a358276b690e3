"""The retry lifecycle through HTTP (DESIGN §4, I1, I2, I8, I9)."""

import asyncio

import pytest
from asgiref.sync import sync_to_async

from generation.models import GenerationItem, GenerationTask
from roadmaps.models import ConceptContent
from tests.conftest import auth
from tests.support.retries import content_of, events_of, retry_url, settled, wait_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
async def roadmap(alice, make_roadmap):
    return await sync_to_async(make_roadmap)(alice, concepts=3)


async def test_retry_sets_generating_before_response(api, alice, roadmap, use_task_backend):
    """I2: nothing runs the work here (the backend only records it), so the
    `generating` the client sees was committed by the request itself."""
    use_task_backend("django.tasks.backends.dummy.DummyBackend")
    from django.tasks import default_task_backend

    response = await api.post(retry_url(roadmap), json={}, headers=auth(alice))

    assert response.status_code == 202, response.text
    task_id = response.json()["data"]["task_id"]
    content = await content_of(roadmap)
    assert content.status == "generating" and content.task_id == task_id
    assert await GenerationTask.objects.filter(pk=task_id).aexists()
    assert len(default_task_backend.results) == 1  # enqueued once the start committed
    detail = (await api.get(f"/api/v1/roadmaps/{roadmap.pk}/", headers=auth(alice))).json()
    concept = detail["framework"]["stages"][0]["modules"][0]["concepts"][0]
    assert concept["content_status"] == "generating"
    assert concept["tasks"]["tutorial"] == task_id


async def test_retry_response_matches_the_contract(api, alice, roadmap):
    response = await api.post(retry_url(roadmap, content_type="quiz"), headers=auth(alice))

    body = response.json()
    task_id = body["data"]["task_id"]
    assert response.status_code == 202
    assert body["success"] is True
    assert body["concept_id"] == "c001" and body["content_type"] == "quiz"
    assert body["message"] == "Quiz regeneration started"
    assert body["data"]["status"] == "generating"
    assert body["data"]["ws_url"] == f"/api/v1/ws/{task_id}"
    prefix, content_type, concept8, suffix = task_id.split("-")
    assert (prefix, content_type, concept8) == ("retry", "quiz", "c001")
    assert len(suffix) == 32 and int(suffix, 16) >= 0
    await wait_for(lambda: settled(roadmap, content_type="quiz"))


async def test_retry_runs_to_completion_with_start_and_complete_events(api, alice, roadmap):
    response = await api.post(retry_url(roadmap), headers=auth(alice))
    task_id = response.json()["data"]["task_id"]

    content = await wait_for(lambda: settled(roadmap))

    assert content.status == "completed" and content.version == 1
    events = await events_of(task_id)
    assert [e["type"] for e in events] == ["concept_start", "concept_complete"]
    assert [e["seq"] for e in events] == [1, 2]
    assert events[1]["data"]["content_version"] == 1
    tutorial = await api.get(
        f"/api/v1/roadmaps/{roadmap.pk}/concepts/c001/tutorial", headers=auth(alice)
    )
    assert tutorial.status_code == 200
    assert tutorial.json()["markdown"].startswith("# Concept 1")
    assert tutorial.json()["model"] == "offline"
    task = (await api.get(f"/api/v1/tasks/{task_id}", headers=auth(alice))).json()
    assert task["status"] == "completed" and task["completed"] == 1 and task["total"] == 1
    assert [e["type"] for e in task["events"]] == ["concept_start", "concept_complete"]
    after = (await api.get(f"/api/v1/tasks/{task_id}?after=1", headers=auth(alice))).json()
    assert [e["seq"] for e in after["events"]] == [2]


async def test_concurrent_retries_of_one_pair_start_exactly_once(api, alice, roadmap, no_runner):
    """I1: 20 requests race in 20 threads; the conditional UPDATE lets one through.
    The work never runs (no_runner): a pair that completed while the last requests
    were still queued behind SQLite's writer would let a second start through."""
    responses = await asyncio.gather(
        *(api.post(retry_url(roadmap), headers=auth(alice)) for _ in range(20))
    )

    codes = sorted(r.status_code for r in responses)
    assert codes == [202] + [409] * 19
    started = next(r for r in responses if r.status_code == 202).json()["data"]["task_id"]
    conflicts = [r.json() for r in responses if r.status_code == 409]
    assert all(c["success"] is False and c["data"]["task_id"] == started for c in conflicts)
    assert await GenerationTask.objects.acount() == 1
    assert (await content_of(roadmap)).status == "generating"


async def test_concurrent_retries_of_different_concepts_lose_no_update(
    api, alice, make_roadmap, settings
):
    """I8: every concept's row is its own; nothing is read-modified-written."""
    settings.OFFLINE_PROVIDER_DELAY_SECONDS = 0.2
    roadmap = await sync_to_async(make_roadmap)(alice, concepts=20)
    responses = await asyncio.gather(
        *(api.post(retry_url(roadmap, f"c{i:03d}"), headers=auth(alice)) for i in range(1, 21))
    )
    assert [r.status_code for r in responses] == [202] * 20

    async def all_done():
        statuses = [
            s
            async for s in ConceptContent.objects.filter(
                roadmap=roadmap, content_type="tutorial"
            ).values_list("status", flat=True)
        ]
        return statuses if all(s == "completed" for s in statuses) else None

    statuses = await wait_for(all_done, within=30)
    assert len(statuses) == 20
    detail = (await api.get(f"/api/v1/roadmaps/{roadmap.pk}/", headers=auth(alice))).json()
    assert detail["status_counts"]["tutorial"]["completed"] == 20


@pytest.mark.parametrize("content_type", ["tutorial", "resources", "quiz"])
async def test_previous_version_stays_readable_while_regenerating_and_after_failure(
    api, alice, roadmap, settings, content_type
):
    """I9, for every content type (a failure that cleared the stored payload, or
    the tutorial's file, would show here)."""
    url = f"/api/v1/roadmaps/{roadmap.pk}/concepts/c001/{content_type}"
    retry = retry_url(roadmap, content_type=content_type)
    await api.post(retry, headers=auth(alice))
    await wait_for(lambda: settled(roadmap, content_type=content_type))
    first = (await api.get(url, headers=auth(alice))).json()
    assert first["content_version"] == 1

    # Every answer takes the whole delay: in flight long enough, whatever the load.
    settings.OFFLINE_PROVIDER_DELAY_SECONDS = 25.0
    task_id = (await api.post(retry, headers=auth(alice))).json()["data"]["task_id"]
    during = await api.get(url, headers=auth(alice))
    assert during.status_code == 200 and during.json() == first

    # Cancel it in flight (one not yet begun would go back to `completed`).
    await wait_for(
        lambda: GenerationItem.objects.filter(task_id=task_id, state="running").aexists()
    )
    cancel = await api.post(f"/api/v1/tasks/{task_id}/cancel", headers=auth(alice))
    assert cancel.status_code == 202
    content = await content_of(roadmap, content_type=content_type)
    assert content.status == "failed" and content.public_error == "Cancelled"
    after = await api.get(url, headers=auth(alice))
    assert after.status_code == 200 and after.json() == first


async def test_content_never_generated_answers_404_with_its_status(api, alice, roadmap):
    response = await api.get(
        f"/api/v1/roadmaps/{roadmap.pk}/concepts/c002/resources", headers=auth(alice)
    )
    assert response.status_code == 404
    assert response.json()["status"] == "pending"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"preferences": {"colour": "blue"}}, "colour"),
        ({"preferences": {"language": "x" * 36}}, "language"),
        ({"preferences": "fast"}, "preferences"),
        ({"surprise": 1}, "surprise"),
    ],
)
async def test_bad_retry_input_answers_400_and_changes_nothing(api, alice, roadmap, body, field):
    response = await api.post(retry_url(roadmap), json=body, headers=auth(alice))

    assert response.status_code == 400
    assert field in response.text
    assert (await content_of(roadmap)).status == "pending"
    assert await GenerationTask.objects.acount() == 0


async def test_retry_of_unknown_or_foreign_content_answers_404(api, alice, bob, roadmap):
    foreign = await api.post(retry_url(roadmap), headers=auth(bob))
    unknown = await api.post(retry_url(roadmap, "nope"), headers=auth(alice))
    anonymous = await api.post(retry_url(roadmap))

    assert (foreign.status_code, unknown.status_code, anonymous.status_code) == (404, 404, 401)
    assert (await content_of(roadmap)).status == "pending"


async def test_retry_is_throttled_with_retry_after(api, alice, roadmap, settings):
    settings.RETRY_THROTTLE_RATE = "2/minute"
    codes = [
        (await api.post(retry_url(roadmap, f"c00{i}"), headers=auth(alice))).status_code
        for i in (1, 2, 3)
    ]
    throttled = await api.post(retry_url(roadmap, "c003"), headers=auth(alice))

    assert codes == [202, 202, 429]
    assert int(throttled.headers["Retry-After"]) > 0
    assert "throttled" in throttled.json()["detail"].lower()
    assert (await content_of(roadmap, "c003")).status == "pending"


async def test_retry_answers_when_the_throttle_cache_is_down(api, alice, roadmap, settings):
    """I6: with Redis (the shared cache) unreachable, the API keeps answering."""
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
        }
    }
    response = await api.post(retry_url(roadmap), headers=auth(alice))

    assert response.status_code == 202
    assert (await wait_for(lambda: settled(roadmap))).status == "completed"
