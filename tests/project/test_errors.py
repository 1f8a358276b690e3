"""Bad input answers 4xx, and nothing a client sees carries a traceback or a path (I7)."""

import logging

import pytest
from asgiref.sync import sync_to_async

from roadmaps.models import ConceptContent
from tests.conftest import auth
from tests.support.retries import settled, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

NOT_A_UUID = "a" * 36


@pytest.mark.parametrize(
    "path",
    [
        f"/api/v1/roadmaps/{NOT_A_UUID}/generate",
        f"/api/v1/roadmaps/{NOT_A_UUID}/concepts/retry-batch",
        f"/api/v1/roadmaps/{NOT_A_UUID}/concepts/c001/quiz/retry",
    ],
)
async def test_malformed_roadmap_id_answers_404(api, alice, path):
    response = await api.post(path, headers=auth(alice))
    assert response.status_code == 404


NESTED_TOO_DEEP = b"[" * 10_000 + b"]" * 10_000


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/roadmaps/",
        "/api/v1/roadmaps/{roadmap_id}/concepts/retry-batch",
        "/api/v1/roadmaps/{roadmap_id}/concepts/c001/tutorial/retry",
        "/api/v1/auth/token",
    ],
)
async def test_json_nested_too_deep_answers_400_without_an_error_log(
    api, alice, make_roadmap, caplog, path
):
    roadmap = await sync_to_async(make_roadmap)(alice)

    with caplog.at_level(logging.INFO):
        response = await api.post(
            path.format(roadmap_id=roadmap.pk),
            content=NESTED_TOO_DEEP,
            headers={**auth(alice), "Content-Type": "application/json"},
        )

    assert response.status_code == 400
    assert response.json() == {"detail": "JSON parse error - nested too deeply."}
    assert [r.getMessage() for r in caplog.records if r.levelno > logging.WARNING] == []
    assert (
        await ConceptContent.objects.aget(concept__concept_id="c001", content_type="tutorial")
    ).status == "pending"


async def test_task_events_cursor_must_be_a_plain_number(api, alice, make_roadmap):
    roadmap = await sync_to_async(make_roadmap)(alice)
    started = await api.post(
        f"/api/v1/roadmaps/{roadmap.pk}/concepts/c001/quiz/retry", headers=auth(alice)
    )
    task_id = started.json()["data"]["task_id"]
    for bad in ("-1", "²", "1.5", "x"):
        response = await api.get(f"/api/v1/tasks/{task_id}?after={bad}", headers=auth(alice))
        assert response.status_code == 400 and "after" in response.json()
    await wait_for(lambda: settled(roadmap, content_type="quiz"))


async def test_unexpected_error_answers_500_without_traceback_even_in_debug(
    api, alice, make_roadmap, settings, monkeypatch
):
    settings.DEBUG = True
    roadmap = await sync_to_async(make_roadmap)(alice)
    await api.post(
        f"/api/v1/roadmaps/{roadmap.pk}/concepts/c001/tutorial/retry", headers=auth(alice)
    )
    content = await wait_for(lambda: settled(roadmap))
    unreadable = f"{settings.MEDIA_ROOT}/{content.content_ref}"

    def storage_broke(content):
        raise PermissionError(13, "Permission denied", unreadable)

    monkeypatch.setattr("generation.serializers.read_tutorial", storage_broke)

    response = await api.get(
        f"/api/v1/roadmaps/{roadmap.pk}/concepts/c001/tutorial", headers=auth(alice)
    )

    assert response.status_code == 500
    assert response.json() == {"detail": "Internal server error."}
    assert str(settings.MEDIA_ROOT) not in response.text
    assert (await ConceptContent.objects.aget(pk=content.pk)).status == "completed"
