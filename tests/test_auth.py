"""Authentication (DESIGN §4): tokens from the token endpoint, 401 without credentials."""

import json

import pytest
from asgiref.sync import sync_to_async

from roadmaps.models import Roadmap

pytestmark = pytest.mark.django_db(transaction=True)


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
