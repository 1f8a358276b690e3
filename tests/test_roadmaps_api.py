"""The roadmap REST API (DESIGN §4, issue 2), over HTTP against the ASGI app."""

import asyncio
import copy
import json
import logging

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings

from roadmaps.models import Concept, ConceptContent, Module, Roadmap, Stage
from tests.conftest import DEMO_FRAMEWORK, auth, framework_with

pytestmark = pytest.mark.django_db(transaction=True)

DESIGN_EXAMPLE = {
    "title": "Learn React",
    "goal": "Ship production apps",
    "preferences": {"language": "zh-CN", "level": "beginner"},
    "framework": DEMO_FRAMEWORK,
}
CONCEPT_FIELDS = {
    "concept_id",
    "name",
    "description",
    "content_status",
    "content_ref",
    "content_summary",
    "content_version",
    "resources_status",
    "resources_count",
    "quiz_status",
    "quiz_questions_count",
    "tasks",
}
ALL_PENDING = {"pending": 1, "generating": 0, "completed": 0, "failed": 0}


def row_counts() -> dict[str, int]:
    return {
        model.__name__: model.objects.count()
        for model in (Roadmap, Stage, Module, Concept, ConceptContent)
    }


def payload(**changes) -> dict:
    body = copy.deepcopy(DESIGN_EXAMPLE)
    body.update(changes)
    return body


def without(key: str) -> dict:
    body = payload()
    del body[key]
    return body


def with_concepts(*concepts: dict) -> dict:
    return payload(
        framework={
            "stages": [{"name": "S", "modules": [{"name": "M", "concepts": list(concepts)}]}]
        }
    )


def concept(**fields) -> dict:
    return {"concept_id": "c1", "name": "Concept", **fields}


def messages_at(body: dict, *path) -> list[str]:
    """Every message at (or under) a field path of DRF's field-keyed errors."""
    node = body
    for key in path:
        node = node[str(key)]
    found: list[str] = []

    def collect(value) -> None:
        if isinstance(value, str):
            found.append(value)
        elif isinstance(value, dict):
            for child in value.values():
                collect(child)
        else:
            for child in value:
                collect(child)

    collect(node)
    return found


def first_concept(detail: dict) -> dict:
    return detail["framework"]["stages"][0]["modules"][0]["concepts"][0]


async def create(api, user, body) -> "object":
    return await api.post("/api/v1/roadmaps/", json=body, headers=auth(user))


# --- Authentication -----------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/v1/auth/token/", "/api/v1/auth/token"])
async def test_token_endpoint_exchanges_credentials_for_the_users_token(api, alice, path):
    response = await api.post(path, json={"username": "alice", "password": "alice-password"})

    assert response.status_code == 200
    assert response.json() == {"token": alice.token}


async def test_token_endpoint_rejects_wrong_credentials_with_400(api, alice):
    response = await api.post(
        "/api/v1/auth/token/", json={"username": "alice", "password": "wrong"}
    )

    assert response.status_code == 400
    assert "token" not in response.json()
    assert "Unable to log in" in json.dumps(response.json())


async def test_token_from_the_endpoint_authenticates_api_calls(api, alice):
    token = (
        await api.post(
            "/api/v1/auth/token", json={"username": "alice", "password": "alice-password"}
        )
    ).json()["token"]

    response = await api.get("/api/v1/roadmaps/", headers={"Authorization": f"Token {token}"})

    assert response.status_code == 200


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/v1/roadmaps/"),
        ("post", "/api/v1/roadmaps/"),
        ("get", "/api/v1/roadmaps/{id}/"),
        ("delete", "/api/v1/roadmaps/{id}"),
    ],
)
async def test_no_credentials_answers_401_not_403(api, alice, make_roadmap, method, path):
    roadmap = await sync_to_async(make_roadmap)(alice)

    response = await api.request(method, path.format(id=roadmap.pk))

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Token"
    assert await sync_to_async(Roadmap.objects.filter(pk=roadmap.pk).exists)()


async def test_invalid_token_answers_401(api):
    response = await api.get("/api/v1/roadmaps/", headers={"Authorization": "Token nope"})

    assert response.status_code == 401


# --- Create -------------------------------------------------------------------


