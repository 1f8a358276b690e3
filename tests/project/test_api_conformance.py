"""What the API fuzz (tests/system/test_api_fuzz.py, Schemathesis) found, one
regression test each, through HTTP: every answer under /api/ is JSON, documented,
and conforms to the schema."""

import pytest
from asgiref.sync import sync_to_async

from tests.conftest import auth

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/roadmaps/{id}/concepts/c001/quiz/retry",
        "/api/v1/roadmaps/{id}/concepts/retry-batch",
        "/api/v1/roadmaps/{id}/generate",
        "/api/v1/tasks/generate-0/cancel",
    ],
)
async def test_options_on_an_action_answers_200_not_500(api, alice, make_roadmap, path):
    roadmap = await sync_to_async(make_roadmap)(alice)

    response = await api.options(path.format(id=roadmap.pk), headers=auth(alice))

    assert response.status_code == 200, response.text
    assert response.json()["name"]
    assert "Traceback" not in response.text


@pytest.mark.parametrize(
    "path", ["/api/v1/roadmaps/0.5/", "/api/v1/tasks/%C3%92l/cancel/", "/api/v1/nothing"]
)
async def test_a_path_no_route_matches_answers_json_404(api, alice, path):
    response = await api.get(path, headers=auth(alice))

    assert response.status_code == 404
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == {"detail": "Not found."}


async def test_outside_the_api_django_keeps_its_html_404(api):
    response = await api.get("/nothing-here")

    assert response.status_code == 404
    assert response.headers["Content-Type"].startswith("text/html")


async def test_an_unknown_concept_answers_404_without_naming_a_model(api, alice, make_roadmap):
    roadmap = await sync_to_async(make_roadmap)(alice)

    response = await api.get(
        f"/api/v1/roadmaps/{roadmap.pk}/concepts/nope/quiz", headers=auth(alice)
    )

    assert response.status_code == 404
    assert response.json() == {"detail": "Not found."}


async def test_content_missing_documents_status_as_optional(schema):
    assert schema["components"]["schemas"]["ContentMissing"]["required"] == ["detail"]


async def test_a_page_past_the_last_answers_a_documented_404(api, alice, schema):
    response = await api.get("/api/v1/roadmaps/?page=null", headers=auth(alice))

    assert response.status_code == 404
    assert set(response.json()) == {"detail"}
    assert "404" in schema["paths"]["/api/v1/roadmaps/"]["get"]["responses"]


async def test_validation_errors_nest_as_deep_as_the_input(api, alice, schema):
    body = {"title": "t", "goal": "", "preferences": {}, "framework": {"stages": []}}

    response = await api.post("/api/v1/roadmaps/", json=body, headers=auth(alice))

    assert response.status_code == 400
    assert response.json()["framework"]["stages"] == {
        "non_field_errors": ["This list may not be empty."]
    }
    tree = schema["components"]["schemas"]["ValidationErrorTree"]
    assert {"type": "string"} in tree["anyOf"]  # `{"detail": "JSON parse error - …"}`


async def test_a_body_that_is_not_json_answers_400_with_a_detail(api, alice, make_roadmap):
    roadmap = await sync_to_async(make_roadmap)(alice)

    response = await api.post(
        f"/api/v1/roadmaps/{roadmap.pk}/concepts/retry-batch",
        content=b"\xba\x16R",
        headers={**auth(alice), "Content-Type": "application/json"},
    )

    assert response.status_code == 400
    assert response.json()["detail"].startswith("JSON parse error")


async def test_token_login_takes_json_and_forms_but_not_multipart(api, alice, schema):
    documented = schema["paths"]["/api/v1/auth/token/"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" not in documented

    form = await api.post(
        "/api/v1/auth/token/", data={"username": "alice", "password": "alice-password"}
    )
    multipart = await api.post(
        "/api/v1/auth/token/", files={"username": (None, "alice")}, data={"password": "x"}
    )

    assert form.status_code == 200 and form.json()["token"] == alice.token
    assert multipart.status_code == 415


async def test_content_items_and_questions_have_their_own_components(schema):
    components = schema["components"]["schemas"]
    items = components["Resources"]["properties"]["items"]["allOf"][0]["$ref"]
    questions = components["Quiz"]["properties"]["questions"]["allOf"][0]["$ref"]

    assert items == "#/components/schemas/ResourceItems"
    assert components["ResourceItems"]["type"] == "array"
    assert questions == "#/components/schemas/QuizQuestions"
    assert components["QuizQuestions"]["type"] == "array"


async def test_task_id_of_a_created_roadmap_is_optional(api, alice, schema):
    assert "task_id" not in schema["components"]["schemas"]["RoadmapCreated"]["required"]
