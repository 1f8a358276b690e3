"""Reading and deleting roadmaps (DESIGN §4): paths, ownership, pagination, and a
constant number of queries whatever the size."""

import logging

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings

from roadmaps.models import Roadmap
from tests.conftest import auth
from tests.support.roadmaps import (
    DESIGN_EXAMPLE,
    row_counts,
)

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize("suffix", ["/", ""])
async def test_every_path_answers_with_and_without_trailing_slash(api, alice, make_roadmap, suffix):
    roadmap = await sync_to_async(make_roadmap)(alice)

    listed = await api.get(f"/api/v1/roadmaps{suffix}", headers=auth(alice))
    detail = await api.get(f"/api/v1/roadmaps/{roadmap.pk}{suffix}", headers=auth(alice))
    created = await api.post(f"/api/v1/roadmaps{suffix}", json=DESIGN_EXAMPLE, headers=auth(alice))
    deleted = await api.delete(f"/api/v1/roadmaps/{roadmap.pk}{suffix}", headers=auth(alice))

    assert [listed.status_code, detail.status_code, created.status_code, deleted.status_code] == [
        200,
        200,
        201,
        204,
    ]


async def test_list_shows_own_roadmaps_only_with_status_counts(api, alice, bob, make_roadmap):
    own = await sync_to_async(make_roadmap)(alice, concepts=2, title="Alice's")
    await sync_to_async(make_roadmap)(bob, title="Bob's")

    response = await api.get("/api/v1/roadmaps/", headers=auth(alice))

    body = response.json()
    assert response.status_code == 200
    assert (body["count"], body["next"], body["previous"]) == (1, None, None)
    [item] = body["results"]
    assert set(item) == {"roadmap_id", "title", "goal", "created_at", "updated_at", "status_counts"}
    assert (item["roadmap_id"], item["title"]) == (str(own.pk), "Alice's")
    assert item["status_counts"]["tutorial"] == {
        "pending": 2, "generating": 0, "completed": 0, "failed": 0,
    }  # fmt: skip


async def test_list_is_paginated_newest_first(api, alice, make_roadmap):
    for n in range(settings.REST_FRAMEWORK["PAGE_SIZE"] + 3):
        await sync_to_async(make_roadmap)(alice, title=f"Roadmap {n}")

    first = (await api.get("/api/v1/roadmaps/", headers=auth(alice))).json()
    second = (await api.get(first["next"], headers=auth(alice))).json()

    assert first["count"] == 23
    assert len(first["results"]) == 20
    assert first["results"][0]["title"] == "Roadmap 22"
    assert [r["title"] for r in second["results"]] == ["Roadmap 2", "Roadmap 1", "Roadmap 0"]
    assert second["previous"]


async def test_staff_see_every_roadmap(api, alice, make_user, make_roadmap):
    staff = await sync_to_async(make_user)("operator", is_staff=True)
    roadmap = await sync_to_async(make_roadmap)(alice)

    listed = (await api.get("/api/v1/roadmaps/", headers=auth(staff))).json()
    detail = await api.get(f"/api/v1/roadmaps/{roadmap.pk}/", headers=auth(staff))

    assert [r["roadmap_id"] for r in listed["results"]] == [str(roadmap.pk)]
    assert detail.status_code == 200


@pytest.mark.parametrize("method", ["get", "delete"])
async def test_other_users_roadmap_answers_404(api, alice, bob, make_roadmap, method):
    roadmap = await sync_to_async(make_roadmap)(alice)

    response = await api.request(method, f"/api/v1/roadmaps/{roadmap.pk}/", headers=auth(bob))

    assert response.status_code == 404
    assert await sync_to_async(Roadmap.objects.filter(pk=roadmap.pk).exists)()


@pytest.mark.parametrize(
    "roadmap_id", ["6f1c2e4a-0000-4000-8000-000000000000", "not-a-uuid", "123"]
)
async def test_unknown_or_malformed_roadmap_id_answers_404(api, alice, roadmap_id):
    response = await api.get(f"/api/v1/roadmaps/{roadmap_id}/", headers=auth(alice))

    assert response.status_code == 404
    assert response.json() == {"detail": "Not found."}