async def test_design_example_is_created_with_every_status_pending(api, alice):
    response = await create(api, alice, DESIGN_EXAMPLE)

    assert response.status_code == 201
    detail = response.json()
    assert set(detail) == {
        "roadmap_id", "title", "goal", "created_at", "updated_at", "status_counts", "framework",
    }  # fmt: skip
    assert detail["title"] == "Learn React"
    assert detail["goal"] == "Ship production apps"
    assert detail["status_counts"] == {t: ALL_PENDING for t in ("tutorial", "resources", "quiz")}
    stage = detail["framework"]["stages"][0]
    assert (stage["name"], stage["order"]) == ("Foundations", 1)
    assert stage["stage_id"]
    module = stage["modules"][0]
    assert (module["name"], module["order"]) == ("Hooks", 1)
    assert module["module_id"]
    assert module["concepts"] == [
        {
            "concept_id": "concept_001",
            "name": "React Hooks 基础",
            "description": "useState, useEffect",
            "content_status": "pending",
            "content_ref": None,
            "content_summary": None,
            "content_version": 0,
            "resources_status": "pending",
            "resources_count": 0,
            "quiz_status": "pending",
            "quiz_questions_count": 0,
            "tasks": {"tutorial": None, "resources": None, "quiz": None},
        }
    ]
    roadmap = await sync_to_async(Roadmap.objects.get)(pk=detail["roadmap_id"])
    assert roadmap.owner_id == alice.pk
    assert roadmap.preferences == {"language": "zh-CN", "level": "beginner"}
    statuses = await sync_to_async(list)(
        ConceptContent.objects.filter(roadmap=roadmap).values_list("status", flat=True)
    )
    assert sorted(statuses) == ["pending"] * 3


async def test_create_keeps_tree_order_and_generates_missing_concept_ids(api, alice):
    body = payload(
        framework={
            "stages": [
                {"name": "One", "modules": [{"name": "A", "concepts": [{"name": "first"}]}]},
                {
                    "name": "Two",
                    "modules": [
                        {"name": "B", "concepts": [{"name": "second", "concept_id": "x-2"}]},
                        {"name": "C", "concepts": [{"name": "third"}]},
                    ],
                },
            ]
        }
    )

    detail = (await create(api, alice, body)).json()

    stages = detail["framework"]["stages"]
    assert [s["name"] for s in stages] == ["One", "Two"]
    assert [m["name"] for m in stages[1]["modules"]] == ["B", "C"]
    names = [c["name"] for s in stages for m in s["modules"] for c in m["concepts"]]
    ids = [c["concept_id"] for s in stages for m in s["modules"] for c in m["concepts"]]
    assert names == ["first", "second", "third"]
    assert ids[1] == "x-2"
    assert len(set(ids)) == 3
    assert all(len(i) <= 64 and i.replace("_", "").replace("-", "").isalnum() for i in ids)


async def test_create_accepts_exactly_the_limits(api, alice):
    limit = settings.ROADMAP_MAX_CONCEPTS
    framework = framework_with(limit)
    framework["stages"][0]["modules"][0]["concepts"][0].update(
        name="n" * settings.ROADMAP_MAX_NAME_LENGTH,
        description="d" * settings.ROADMAP_MAX_DESCRIPTION_LENGTH,
    )

    response = await create(api, alice, payload(framework=framework))

    assert response.status_code == 201
    assert response.json()["status_counts"]["quiz"]["pending"] == limit


