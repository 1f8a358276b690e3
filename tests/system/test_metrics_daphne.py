"""GET /metrics with two real daphne processes sharing the database: either one
answers the deployment's figures (the WebSocket connections of both, the counters
of everything), a killed process's sockets drop out of the count, and a restarted
process reports the same counters as before."""

import asyncio
import contextlib

import httpx
import pytest
from asgiref.sync import sync_to_async
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect as ws_connect

from generation import services
from generation.models import LeaseExpiry
from tests.conftest import auth
from tests.support.daphne_server import DaphneServer, daphne_server
from tests.support.lifecycle import expire_lease, retry, tutorial_of
from tests.support.retries import retry_url

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN = "metrics-token-daphne"
SERVER_ENV = {
    "METRICS_TOKEN": TOKEN,
    "NOTIFICATIONS_CONNECTIONS_REPORT_SECONDS": "0.2",
    "OFFLINE_PROVIDER_DELAY_SECONDS": "0.05",
}
FIGURES = (
    "roadmap_generations_total",
    "roadmap_lease_expiries_total",
    "roadmap_tokens_total",
    "roadmap_content_items",
    "roadmap_generation_seconds_count",
)


async def scrape(server: DaphneServer) -> dict[str, float]:
    """Each metric's samples summed over their labels."""
    async with httpx.AsyncClient(base_url=server.http_url) as client:
        response = await client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200, response.text
    sums: dict[str, float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            sums[sample.name] = sums.get(sample.name, 0.0) + sample.value
    return sums


async def connections_become(server: DaphneServer, expected: int, within: float = 10.0) -> None:
    async with asyncio.timeout(within):
        while (await scrape(server))["roadmap_websocket_connections"] != expected:
            await asyncio.sleep(0.1)


async def completed_retry(server: DaphneServer, user, roadmap) -> None:
    async with httpx.AsyncClient(base_url=server.http_url) as client:
        response = await client.post(retry_url(roadmap), headers=auth(user))
        assert response.status_code == 202, response.text
        async with asyncio.timeout(30):
            while (await sync_to_async(tutorial_of)(roadmap)).status != "completed":
                await asyncio.sleep(0.1)


def lost_generation(roadmap) -> None:
    """A retry whose message is lost, failed by the sweep once its lease ran out."""
    retry(roadmap)
    expire_lease(tutorial_of(roadmap))
    assert services.recover_stale() == 1


async def test_two_servers_report_the_deployments_figures_and_a_restart_keeps_them(
    tmp_path, alice, make_roadmap, use_task_backend
):
    done = await sync_to_async(make_roadmap)(alice)
    lost = await sync_to_async(make_roadmap)(alice)
    use_task_backend("django.tasks.backends.dummy.DummyBackend")  # in this process only
    await sync_to_async(lost_generation)(lost)
    with contextlib.ExitStack() as servers:
        first = servers.enter_context(daphne_server(tmp_path, **SERVER_ENV))
        second = servers.enter_context(daphne_server(tmp_path, **SERVER_ENV))
        await completed_retry(first, alice, done)
        topic = f"/api/v1/ws/roadmaps/{done.pk}?token={alice.token}"
        async with contextlib.AsyncExitStack() as sockets:
            on_first = [
                await sockets.enter_async_context(ws_connect(first.ws_url + topic))
                for _ in range(2)
            ]
            await sockets.enter_async_context(ws_connect(second.ws_url + topic))

            await connections_become(first, 3)
            await connections_become(second, 3)
            before = await scrape(first)
            assert {name: before[name] for name in FIGURES} == {
                name: (await scrape(second))[name] for name in FIGURES
            }
            assert before["roadmap_generations_total"] == 1
            assert before["roadmap_lease_expiries_total"] == 1

            await on_first[0].close()
            await connections_become(second, 2)
            second.process.kill()  # its row goes stale: a few report intervals
            await connections_become(first, 1)

        first.process.terminate()
        assert await asyncio.to_thread(first.process.wait, 10) is not None
        restarted = servers.enter_context(daphne_server(tmp_path, **SERVER_ENV))
        after = await scrape(restarted)

    assert {name: after[name] for name in FIGURES} == {name: before[name] for name in FIGURES}
    assert after["roadmap_websocket_connections"] == 0
    assert await LeaseExpiry.objects.acount() == 1
