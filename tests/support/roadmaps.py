"""Shared data and helpers for the roadmap API tests."""

import copy

from roadmaps.models import Concept, ConceptContent, Module, Roadmap, Stage
from tests.conftest import DEMO_FRAMEWORK, auth

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


def framework_of(*, stages: int, modules: int, concepts: int) -> dict:
    """A framework of that many stages, modules and concepts in all, spread as
    evenly as they go (every stage has a module while modules last, and so on)."""
    module_rows = [{"name": f"Module {m}", "concepts": []} for m in range(1, modules + 1)]
    for i in range(concepts):
        module_rows[i % modules]["concepts"].append(
            {"concept_id": f"c{i + 1:03d}", "name": f"Concept {i + 1}"}
        )
    stage_rows = [{"name": f"Stage {s}", "modules": []} for s in range(1, stages + 1)]
    for m, module in enumerate(module_rows):
        stage_rows[m % stages]["modules"].append(module)
    return {"stages": stage_rows}


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
