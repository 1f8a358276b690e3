"""Authentication (DESIGN §4): tokens from the token endpoint, 401 without credentials."""

import json
import secrets

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.test import Client

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


def fullwidth(text: str) -> str:
    """The same name in fullwidth letters, which NFKC (and so Django's login form)
    reads as the ASCII ones."""
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


async def token_login(client: httpx.AsyncClient, username: str, password: str) -> int:
    response = await client.post(
        "/api/v1/auth/token", json={"username": username, "password": password}
    )
    return response.status_code


async def fresh_user(make_user, name: str):
    """Failure history lives in the shared cache (Redis in the distributed pass),
    across tests: every test counts on names and addresses of its own."""
    return await sync_to_async(make_user)(f"{name}-{secrets.token_hex(4)}")


async def test_failed_token_logins_are_limited_per_address(make_user, settings):
    settings.AUTH_THROTTLE_RATE = "5/minute"
    carol, dave = [await fresh_user(make_user, name) for name in ("carol", "dave")]
    here, elsewhere = unique_address(), unique_address()

    async with client_at(here) as client:
        guesses = [await token_login(client, carol.username, "wrong") for _ in range(5)]
        refused = await client.post(
            "/api/v1/auth/token",
            json={"username": dave.username, "password": f"{dave.username}-password"},
        )
    async with client_at(elsewhere) as client:
        same_user_elsewhere = await token_login(
            client, carol.username, f"{carol.username}-password"
        )

    assert guesses == [400] * 5
    assert refused.status_code == 429  # another user, even with the right password
    assert int(refused.headers["Retry-After"]) > 0
    assert "token" not in refused.json()
    # One address's failures do not lock the user out everywhere.
    assert same_user_elsewhere == 200


async def test_successful_logins_do_not_count(make_user, settings):
    settings.AUTH_THROTTLE_RATE = "3/minute"
    carol = await fresh_user(make_user, "carol")

    async with client_at(unique_address()) as client:
        logins = [
            await token_login(client, carol.username, f"{carol.username}-password")
            for _ in range(10)
        ]

    assert logins == [200] * 10


async def test_failed_logins_of_one_username_from_many_addresses_are_limited(make_user, settings):
    settings.AUTH_USERNAME_THROTTLE_RATE = "4/hour"
    carol, dave = [await fresh_user(make_user, name) for name in ("carol", "dave")]

    guesses = []
    for _ in range(4):
        async with client_at(unique_address()) as client:
            guesses.append(await token_login(client, carol.username, "wrong"))
    async with client_at(unique_address()) as client:
        right_password = await token_login(client, carol.username, f"{carol.username}-password")
        other_user = await token_login(client, dave.username, f"{dave.username}-password")

    assert guesses == [400] * 4
    assert right_password == 429
    assert other_user == 200


async def test_username_variants_count_as_the_same_username(make_user, settings):
    """Spaces, case and fullwidth letters name the same account to the login form
    (which strips and NFKC-normalises), so they share its failure count."""
    settings.AUTH_USERNAME_THROTTLE_RATE = "3/hour"
    carol = await fresh_user(make_user, "carol")
    variants = [f" {carol.username}", f"{carol.username}\t", carol.username.upper()]

    for variant in variants:
        async with client_at(unique_address()) as client:
            assert await token_login(client, variant, "wrong") == 400
    refused = []
    for variant in [carol.username, fullwidth(carol.username), *variants]:
        async with client_at(unique_address()) as client:
            refused.append(await token_login(client, variant, f"{carol.username}-password"))

    assert refused == [429] * 5


async def test_behind_trusted_proxies_clients_are_told_apart_by_forwarded_for(make_user, settings):
    """The documented nginx deployment sets NUM_PROXIES=1: each client behind it has
    its own address window, not the proxy's one."""
    settings.AUTH_THROTTLE_RATE = "3/minute"
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    carol, dave = [await fresh_user(make_user, name) for name in ("carol", "dave")]
    attacker, user = unique_address(), unique_address()

    async with client_at("127.0.0.1") as proxy:
        for _ in range(3):
            await proxy.post(
                "/api/v1/auth/token",
                json={"username": carol.username, "password": "wrong"},
                headers={"X-Forwarded-For": f"203.0.113.9, {attacker}"},
            )
        attacker_again = await proxy.post(
            "/api/v1/auth/token",
            json={"username": dave.username, "password": f"{dave.username}-password"},
            headers={"X-Forwarded-For": attacker},
        )
        someone_else = await proxy.post(
            "/api/v1/auth/token",
            json={"username": dave.username, "password": f"{dave.username}-password"},
            headers={"X-Forwarded-For": user},
        )

    assert attacker_again.status_code == 429
    assert someone_else.status_code == 200


def test_admin_login_is_limited_like_the_others(make_user, settings):
    settings.AUTH_THROTTLE_RATE = "10/minute"
    staff = make_user(f"operator-{secrets.token_hex(4)}", is_staff=True)
    address = unique_address()
    client = Client()

    def log_in(password: str):
        return client.post(
            "/admin/login/?next=/admin/",
            {"username": staff.username, "password": password},
            REMOTE_ADDR=address,
        )

    guesses = [log_in("wrong").status_code for _ in range(10)]
    right_password = log_in(f"{staff.username}-password")

    assert guesses == [200] * 10
    assert right_password.status_code == 429
    assert int(right_password["Retry-After"]) > 0
    assert "Too many login attempts" in right_password.text
    assert "_auth_user_id" not in client.session
    assert client.get("/admin/").status_code == 302  # still the login page


def test_one_entry_points_failures_count_at_the_others(make_user, settings):
    """Failures are counted where authentication fails, whichever way in: guesses at
    the login page lock the token endpoint and the admin login too."""
    settings.AUTH_THROTTLE_RATE = "4/minute"
    carol = make_user(f"carol-{secrets.token_hex(4)}")
    address = unique_address()
    client = Client()
    for _ in range(4):
        client.post("/login/", {"username": carol.username, "password": "x"}, REMOTE_ADDR=address)

    token = client.post(
        "/api/v1/auth/token/",
        {"username": carol.username, "password": f"{carol.username}-password"},
        content_type="application/json",
        REMOTE_ADDR=address,
    )
    admin_login = client.post(
        "/admin/login/", {"username": carol.username, "password": "x"}, REMOTE_ADDR=address
    )

    assert token.status_code == 429
    assert admin_login.status_code == 429
