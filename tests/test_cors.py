"""A browser frontend on another origin (issue 13, DESIGN §5 and §8): REST through
django-cors-headers, and event streams whose Origin is one of CORS_ALLOWED_ORIGINS.
In-process against the ASGI application, then over real sockets with a daphne that
reads CORS_ALLOWED_ORIGINS from its environment."""

import asyncio
import json

import httpx
import pytest
from asgiref.sync import sync_to_async
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import auth
from tests.support.daphne_server import daphne_server
from tests.test_websocket import close_code, connect, session_cookie

pytestmark = pytest.mark.django_db(transaction=True)

FRONTEND = "https://app.example.com"
DEV_SERVER = "http://localhost:5173"


@pytest.fixture
def frontends(settings):
    """Set in-process: django-cors-headers and the consumer read it per request."""
    settings.CORS_ALLOWED_ORIGINS = [FRONTEND, DEV_SERVER]


def preflight(origin: str) -> dict[str, str]:
    """What a browser sends before a JSON POST carrying a token."""
    return {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }


def header_list(response: httpx.Response, name: str) -> set[str]:
    return {item.strip().lower() for item in response.headers.get(name, "").split(",")}


# --- REST ----------------------------------------------------------------------------


async def test_preflight_from_a_listed_origin_allows_a_token_json_post(api, frontends):
    response = await api.options("/api/v1/roadmaps/", headers=preflight(FRONTEND))

    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == FRONTEND
    assert {"authorization", "content-type"} <= header_list(
        response, "access-control-allow-headers"
    )
    assert "post" in header_list(response, "access-control-allow-methods")
    # Tokens need no credentials mode; cookies are never offered cross-origin.
    assert "access-control-allow-credentials" not in response.headers
    assert "origin" in header_list(response, "vary")


async def test_preflight_without_trailing_slash_is_answered_before_any_redirect(api, frontends):
    response = await api.options("/api/v1/roadmaps", headers=preflight(DEV_SERVER))

    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == DEV_SERVER


@pytest.mark.parametrize(
    "origin",
    [
        "https://evil.example",
        "http://app.example.com",  # another scheme
        "https://app.example.com:8443",  # another port
        "http://localhost:5174",
    ],
)
async def test_preflight_from_an_unlisted_origin_gets_no_allow_origin(api, frontends, origin):
    response = await api.options("/api/v1/roadmaps/", headers=preflight(origin))

    assert "access-control-allow-origin" not in response.headers
    assert "access-control-allow-headers" not in response.headers


async def test_no_origin_is_allowed_by_default(api, alice):
    response = await api.get(
        "/api/v1/roadmaps/", headers={**auth(alice), "Origin": "http://localhost:5173"}
    )

    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers


async def test_an_authenticated_get_from_a_listed_origin_is_readable(
    api, frontends, alice, make_roadmap
):
    roadmap = await sync_to_async(make_roadmap)(alice)

    response = await api.get("/api/v1/roadmaps/", headers={**auth(alice), "Origin": FRONTEND})

    assert response.status_code == 200
    assert [item["roadmap_id"] for item in response.json()["results"]] == [str(roadmap.pk)]
    assert response.headers["access-control-allow-origin"] == FRONTEND
    assert "access-control-allow-credentials" not in response.headers
    # Throttled answers say when to retry; a script may only read it if exposed.
    assert header_list(response, "access-control-expose-headers") == {"retry-after"}


# --- WebSocket (Channels' communicator) ---------------------------------------------


async def test_a_listed_origin_may_open_a_stream(alice, make_roadmap, frontends):
    """app.example.com is not in ALLOWED_HOSTS: only the CORS list admits it."""
    roadmap = await sync_to_async(make_roadmap)(alice)
    path = f"/api/v1/ws/roadmaps/{roadmap.pk}"

    for origin in (FRONTEND, DEV_SERVER):
        communicator, accepted = await connect(
            path, user=alice, headers=[(b"origin", origin.encode())]
        )
        assert accepted and await communicator.receive_nothing(timeout=0.2)
        await communicator.send_json_to({"type": "ping"})
        assert await communicator.receive_json_from(timeout=5) == {"type": "pong"}
        await communicator.disconnect()