BAD_INPUT = {
    "missing_title": (without("title"), ("title",)),
    "null_title": (payload(title=None), ("title",)),
    "empty_title": (payload(title=""), ("title",)),
    "title_not_a_string": (payload(title=42), ("title",)),
    "title_too_long": (payload(title="t" * 201), ("title",)),
    "goal_too_long": (payload(goal="g" * 2001), ("goal",)),
    "missing_framework": (without("framework"), ("framework",)),
    "framework_not_an_object": (payload(framework=[1]), ("framework",)),
    "stages_not_a_list": (payload(framework={"stages": "x"}), ("framework", "stages")),
    "no_stages": (payload(framework={"stages": []}), ("framework", "stages")),
    "no_concepts": (
        payload(framework={"stages": [{"name": "S", "modules": []}]}),
        ("framework", "concepts"),
    ),
    "stage_without_name": (
        payload(framework={"stages": [{"modules": []}]}),
        ("framework", "stages", 0, "name"),
    ),
    "empty_module_name": (
        payload(framework={"stages": [{"name": "S", "modules": [{"name": "", "concepts": []}]}]}),
        ("framework", "stages", 0, "modules", 0, "name"),
    ),
    "concept_without_name": (
        with_concepts({"concept_id": "c1"}),
        ("framework", "stages", 0, "modules", 0, "concepts", 0, "name"),
    ),
    "empty_concept_name": (
        with_concepts(concept(name="")),
        ("framework", "stages", 0, "modules", 0, "concepts", 0, "name"),
    ),
    "whitespace_concept_name": (
        with_concepts(concept(name="   ")),
        ("framework", "stages", 0, "modules", 0, "concepts", 0, "name"),
    ),
    "concept_name_too_long": (
        with_concepts(concept(name="n" * 201)),
        ("framework", "stages", 0, "modules", 0, "concepts", 0, "name"),
    ),
    "concept_name_not_a_string": (
        with_concepts(concept(name=["a"])),
        ("framework", "stages", 0, "modules", 0, "concepts", 0, "name"),
    ),
    "description_too_long": (
        with_concepts(concept(description="d" * 2001)),
        ("framework", "stages", 0, "modules", 0, "concepts", 0, "description"),
    ),
    "concept_not_an_object": (
        with_concepts("c1"),
        ("framework", "stages", 0, "modules", 0, "concepts", 0),
    ),
    "concept_id_with_space": (
        with_concepts(concept(concept_id="has space")),
        ("framework", "stages", 0, "modules", 0, "concepts", 0, "concept_id"),
    ),
    "concept_id_with_slash": (
        with_concepts(concept(concept_id="a/b")),
        ("framework", "stages", 0, "modules", 0, "concepts", 0, "concept_id"),
    ),
    "concept_id_too_long": (
        with_concepts(concept(concept_id="x" * 65)),
        ("framework", "stages", 0, "modules", 0, "concepts", 0, "concept_id"),
    ),
    "concept_id_empty": (
        with_concepts(concept(concept_id="")),
        ("framework", "stages", 0, "modules", 0, "concepts", 0, "concept_id"),
    ),
    "concept_id_not_a_string": (
        with_concepts(concept(concept_id=7)),
        ("framework", "stages", 0, "modules", 0, "concepts", 0, "concept_id"),
    ),
    "duplicate_concept_ids": (
        with_concepts(concept(concept_id="dup"), concept(concept_id="dup", name="Other")),
        ("framework", "concept_id"),
    ),
    "too_many_concepts": (
        payload(framework=framework_with(settings.ROADMAP_MAX_CONCEPTS + 1)),
        ("framework", "concepts"),
    ),
    "preferences_not_an_object": (payload(preferences="zh"), ("preferences",)),
    "unknown_preference": (
        payload(preferences={"language": "en", "colour": "red"}),
        ("preferences", "colour"),
    ),
    "preference_too_long": (payload(preferences={"level": "x" * 51}), ("preferences", "level")),
    "generate_not_a_boolean": (payload(generate="maybe"), ("generate",)),
    "body_not_an_object": ([DESIGN_EXAMPLE], ("non_field_errors",)),
}


@pytest.mark.parametrize(("body", "field_path"), BAD_INPUT.values(), ids=BAD_INPUT.keys())
async def test_bad_input_answers_400_naming_the_field_and_creates_nothing(
    api, alice, body, field_path
):
    before = await sync_to_async(row_counts)()

    response = await create(api, alice, body)

    assert response.status_code == 400
    assert messages_at(response.json(), *field_path), response.json()
    assert await sync_to_async(row_counts)() == before


async def test_duplicate_concept_id_message_names_the_repeated_id(api, alice):
    body = with_concepts(concept(concept_id="dup"), concept(concept_id="dup", name="Other"))

    response = await create(api, alice, body)

    assert "dup" in response.json()["framework"]["concept_id"][0]
    assert "unique" in response.json()["framework"]["concept_id"][0]


async def test_too_many_concepts_message_states_the_limit(api, alice):
    limit = settings.ROADMAP_MAX_CONCEPTS
    response = await create(api, alice, payload(framework=framework_with(limit + 1)))

    assert str(limit) in response.json()["framework"]["concepts"][0]


async def test_malformed_json_answers_400_and_creates_nothing(api, alice):
    before = await sync_to_async(row_counts)()

    response = await api.post(
        "/api/v1/roadmaps/",
        content=b'{"title": "Learn React", "framework": {',
        headers={**auth(alice), "Content-Type": "application/json"},
    )

    assert response.status_code == 400
    assert "JSON parse error" in response.json()["detail"]
    assert await sync_to_async(row_counts)() == before


async def test_non_json_content_type_answers_415(api, alice):
    response = await api.post(
        "/api/v1/roadmaps/",
        content=b"title=x",
        headers={**auth(alice), "Content-Type": "text/plain"},
    )

    assert response.status_code == 415


async def test_body_over_1_mb_answers_413_and_creates_nothing(api, alice):
    before = await sync_to_async(row_counts)()
    body = payload(goal="g" * (1024 * 1024))

    response = await create(api, alice, body)

    assert response.status_code == 413
    assert "1 MB" in response.json()["detail"]
    assert await sync_to_async(row_counts)() == before


