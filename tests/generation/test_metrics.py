"""GET /metrics (DESIGN §7): the Prometheus text format, for a staff session or the
metrics token; every figure read from the database at scrape time, so a restarted
process (a fresh collector) reports what the last one did, and a scrape costs the
same queries whatever the data size."""

import datetime as dt
import uuid

import pytest
from asgiref.sync import sync_to_async
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from generation import liveness, services
from generation.metrics import RoadmapCollector
from generation.models import GenerationItem, GenerationTask, LeaseExpiry, UsageRecord
from notifications import socket_count
from notifications.models import ConnectionCount
from tests.conftest import auth
from tests.support.fake_openai import error, ok
from tests.support.lifecycle import expire_lease
from tests.support.retries import content_of, retry_url, wait_for
from tests.support.sockets import connect, session_cookie
from tests.support.usage import record

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN = "metrics-token-5b1e0c9a"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(autouse=True)
def metrics_token(settings):
    settings.METRICS_TOKEN = TOKEN


def parse(text: str) -> dict[str, dict[tuple, float]]:
    """Every sample by name, keyed by its sorted label pairs."""
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def total(samples: dict, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include `labels`."""
    return sum(
        value for key, value in samples.get(name, {}).items() if set(labels.items()) <= set(key)
    )


async def scrape(api) -> dict:
    response = await api.get("/metrics", headers=BEARER)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(response.text)


def scrape_fresh_registry() -> dict:
    """What a restarted process reports: a new registry and a new collector."""
    registry = CollectorRegistry()
    registry.register(RoadmapCollector())
    return parse(generate_latest(registry).decode())


# --- Who may read ----------------------------------------------------------------------


async def test_without_credentials_the_answer_is_401_with_a_bearer_challenge(api):
    response = await api.get("/metrics")

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="metrics"'
    assert "roadmap_" not in response.text


async def test_the_metrics_token_reads_with_or_without_a_trailing_slash(api):
    for path in ("/metrics", "/metrics/"):
        response = await api.get(path, headers=BEARER)
        assert response.status_code == 200
        assert "roadmap_content_items" in response.text
        assert "no-cache" in response.headers["cache-control"]


@pytest.mark.parametrize(
    "header",
    [
        "Bearer wrong-token",
        f"Bearer {TOKEN}x",
        f"Token {TOKEN}",  # another scheme is not the metrics token
        "Bearer ",
    ],
)
async def test_a_wrong_or_malformed_token_is_401(api, header):
    response = await api.get("/metrics", headers={"Authorization": header})

    assert response.status_code == 401


async def test_with_no_token_configured_no_bearer_token_reads(api, settings):
    settings.METRICS_TOKEN = ""

    assert (await api.get("/metrics", headers={"Authorization": "Bearer "})).status_code == 401
    assert (await api.get("/metrics", headers={"Authorization": "Bearer x"})).status_code == 401


async def test_a_staff_session_reads_and_a_user_session_is_forbidden(api, make_user):
    staff = await sync_to_async(make_user)("operator", is_staff=True)
    user = await sync_to_async(make_user)("carol")

    def cookie(pair: tuple[bytes, bytes]) -> dict:
        return {"Cookie": pair[1].decode()}

    as_staff = await api.get("/metrics", headers=cookie(await session_cookie(staff)))
    as_user = await api.get("/metrics", headers=cookie(await session_cookie(user)))

    assert as_staff.status_code == 200 and "roadmap_lease_expiries_total" in as_staff.text
    assert as_user.status_code == 403


async def test_a_staff_users_api_token_is_not_a_metrics_credential(api, make_user):
    staff = await sync_to_async(make_user)("operator", is_staff=True)

    assert (await api.get("/metrics", headers=auth(staff))).status_code == 401


async def test_only_get_and_head_are_allowed(api):
    assert (await api.head("/metrics", headers=BEARER)).status_code == 200
    assert (await api.post("/metrics", headers=BEARER)).status_code == 405


# --- What it counts ----------------------------------------------------------------------


async def retry_and_wait(api, user, roadmap, concept_id: str) -> str:
    response = await api.post(retry_url(roadmap, concept_id=concept_id), headers=auth(user))
    assert response.status_code == 202, response.text

    async def ended():
        content = await content_of(roadmap, concept_id)
        return content.status in ("completed", "failed") and content.status

    return await wait_for(ended, within=30)


async def stuck_retry(api, user, roadmap, concept_id: str) -> None:
    """A retry whose message is lost (the dummy backend runs nothing), its lease then run out."""
    response = await api.post(retry_url(roadmap, concept_id=concept_id), headers=auth(user))
    assert response.status_code == 202, response.text
    await sync_to_async(expire_lease)(await content_of(roadmap, concept_id))


async def test_counters_equal_a_known_scenario_and_survive_a_restart(
    api, alice, make_roadmap, fake_openai, use_task_backend
):
    """Three lease expiries (two by the sweep, one by a start taking an expired pair
    over), then two completed generations and one failed (a 400), all through the
    real services: the counters say 2, 1 and 3, and a fresh collector says so too."""
    roadmap = await sync_to_async(make_roadmap)(alice, concepts=5)
    # The first request starts this loop's stale sweep, with a round at once: it
    # ends before any lease runs out, so the leases below are this test's to fail.
    rounds = liveness.sweep_rounds

    async def swept() -> bool:
        return liveness.sweep_rounds > rounds

    assert (await api.get("/api/v1/health")).status_code == 200
    await wait_for(swept)
    use_task_backend("django.tasks.backends.dummy.DummyBackend")  # the message is lost
    await stuck_retry(api, alice, roadmap, "c001")
    await stuck_retry(api, alice, roadmap, "c002")
    await stuck_retry(api, alice, roadmap, "c002")  # takes the expired pair over
    await sync_to_async(expire_lease)(await content_of(roadmap, "c002"))
    assert await sync_to_async(services.recover_stale)() == 2
    assert await sync_to_async(services.recover_stale)() == 0  # nothing counted twice

    use_task_backend("generation.engine.InProcessBackend")
    fake_openai.script(ok(), ok(), error(400))
    assert await retry_and_wait(api, alice, roadmap, "c003") == "completed"
    assert await retry_and_wait(api, alice, roadmap, "c004") == "completed"
    assert await retry_and_wait(api, alice, roadmap, "c005") == "failed"

    samples = await scrape(api)
    records = await sync_to_async(list)(UsageRecord.objects.all())
    for figures in (samples, await sync_to_async(scrape_fresh_registry)()):
        assert total(figures, "roadmap_generations_total", outcome="completed") == 2
        assert total(figures, "roadmap_generations_total", outcome="failed") == 1
        assert total(figures, "roadmap_generations_total") == 3
        assert total(figures, "roadmap_lease_expiries_total") == 3
        assert total(figures, "roadmap_content_items", status="completed") == 2
        assert total(figures, "roadmap_content_items", status="failed") == 3
        assert total(figures, "roadmap_content_items", status="pending") == 10
        assert total(figures, "roadmap_content_items", status="generating") == 0
        assert total(figures, "roadmap_queued_items") == 0
        assert total(figures, "roadmap_tokens_total", kind="prompt") == sum(
            r.prompt_tokens for r in records
        )
        assert total(figures, "roadmap_tokens_total", kind="completion") == sum(
            r.completion_tokens for r in records
        )
        completed = {"outcome": "completed", "provider": "openai"}
        assert total(figures, "roadmap_generation_seconds_count", **completed) == 2
        assert total(figures, "roadmap_generation_seconds_sum") == pytest.approx(
            sum(r.duration_seconds for r in records)
        )
        assert total(figures, "roadmap_first_token_seconds_count", outcome="completed") == 2
        assert figures["roadmap_provider_circuit_open"] == {(("provider", "openai"),): 0.0}


async def test_histogram_buckets_and_cost_come_from_the_records(api, alice, settings):
    settings.GENERATION_PRICES = {"currency": "EUR", "models": {"fake-gpt": {"prompt": "1"}}}
    made = []
    for seconds, first_token in ((0.4, 0.1), (4.0, 0.6), (50.0, None), (400.0, 40.0)):
        row = record(alice, created_at=timezone.now(), cost=None)
        row.duration_seconds, row.first_token_seconds = seconds, first_token
        made.append(row)
    made[0].cost = made[1].cost = 1.25
    await UsageRecord.objects.abulk_create(made)

    samples = await scrape(api)

    labels = {"outcome": "completed", "provider": "openai", "model": "fake-gpt"}
    buckets = {
        dict(key)["le"]: value
        for key, value in samples["roadmap_generation_seconds_bucket"].items()
        if set(labels.items()) <= set(key)
    }
    assert (buckets["1.0"], buckets["5.0"], buckets["60.0"], buckets["300.0"]) == (1, 2, 3, 3)
    assert buckets["+Inf"] == 4
    assert total(samples, "roadmap_first_token_seconds_count", **labels) == 3
    assert total(samples, "roadmap_first_token_seconds_bucket", le="0.5", **labels) == 1
    assert total(samples, "roadmap_first_token_seconds_sum", **labels) == pytest.approx(40.7)
    assert samples["roadmap_cost_total"] == {(("model", "fake-gpt"), ("provider", "openai")): 2.5}


async def test_queued_items_and_how_long_the_oldest_has_waited(api, alice, make_roadmap, no_runner):
    roadmap = await sync_to_async(make_roadmap)(alice, concepts=3)
    response = await api.post(
        f"/api/v1/roadmaps/{roadmap.pk}/concepts/retry-batch",
        json={"statuses": ["pending"], "content_types": ["tutorial"]},
        headers=auth(alice),
    )
    assert response.status_code == 202, response.text
    await GenerationTask.objects.all().aupdate(created_at=timezone.now() - dt.timedelta(minutes=20))

    samples = await scrape(api)

    assert total(samples, "roadmap_queued_items") == 3
    assert 20 * 60 <= total(samples, "roadmap_oldest_queued_item_seconds") < 21 * 60
    assert total(samples, "roadmap_content_items", status="generating") == 3


# --- WebSocket connections -------------------------------------------------------------


async def test_websocket_connections_count_this_process_and_the_fresh_reports_of_others(
    api, alice, make_roadmap
):
    roadmap = await sync_to_async(make_roadmap)(alice)
    before = total(await scrape(api), "roadmap_websocket_connections")
    path = f"/api/v1/ws/roadmaps/{roadmap.pk}"
    first, _ = await connect(path, user=alice)
    second, _ = await connect(path, user=alice)
    now = timezone.now()
    stale = now - dt.timedelta(seconds=4 * socket_count.report_interval())
    await sync_to_async(socket_count.report)("web-2:41:aa", 5, now=now)
    await sync_to_async(socket_count.report)("web-3:42:bb", 7, now=now)
    await ConnectionCount.objects.filter(process="web-3:42:bb").aupdate(reported_at=stale)

    assert total(await scrape(api), "roadmap_websocket_connections") == before + 2 + 5

    await first.disconnect()
    await sync_to_async(socket_count.report)("web-2:41:aa", 0)
    assert total(await scrape(api), "roadmap_websocket_connections") == before + 1
    await second.disconnect()
    assert total(await scrape(api), "roadmap_websocket_connections") == before
    # A report deletes the rows of processes that stopped reporting.
    assert not await ConnectionCount.objects.filter(process="web-3:42:bb").aexists()


async def test_a_process_reports_its_sockets_while_it_has_any(alice, make_roadmap, settings):
    settings.NOTIFICATIONS_CONNECTIONS_REPORT_SECONDS = 0.1
    roadmap = await sync_to_async(make_roadmap)(alice)
    mine = ConnectionCount.objects.filter(process=socket_count.sockets.name)
    before = socket_count.sockets.count  # sockets an earlier test left open, if any

    async def reported() -> int:
        row = await mine.afirst()
        return 0 if row is None else row.connections

    socket, accepted = await connect(f"/api/v1/ws/roadmaps/{roadmap.pk}", user=alice)
    assert accepted
    await wait_for(lambda: _equals(reported, before + 1), within=5)
    await socket.disconnect()
    # The last socket gone, the row is deleted (a count of 0 is no row).
    await wait_for(lambda: _equals(reported, before), within=5)
    assert before or not await mine.aexists()


async def _equals(read, expected) -> bool:
    return await read() == expected


# --- What it costs -----------------------------------------------------------------------


def queries_for_a_scrape(owner, records: int) -> int:
    """A scrape's queries with `records` usage records, lease expiries, reported
    processes and queued items, in many label combinations."""
    now = timezone.now()
    UsageRecord.objects.bulk_create(
        record(
            owner,
            created_at=now,
            model=f"model-{n % 7}",
            provider=("openai", "other")[n % 2],
            outcome=("completed", "failed", "unusable")[n % 3],
            content_type=("tutorial", "resources", "quiz")[n % 3],
        )
        for n in range(records)
    )
    LeaseExpiry.objects.bulk_create(LeaseExpiry(attempt_id=uuid.uuid4()) for _ in range(records))
    ConnectionCount.objects.bulk_create(
        ConnectionCount(process=f"{owner.username}-{n}", connections=n, reported_at=now)
        for n in range(records)
    )
    task = GenerationTask.objects.create(
        id=f"batch-retry-{uuid.uuid4().hex}", kind="batch", owner=owner, roadmap=owner.roadmap
    )
    contents = owner.roadmap.contents.all()[:records]
    GenerationItem.objects.bulk_create(
        GenerationItem(
            task=task,
            content=content,
            position=position,
            previous_status="pending",
            attempt_id=uuid.uuid4(),
        )
        for position, content in enumerate(contents, start=1)
    )
    client = Client(headers=BEARER)
    with CaptureQueriesContext(connection) as queries:
        response = client.get("/metrics")
    assert response.status_code == 200
    assert total(parse(response.content.decode()), "roadmap_lease_expiries_total") >= records
    return len(queries)


def test_a_scrape_takes_the_same_queries_for_10_records_as_for_1000(make_user, make_roadmap):
    few, many = make_user("few"), make_user("many")
    few.roadmap = make_roadmap(few, concepts=4)
    many.roadmap = make_roadmap(many, concepts=334)

    assert queries_for_a_scrape(few, 10) == queries_for_a_scrape(many, 1000) <= 5
