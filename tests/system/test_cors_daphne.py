"""A browser frontend on another origin against a real daphne that reads
CORS_ALLOWED_ORIGINS from its environment: REST preflights and reads, and event
streams over real sockets. In process: tests/project/test_cors.py."""

import asyncio
import json

import httpx
import pytest
from asgiref.sync import sync_to_async
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from tests.conftest import auth
from tests.support.daphne_server import daphne_server
from tests.support.origins import DEV_SERVER, FRONTEND, header_list, preflight

pytestmark = pytest.mark.django_db(transaction=True)


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