async def test_generate_true_starts_generation_and_returns_the_task_id(api, alice):
    response = await create(api, alice, payload(generate=True))

    assert response.status_code == 201
    task_id = response.json()["task_id"]
    assert task_id.startswith("generate-")
    detail = await wait_for_detail(
        api,
        alice,
        response.json()["roadmap_id"],
        lambda d: (
            d["status_counts"]["quiz"]["completed"]
            and d["status_counts"]["tutorial"]["completed"]
            and d["status_counts"]["resources"]["completed"]
        ),
    )
    concept_row = first_concept(detail)
    assert concept_row["content_status"] == "completed"
    assert concept_row["content_version"] == 1
    assert concept_row["content_ref"].startswith(settings.MEDIA_URL)
    assert concept_row["content_ref"].endswith("/concept_001/v1.md")
    assert concept_row["content_summary"]
    assert concept_row["resources_status"] == "completed"
    assert concept_row["resources_count"] > 0
    assert concept_row["quiz_status"] == "completed"
    assert concept_row["quiz_questions_count"] > 0
    assert concept_row["tasks"] == {"tutorial": None, "resources": None, "quiz": None}


async def test_generate_true_answers_with_generating_statuses_and_their_task(api, alice, settings):
    # A queue that no worker consumes: the work is committed as generating, and stays so.
    settings.TASKS = {"default": {"BACKEND": "django.tasks.backends.dummy.DummyBackend"}}

    response = await create(api, alice, payload(generate=True))

    body = response.json()
    assert response.status_code == 201
    concept_row = first_concept(body)
    assert concept_row["tasks"] == {t: body["task_id"] for t in ("tutorial", "resources", "quiz")}
    assert (concept_row["content_status"], concept_row["resources_status"]) == (
        "generating",
        "generating",
    )
    assert body["status_counts"]["quiz"] == {
        "pending": 0, "generating": 1, "completed": 0, "failed": 0,
    }  # fmt: skip
    # A reload shows the same in-flight task, so the page can resubscribe.
    detail = (await api.get(f"/api/v1/roadmaps/{body['roadmap_id']}", headers=auth(alice))).json()
    assert first_concept(detail)["tasks"]["quiz"] == body["task_id"]


async def test_generate_true_is_not_limited_by_the_batch_cap(api, alice, settings):
    """A whole roadmap is bounded by ROADMAP_MAX_CONCEPTS; the batch cap is for
    retry selections and must not refuse a valid roadmap."""
    settings.BATCH_MAX_PAIRS = 2

    response = await create(api, alice, payload(generate=True))

    assert response.status_code == 201
    assert response.json()["task_id"].startswith("generate-")
    await wait_for_detail(
        api,
        alice,
        response.json()["roadmap_id"],
        lambda d: d["status_counts"]["quiz"]["completed"] == 1,
    )


async def wait_for_detail(api, user, roadmap_id, done) -> dict:
    """Poll the detail like a client would, until `done(detail)` holds."""
    async with asyncio.timeout(20):
        while True:
            detail = (await api.get(f"/api/v1/roadmaps/{roadmap_id}/", headers=auth(user))).json()
            if done(detail):
                return detail
            await asyncio.sleep(0.05)


# --- Read ---------------------------------------------------------------------


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


# --- OpenAPI ------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/v1/schema/", "/api/v1/schema", "/api/v1/docs/"])
async def test_schema_and_docs_answer_200(api, path):
    response = await api.get(path)

    assert response.status_code == 200


async def test_schema_documents_the_roadmap_endpoints(api):
    response = await api.get("/api/v1/schema/?format=json")

    schema = response.json()
    assert {"get", "post"} <= set(schema["paths"]["/api/v1/roadmaps/"])
    assert {"get", "delete"} <= set(schema["paths"]["/api/v1/roadmaps/{roadmap_id}/"])
    assert "post" in schema["paths"]["/api/v1/auth/token/"]
    concept_schema = schema["components"]["schemas"]["ConceptDetail"]["properties"]
    assert set(concept_schema) == CONCEPT_FIELDS


def test_schema_generates_without_warnings_for_the_roadmap_views():
    from drf_spectacular.drainage import GENERATOR_STATS
    from drf_spectacular.generators import SchemaGenerator

    from roadmaps.urls import urlpatterns

    GENERATOR_STATS.reset()
    SchemaGenerator(patterns=[*urlpatterns]).get_schema(request=None, public=True)

    assert not GENERATOR_STATS, {**GENERATOR_STATS._warn_cache, **GENERATOR_STATS._error_cache}


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
