"""Creating a roadmap (DESIGN §4): the design example, the limits, every bad input
answered 400 with nothing created, and `"generate": true`."""

import asyncio
import json
import time

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from rest_framework.fields import empty

from roadmaps.models import ConceptContent, Roadmap
from roadmaps.serializers import StageInputSerializer
from tests.conftest import auth, framework_with
from tests.support.roadmaps import (
    ALL_PENDING,
    DESIGN_EXAMPLE,
    concept,
    create,
    first_concept,
    framework_of,
    messages_at,
    payload,
    row_counts,
    with_concepts,
    without,
)

pytestmark = pytest.mark.django_db(transaction=True)


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


async def test_a_roadmap_at_every_limit_is_created_and_read(api, alice):
    stages, modules, concepts = (
        settings.ROADMAP_MAX_STAGES,
        settings.ROADMAP_MAX_MODULES,
        settings.ROADMAP_MAX_CONCEPTS,
    )
    body = payload(framework=framework_of(stages=stages, modules=modules, concepts=concepts))

    created = await create(api, alice, body)
    assert created.status_code == 201, created.text[:500]
    read = await api.get(f"/api/v1/roadmaps/{created.json()['roadmap_id']}/", headers=auth(alice))

    assert read.status_code == 200
    tree = read.json()["framework"]["stages"]
    assert len(tree) == stages
    assert sum(len(stage["modules"]) for stage in tree) == modules
    assert sum(len(m["concepts"]) for stage in tree for m in stage["modules"]) == concepts


# A limit is counted over the whole roadmap: each stage here stays under it.
TOO_MANY_MODULES = framework_of(stages=2, modules=settings.ROADMAP_MAX_MODULES + 1, concepts=300)
TOO_MANY_STAGES = framework_of(stages=settings.ROADMAP_MAX_STAGES + 1, modules=60, concepts=60)


@pytest.mark.parametrize(
    ("framework", "key"),
    [
        (TOO_MANY_STAGES, "stages"),
        (TOO_MANY_MODULES, "modules"),
        (framework_with(settings.ROADMAP_MAX_CONCEPTS + 1), "concepts"),
    ],
    ids=["stages", "modules", "concepts"],
)
async def test_over_a_size_limit_answers_400_naming_it(api, alice, framework, key):
    limit = getattr(settings, f"ROADMAP_MAX_{key.upper()}")
    before = await sync_to_async(row_counts)()

    response = await create(api, alice, payload(framework=framework))

    assert response.status_code == 400
    assert response.json() == {
        "framework": {key: [f"A roadmap has at most {limit} {key}; this one has {limit + 1}."]}
    }
    assert await sync_to_async(row_counts)() == before


async def test_a_1_mb_body_of_80000_stages_is_refused_before_validating_them(
    api, alice, monkeypatch
):
    """Validated one by one these took seconds, and created they held the database
    for minutes; counting them first refuses the body in about the time to parse it."""
    validated = []
    validate_stage = StageInputSerializer.run_validation

    def counting(self, data=empty):
        validated.append(data)
        return validate_stage(self, data)

    monkeypatch.setattr(StageInputSerializer, "run_validation", counting)
    stages = [{"name": "s"} for _ in range(79_999)]
    stages.insert(0, DESIGN_EXAMPLE["framework"]["stages"][0])
    body = json.dumps(payload(framework={"stages": stages}), separators=(",", ":")).encode()
    assert 1_000_000 < len(body) <= settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    before = await sync_to_async(row_counts)()

    started = time.perf_counter()
    response = await api.post(
        "/api/v1/roadmaps/",
        content=body,
        headers={**auth(alice), "Content-Type": "application/json"},
    )
    elapsed = time.perf_counter() - started

    assert response.status_code == 400
    assert (
        f"at most {settings.ROADMAP_MAX_STAGES} stages; this one has 80000"
        in response.json()["framework"]["stages"][0]
    )
    assert await sync_to_async(row_counts)() == before
    assert validated == []
    assert elapsed < 5, f"refused in {elapsed:.2f} s"


# Where a field of the first concept is reported in DRF's field-keyed errors.
FIRST_CONCEPT = ("framework", "stages", 0, "modules", 0, "concepts", 0)

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
        (*FIRST_CONCEPT, "name"),
    ),
    "empty_concept_name": (
        with_concepts(concept(name="")),
        (*FIRST_CONCEPT, "name"),
    ),
    "whitespace_concept_name": (
        with_concepts(concept(name="   ")),
        (*FIRST_CONCEPT, "name"),
    ),
    "concept_name_too_long": (
        with_concepts(concept(name="n" * 201)),
        (*FIRST_CONCEPT, "name"),
    ),
    "concept_name_not_a_string": (
        with_concepts(concept(name=["a"])),
        (*FIRST_CONCEPT, "name"),
    ),
    "description_too_long": (
        with_concepts(concept(description="d" * 2001)),
        (*FIRST_CONCEPT, "description"),
    ),
    "concept_not_an_object": (
        with_concepts("c1"),
        FIRST_CONCEPT,
    ),
    "concept_id_with_space": (
        with_concepts(concept(concept_id="has space")),
        (*FIRST_CONCEPT, "concept_id"),
    ),
    "concept_id_with_slash": (
        with_concepts(concept(concept_id="a/b")),
        (*FIRST_CONCEPT, "concept_id"),
    ),
    "concept_id_too_long": (
        with_concepts(concept(concept_id="x" * 65)),
        (*FIRST_CONCEPT, "concept_id"),
    ),
    "concept_id_empty": (
        with_concepts(concept(concept_id="")),
        (*FIRST_CONCEPT, "concept_id"),
    ),
    "concept_id_not_a_string": (
        with_concepts(concept(concept_id=7)),
        (*FIRST_CONCEPT, "concept_id"),
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
        # The first concept's three pairs, which are the ones checked below.
        lambda d: all(
            first_concept(d)[field] == "completed"
            for field in ("content_status", "resources_status", "quiz_status")
        ),
    )
    concept_row = first_concept(detail)
    assert concept_row["content_status"] == "completed"
    assert concept_row["content_version"] == 1
    roadmap_id = response.json()["roadmap_id"]
    assert concept_row["content_ref"] == (
        f"/api/v1/roadmaps/{roadmap_id}/concepts/concept_001/tutorial/v1.md"
    )
    tutorial_file = await api.get(concept_row["content_ref"], headers=auth(alice))
    assert tutorial_file.status_code == 200
    assert tutorial_file.text.startswith("# ")
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


@pytest.mark.parametrize("generate", [True, 1, "true", "on"])
async def test_creating_with_generate_is_throttled_whatever_the_spelling_of_true(
    api, alice, settings, generate
):
    """The throttle follows the validated value: every spelling the serializer takes
    for true starts work, so every one counts against RETRY_THROTTLE_RATE."""
    settings.RETRY_THROTTLE_RATE = "1/minute"

    first = await create(api, alice, payload(generate=generate))
    second = await create(api, alice, payload(generate=generate, title="Second"))

    assert first.status_code == 201 and first.json()["task_id"]
    assert second.status_code == 429 and int(second.headers["Retry-After"]) > 0
    assert await sync_to_async(Roadmap.objects.filter(title="Second").exists)() is False
