"""A browser frontend on another origin (DESIGN §5 and §8): REST through
django-cors-headers, and event streams whose Origin is one of CORS_ALLOWED_ORIGINS.
In process against the ASGI application; against a daphne configured by its
environment: tests/system/test_cors_daphne.py."""

import pytest
from asgiref.sync import sync_to_async

from tests.conftest import auth
from tests.support.origins import DEV_SERVER, FRONTEND, header_list, preflight
from tests.support.sockets import close_code, connect, session_cookie

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def frontends(settings):
    """Set in-process: django-cors-headers and the consumer read it per request."""
    settings.CORS_ALLOWED_ORIGINS = [FRONTEND, DEV_SERVER]


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
