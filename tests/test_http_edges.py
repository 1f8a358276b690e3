"""The HTTP edges of a deployment: request bodies without a Content-Length, TLS
behind a proxy, the production checks, the debug page, static files (issue 13)."""

import json

import httpx
import pytest
from asgiref.sync import sync_to_async

from generation.models import GenerationTask
from notifications.models import Event
from tests.conftest import auth
from tests.support.daphne_server import daphne_server
from tests.test_batch import batch_url, fail_contents, statuses

pytestmark = pytest.mark.django_db(transaction=True)


async def chunks(body: bytes):
    """A generator body: httpx sends it with Transfer-Encoding: chunked."""
    yield body[:5]
    yield body[5:]


async def test_chunked_batch_retry_answers_411_and_changes_nothing(tmp_path, alice, make_roadmap):
    roadmap = await sync_to_async(make_roadmap)(alice, concepts=3)
    await fail_contents(roadmap, 9)
    before = await statuses(roadmap)
    events_before = await Event.objects.acount()
    body = json.dumps({"concept_ids": ["c001"], "content_types": ["quiz"]}).encode()

    with daphne_server(tmp_path) as server:
        async with httpx.AsyncClient(base_url=server.http_url, timeout=20) as client:
            request = client.build_request(
                "POST",
                batch_url(roadmap),
                content=chunks(body),
                headers={**auth(alice), "Content-Type": "application/json"},
            )
            assert request.headers["Transfer-Encoding"] == "chunked"
            assert "Content-Length" not in request.headers
            refused = await client.send(request)

            assert refused.status_code == 411, refused.text
            assert "Content-Length" in refused.json()["detail"]
            assert await statuses(roadmap) == before
            assert not await GenerationTask.objects.aexists()
            assert await Event.objects.acount() == events_before

            # The same body with a Content-Length retries exactly the selected pair.
            accepted = await client.post(
                batch_url(roadmap),
                content=body,
                headers={**auth(alice), "Content-Type": "application/json"},
            )

    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["data"]["total"] == 1
    after = await statuses(roadmap)
    changed = {pair for pair in before if after[pair] != before[pair]}
    assert changed == {("c001", "quiz")}


async def test_a_bodiless_request_without_content_length_passes(api, alice, make_roadmap):
    """Only bodies are refused: a POST with no body (and no Content-Length) is served."""
    roadmap = await sync_to_async(make_roadmap)(alice, concepts=1)

    response = await api.post(f"/api/v1/roadmaps/{roadmap.pk}/generate", headers=auth(alice))

    assert response.status_code == 202, response.text
