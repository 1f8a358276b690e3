"""The OpenAPI contract: served, complete, typed, and its docs pages offline."""

import re

import pytest
from django.core.management import call_command

from tests.support.openapi import DOCUMENTED_ANSWERS
from tests.support.roadmaps import CONCEPT_FIELDS

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize(
    "path", ["/api/v1/schema/", "/api/v1/schema", "/api/v1/docs/", "/api/v1/redoc/"]
)
async def test_schema_and_docs_answer_200(api, path):
    response = await api.get(path)

    assert response.status_code == 200


async def test_schema_documents_every_operation_and_answer(schema):
    documented = {
        (method, path): set(operation["responses"])
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
    }

    assert documented == DOCUMENTED_ANSWERS
    concept_schema = schema["components"]["schemas"]["ConceptDetail"]["properties"]
    assert set(concept_schema) == CONCEPT_FIELDS


def free_form_objects(schema: dict) -> list[str]:
    """Where a response schema is an object (or array) whose shape is not stated."""
    components = schema["components"]["schemas"]
    found: list[str] = []

    def walk(node: dict, where: str, seen: frozenset) -> None:
        while "$ref" in node:
            node = components[node["$ref"].rsplit("/", 1)[-1]]
        if id(node) in seen:
            return
        seen |= {id(node)}
        for key in ("oneOf", "anyOf", "allOf"):
            for index, option in enumerate(node.get(key, [])):
                walk(option, f"{where}.{key}[{index}]", seen)
        if node.get("type") == "array":
            if not node.get("items"):
                found.append(f"{where}: array of anything")
            else:
                walk(node["items"], f"{where}[]", seen)
        if node.get("type") == "object" or "properties" in node:
            extra = node.get("additionalProperties")
            if (not node.get("properties") and not isinstance(extra, dict | None)) or (
                not node.get("properties") and not extra
            ):
                found.append(f"{where}: free-form object")
            for name, field in node.get("properties", {}).items():
                walk(field, f"{where}.{name}", seen)
            if isinstance(extra, dict) and extra:
                walk(extra, f"{where}{{*}}", seen)

    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            for code, response in operation["responses"].items():
                for media in response.get("content", {}).values():
                    walk(media["schema"], f"{method.upper()} {path} {code}", frozenset())
    return found


async def test_no_documented_response_is_a_free_form_object(schema):
    assert free_form_objects(schema) == []


def test_free_form_check_finds_an_untyped_answer():
    """The check above is not vacuous: an object without properties is reported."""
    schema = {
        "components": {"schemas": {"Anything": {"type": "object"}}},
        "paths": {
            "/x": {
                "get": {
                    "responses": {
                        "200": {
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Anything"}
                                }
                            }
                        }
                    }
                }
            }
        },
    }

    assert free_form_objects(schema) == ["GET /x 200: free-form object"]


def test_schema_validates_without_warnings(tmp_path):
    """What CI runs: `manage.py spectacular --validate --fail-on-warn`."""
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "s.yml"))

    assert "/api/v1/tasks/{task_id}/cancel/" in (tmp_path / "s.yml").read_text()


ASSET = re.compile(r"""<(?:script|link)\b[^>]*\b(?:src|href)="([^"]+)\"""")


@pytest.mark.parametrize("path", ["/api/v1/docs/", "/api/v1/redoc/"])
async def test_docs_pages_load_only_the_projects_own_static_files(api, path):
    page = (await api.get(path)).text
    assets = ASSET.findall(page)

    assert assets, page
    assert all(url.startswith("/static/drf_spectacular_sidecar/") for url in assets), assets
    for url in assets:
        assert (await api.get(url)).status_code == 200, url