async def test_delete_removes_the_roadmap_and_its_tree(api, alice, make_roadmap):
    roadmap = await sync_to_async(make_roadmap)(alice, concepts=3)

    response = await api.delete(f"/api/v1/roadmaps/{roadmap.pk}/", headers=auth(alice))

    assert response.status_code == 204
    assert await sync_to_async(row_counts)() == dict.fromkeys(
        ["Roadmap", "Stage", "Module", "Concept", "ConceptContent"], 0
    )
    again = await api.get(f"/api/v1/roadmaps/{roadmap.pk}/", headers=auth(alice))
    assert again.status_code == 404


# --- Query counts -------------------------------------------------------------


async def count_queries(caplog, request) -> int:
    """SQL statements run while serving one request. The view runs in a worker
    thread with its own connection, so count the `django.db.backends` log (which
    every connection writes when DEBUG is on), keeping only the request's thread
    (the one that looked up the token): the engine's stale sweep may query meanwhile."""
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="django.db.backends"):
        response = await request
    assert response.status_code == 200
    queries = [record for record in caplog.records if record.name == "django.db.backends"]
    request_thread = next(r.thread for r in queries if "authtoken_token" in r.getMessage())
    return sum(1 for record in queries if record.thread == request_thread)


def wide_framework(stages: int, modules: int, concepts: int) -> dict:
    return {
        "stages": [
            {
                "name": f"S{s}",
                "modules": [
                    {
                        "name": f"M{s}.{m}",
                        "concepts": [
                            {"concept_id": f"c{s}_{m}_{c}", "name": f"C{s}.{m}.{c}"}
                            for c in range(concepts)
                        ],
                    }
                    for m in range(modules)
                ],
            }
            for s in range(stages)
        ]
    }


async def test_detail_uses_a_constant_number_of_queries(api, alice, make_roadmap, caplog, settings):
    settings.DEBUG = True
    small = await sync_to_async(make_roadmap)(alice, framework=wide_framework(1, 1, 1))
    large = await sync_to_async(make_roadmap)(alice, framework=wide_framework(3, 4, 5))

    small_count = await count_queries(
        caplog, api.get(f"/api/v1/roadmaps/{small.pk}/", headers=auth(alice))
    )
    large_count = await count_queries(
        caplog, api.get(f"/api/v1/roadmaps/{large.pk}/", headers=auth(alice))
    )

    assert large_count == small_count
    # token + roadmap + stages + modules + concepts + contents + status counts
    assert small_count <= 7


async def test_list_counts_statuses_in_one_query_for_the_whole_page(
    api, alice, make_roadmap, caplog, settings
):
    settings.DEBUG = True
    await sync_to_async(make_roadmap)(alice)
    one = await count_queries(caplog, api.get("/api/v1/roadmaps/", headers=auth(alice)))
    for _ in range(9):
        await sync_to_async(make_roadmap)(alice, concepts=3)

    ten = await count_queries(caplog, api.get("/api/v1/roadmaps/", headers=auth(alice)))

    assert ten == one
    assert one <= 4  # token, page count, page, status counts


async def test_roadmap_with_generation_in_flight_is_not_deleted(api, alice, make_roadmap, settings):
    settings.OFFLINE_PROVIDER_DELAY_SECONDS = 5.0
    roadmap = await sync_to_async(make_roadmap)(alice)
    started = await api.post(
        f"/api/v1/roadmaps/{roadmap.pk}/concepts/c001/quiz/retry", headers=auth(alice)
    )

    response = await api.delete(f"/api/v1/roadmaps/{roadmap.pk}/", headers=auth(alice))

    assert response.status_code == 409
    assert "cancel" in response.json()["detail"]
    assert await Roadmap.objects.filter(pk=roadmap.pk).aexists()
    task_id = started.json()["data"]["task_id"]
    await api.post(f"/api/v1/tasks/{task_id}/cancel", headers=auth(alice))
    deleted = await api.delete(f"/api/v1/roadmaps/{roadmap.pk}/", headers=auth(alice))
    assert deleted.status_code == 204
