"""Authentication (DESIGN §4): tokens from the token endpoint, 401 without credentials."""

import json
import secrets

import httpx
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


def client_at(address: str) -> httpx.AsyncClient:
    """The ASGI app seen from one client address (its REMOTE_ADDR)."""
    from roadmap_project.asgi import application

    transport = httpx.ASGITransport(app=application, client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


def unique_address() -> str:
    """Throttle history lives in the shared cache (Redis in the distributed pass)."""
    return f"10.{secrets.randbelow(250)}.{secrets.randbelow(250)}.{secrets.randbelow(250)}"


async def test_token_logins_are_throttled_per_username_and_per_address(make_user, settings):
    settings.AUTH_THROTTLE_RATE = "5/minute"
    # Fresh names and addresses: other tests' logins are in the shared cache too.
    carol, dave = [
        await sync_to_async(make_user)(f"{name}-{secrets.token_hex(4)}")
        for name in ("carol", "dave")
    ]
    wrong = {"username": carol.username, "password": "wrong"}
    addresses = [unique_address() for _ in range(3)]

    async with client_at(addresses[0]) as first, client_at(addresses[1]) as second:
        guesses = [
            (await first.post("/api/v1/auth/token", json=wrong)).status_code for _ in range(5)
        ]
        same_address = await first.post(
            "/api/v1/auth/token",
            json={"username": dave.username, "password": f"{dave.username}-password"},
        )
        same_username = await second.post(
            "/api/v1/auth/token",
            json={"username": carol.username, "password": f"{carol.username}-password"},
        )
    async with client_at(addresses[2]) as third:
        elsewhere = await third.post(
            "/api/v1/auth/token",
            json={"username": dave.username, "password": f"{dave.username}-password"},
        )

    assert guesses == [400] * 5
    assert same_address.status_code == 429 and int(same_address.headers["Retry-After"]) > 0
    assert same_username.status_code == 429  # even with the right password
    assert "token" not in same_username.json()
    assert (elsewhere.status_code, elsewhere.json()) == (200, {"token": dave.token})