async def test_a_listed_origin_uses_the_session_cookie_only_with_credentials_allowed(
    alice, make_roadmap, frontends, settings
):
    """As for REST: without CORS_ALLOW_CREDENTIALS a listed origin's script acts by
    its token, never by a logged-in user's cookie."""
    roadmap = await sync_to_async(make_roadmap)(alice)
    path = f"/api/v1/ws/roadmaps/{roadmap.pk}"
    headers = [await session_cookie(alice), (b"origin", FRONTEND.encode())]

    without_credentials = await close_code(path, headers=headers)
    settings.CORS_ALLOW_CREDENTIALS = True
    communicator, accepted = await connect(path, headers=headers)

    assert without_credentials == 4403
    assert accepted and await communicator.receive_nothing(timeout=0.2)
    await communicator.disconnect()


@pytest.mark.parametrize(
    "origin",
    [
        b"https://evil.example",
        b"http://app.example.com",  # the listed host on another scheme
        b"https://app.example.com:8443",  # and on another port
        b"http://localhost:5173.evil.example",
        b"null",  # sandboxed frames and local files: never, even when listed
        b"http://[::1",  # not a URL at all
    ],
)
async def test_an_unlisted_origin_is_closed_4403(alice, make_roadmap, settings, origin):
    settings.CORS_ALLOWED_ORIGINS = [FRONTEND, DEV_SERVER, "null"]
    roadmap = await sync_to_async(make_roadmap)(alice)

    code = await close_code(
        f"/api/v1/ws/roadmaps/{roadmap.pk}", user=alice, headers=[(b"origin", origin)]
    )

    assert code == 4403


async def test_a_listed_origin_is_refused_once_it_is_removed(alice, make_roadmap, settings):
    roadmap = await sync_to_async(make_roadmap)(alice)
    settings.CORS_ALLOWED_ORIGINS = []

    code = await close_code(
        f"/api/v1/ws/roadmaps/{roadmap.pk}", user=alice, headers=[(b"origin", FRONTEND.encode())]
    )

    assert code == 4403


# --- over real sockets: daphne configured by its environment --------------------------


async def open_and_ping(url: str, origin: str) -> dict | int:
    """The pong if the socket stays open, else the close code."""
    async with asyncio.timeout(20), ws_connect(url, origin=origin) as socket:
        try:
            await socket.send('{"type": "ping"}')
            return json.loads(await socket.recv())
        except ConnectionClosed:
            return socket.close_code


async def test_a_real_browser_origin_against_a_daphne_from_its_environment(
    tmp_path, alice, make_roadmap
):
    roadmap = await sync_to_async(make_roadmap)(alice)
    with daphne_server(tmp_path, CORS_ALLOWED_ORIGINS=f" {DEV_SERVER} , {FRONTEND}") as server:
        async with httpx.AsyncClient(base_url=server.http_url) as client:
            allowed = await client.options("/api/v1/roadmaps/", headers=preflight(DEV_SERVER))
            refused = await client.options(
                "/api/v1/roadmaps/", headers=preflight("http://evil.example:5173")
            )
            read = await client.get(
                "/api/v1/roadmaps/", headers={**auth(alice), "Origin": DEV_SERVER}
            )
        url = f"{server.ws_url}/api/v1/ws/roadmaps/{roadmap.pk}?token={alice.token}"
        # app.example.com is not in ALLOWED_HOSTS: only the CORS list admits it.
        listed = [await open_and_ping(url, origin) for origin in (FRONTEND, DEV_SERVER)]
        # The handshake's own origin, from daphne's Host and scheme; not another port.
        own = await open_and_ping(url, server.http_url)
        unlisted = [
            await open_and_ping(url, origin)
            for origin in (
                "http://evil.example:5173",
                "http://localhost:5174",
                f"http://127.0.0.1:{server.port + 1}",
            )
        ]

    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == DEV_SERVER
    assert {"authorization", "content-type"} <= header_list(allowed, "access-control-allow-headers")
    assert "access-control-allow-origin" not in refused.headers
    assert read.status_code == 200 and read.json()["count"] == 1
    assert read.headers["access-control-allow-origin"] == DEV_SERVER
    assert listed == [{"type": "pong"}, {"type": "pong"}]
    assert own == {"type": "pong"}
    assert unlisted == [4403, 4403, 4403]
