"""An open socket closes 4401 within 5 s once the credentials it was opened with
stop holding: logout, token deleted, user deactivated (DESIGN §5). A roadmap
stream never ends by itself, so without this it would go on delivering to whoever
held the socket. Real daphne, real `websockets` clients."""

import asyncio
import json
import time

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.authtoken.models import Token
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from notifications import auth
from tests.support.daphne_server import daphne_server
from tests.support.sockets import SITE, connect, session_cookie

pytestmark = pytest.mark.django_db(transaction=True)

CLOSED_WITHIN = 5.0
CSRF = "c" * 32  # a CSRF secret the test chooses: cookie and header must agree


@pytest.fixture
def server(tmp_path):
    with daphne_server(tmp_path) as running:
        yield running


async def pong(socket) -> bool:
    await socket.send('{"type": "ping"}')
    return json.loads(await socket.recv()) == {"type": "pong"}


async def closed_after(socket) -> tuple[int | None, float]:
    """Wait for the server's close: its code, and the seconds it took. Frames
    before it are not expected (nothing happens on the roadmap)."""
    started = time.monotonic()
    async with asyncio.timeout(CLOSED_WITHIN + 5):
        try:
            while True:
                await socket.recv()
        except ConnectionClosed:
            return socket.close_code, time.monotonic() - started


async def log_out(server, cookie: tuple[bytes, bytes]) -> None:
    """POST /logout/ to the server, as the web client's form does."""
    session = cookie[1].decode()
    async with httpx.AsyncClient(base_url=server.http_url) as client:
        response = await client.post(
            "/logout/",
            headers={
                "Cookie": f"{session}; csrftoken={CSRF}",
                "X-CSRFToken": CSRF,
                "Origin": server.http_url,
            },
        )
    assert response.status_code in (200, 302), response.text


def deactivate(user) -> None:
    get_user_model().objects.filter(pk=user.pk).update(is_active=False)


def change_password(user) -> None:
    """Elsewhere (another device): Django ends the user's other sessions."""
    user = get_user_model().objects.get(pk=user.pk)
    user.set_password("a-new-password")
    user.save()


@pytest.mark.parametrize("revocation", ["token deleted", "user deactivated"])
async def test_a_token_socket_closes_4401_once_its_token_no_longer_holds(
    server, alice, bob, make_roadmap, revocation
):
    roadmaps = [await sync_to_async(make_roadmap)(user) for user in (alice, bob)]
    urls = [
        f"{server.ws_url}/api/v1/ws/roadmaps/{roadmap.pk}?token={user.token}"
        for roadmap, user in zip(roadmaps, (alice, bob), strict=True)
    ]
    async with ws_connect(urls[0]) as revoked, ws_connect(urls[1]) as kept:
        assert await pong(revoked) and await pong(kept)

        if revocation == "token deleted":
            await Token.objects.filter(user=alice).adelete()
        else:
            await sync_to_async(deactivate)(alice)
        code, seconds = await closed_after(revoked)

        # Only the socket whose credentials went: bob's, checked in the same
        # rounds, stays open.
        assert await pong(kept)
    assert code == 4401
    assert seconds < CLOSED_WITHIN


@pytest.mark.parametrize("revocation", ["logout", "password changed", "user deactivated"])
async def test_a_session_socket_closes_4401_once_its_session_no_longer_holds(
    server, alice, make_roadmap, revocation
):
    roadmap = await sync_to_async(make_roadmap)(alice)
    cookie = await session_cookie(alice)
    url = f"{server.ws_url}/api/v1/ws/roadmaps/{roadmap.pk}"
    # The same user's token socket: a logout ends the session, not the token.
    token_url = f"{url}?token={alice.token}"
    page = {"origin": server.http_url, "additional_headers": {"Cookie": cookie[1].decode()}}
    async with ws_connect(url, **page) as socket, ws_connect(token_url) as by_token:
        assert await pong(socket) and await pong(by_token)

        if revocation == "logout":
            await log_out(server, cookie)
        elif revocation == "password changed":
            await sync_to_async(change_password)(alice)
        else:
            await sync_to_async(deactivate)(alice)
        code, seconds = await closed_after(socket)

        if revocation != "user deactivated":  # a token outlives the session
            assert await pong(by_token)
    assert code == 4401
    assert seconds < CLOSED_WITHIN


async def test_one_batched_check_per_round_however_many_sockets(alice, make_roadmap, monkeypatch):
    """Every socket of the process is checked in one call per round (three queries
    at most for up to 500 distinct credentials), each credential once, however
    many sockets share it."""
    monkeypatch.setattr(auth, "REVALIDATE_SECONDS", 0.1)
    roadmap = await sync_to_async(make_roadmap)(alice)
    path = f"/api/v1/ws/roadmaps/{roadmap.pk}"
    page = [SITE, await session_cookie(alice), (b"origin", b"http://127.0.0.1:8000")]
    by_token = [(await connect(path, user=alice))[0] for _ in range(10)]
    by_session = [(await connect(path, headers=page))[0] for _ in range(10)]
    rounds: list[tuple[int, int]] = []  # (credentials checked, queries made)
    still_valid = auth.still_valid

    def counted(credentials):
        with CaptureQueriesContext(connection) as queries:
            valid = still_valid(credentials)
        rounds.append((len(credentials), len(queries)))
        return valid

    monkeypatch.setattr(auth, "still_valid", counted)
    async with asyncio.timeout(5):
        while len(rounds) < 3:
            await asyncio.sleep(0.02)
    await Token.objects.filter(user=alice).adelete()
    codes = [(await socket.receive_output(timeout=5))["code"] for socket in by_token]
    for socket in by_session:
        await socket.send_to(text_data='{"type": "ping"}')
        assert json.loads(await socket.receive_from(timeout=5)) == {"type": "pong"}
        await socket.disconnect()

    assert rounds[:3] == [(2, 3)] * 3
    assert codes == [4401] * 10
