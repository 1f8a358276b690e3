"""Provider failover across processes (DESIGN §6): a circuit opened by the work of
one process is seen by every other, web and worker; after the cool-off one trial
closes it; and a Celery worker refuses to start on a wrong provider list, as
daphne and the system check do.

Real processes against the fake OpenAI servers of this test process (real HTTP,
the real SDK). The circuit test needs PostgreSQL, Redis and a Celery worker:
marked `distributed`, it runs in the distributed CI pass, where a missing service
fails it (tests/conftest.py), and the embedded pass deselects it. The start-up
test needs neither: the worker exits before it would connect to anything."""

import json
import subprocess
from contextlib import ExitStack

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from generation.checks import check_providers
from generation.models import ProviderCircuit
from roadmaps.models import ConceptContent
from tests.conftest import auth
from tests.support import processes
from tests.support.celery_workers import (
    running_stack,
    spawn_daphne,
    spawn_worker,
    stack_env,
    wait_until_ready,
)
from tests.support.fake_openai import FAKE_API_KEY, FakeOpenAI, error, ok
from tests.support.lifecycle import tutorial_of, wait_until
from tests.support.retries import retry_url

TOKEN = "metrics-token-failover"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
FAILURES = 2  # GENERATION_CIRCUIT_FAILURES
# Long enough for the server's read and the worker's generation while it is open
# on a loaded machine; the test waits it out once.
COOL_OFF_SECONDS = 6.0
SDK_TRIES = 2  # OPENAI_MAX_RETRIES=1: each call the primary takes is two requests


def provider_list(primary: str, secondary: str) -> list[dict]:
    return [
        {"name": "primary", "base_url": primary, "api_key_env": "PRIMARY_API_KEY",
         "model": "gpt-primary"},
        {"name": "secondary", "base_url": secondary, "api_key_env": "SECONDARY_API_KEY",
         "model": "gpt-secondary"},
    ]  # fmt: skip


@pytest.fixture
def fakes():
    primary, secondary = FakeOpenAI().start(), FakeOpenAI().start()
    yield primary, secondary
    primary.stop()
    secondary.stop()


def post_retry(server_url: str, user, roadmap, concept_id: str) -> None:
    response = httpx.post(
        server_url + retry_url(roadmap, concept_id), headers=auth(user), timeout=10
    )
    assert response.status_code == 202, response.text


def generated(server_url: str, user, roadmap, concept_id: str) -> ConceptContent:
    """Retry one concept's tutorial through a server; the content once it ended."""
    post_retry(server_url, user, roadmap, concept_id)
    return wait_until(
        lambda: (
            (content := tutorial_of(roadmap, concept_id)).status in ("completed", "failed")
            and content
        ),
        timeout=30,
        message=f"{concept_id} did not end",
    )


def circuits(server_url: str) -> dict[str, dict]:
    """The circuits as a server reports them to operators on /api/v1/health."""
    response = httpx.get(f"{server_url}/api/v1/health", headers=BEARER, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()["providers"]


def gauges(server_url: str) -> dict[str, float]:
    """roadmap_provider_circuit_open by provider, from the server's /metrics."""
    response = httpx.get(f"{server_url}/metrics", headers=BEARER, timeout=10)
    assert response.status_code == 200, response.text
    return {
        sample.labels["provider"]: sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if sample.name == "roadmap_provider_circuit_open"
    }


@pytest.mark.distributed
@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.celery
@pytest.mark.django_db(transaction=True)
def test_a_circuit_opened_in_one_process_holds_in_the_others_until_a_trial_closes_it(
    fakes, redis_url, alice, make_roadmap, tmp_path
):
    primary, secondary = fakes
    primary.default = error(503)
    roadmap = make_roadmap(alice, concepts=8)
    settings_env = {
        "GENERATION_PROVIDER": "openai",
        "GENERATION_PROVIDERS": json.dumps(provider_list(primary.base_url, secondary.base_url)),
        "PRIMARY_API_KEY": FAKE_API_KEY,
        "SECONDARY_API_KEY": FAKE_API_KEY,
        "GENERATION_CIRCUIT_FAILURES": FAILURES,
        "GENERATION_CIRCUIT_SECONDS": COOL_OFF_SECONDS,
        "OPENAI_MAX_RETRIES": SDK_TRIES - 1,
        "OPENAI_TIMEOUT_SECONDS": 5,
        "GENERATION_CONCURRENCY": 2,
        "METRICS_TOKEN": TOKEN,
    }
    with ExitStack() as stack:
        # Server B and a Celery worker; server A runs its own work (in-process).
        celery = stack.enter_context(
            running_stack(
                database_url=processes.test_database_url(),
                redis_url=redis_url,
                log_dir=tmp_path / "logs",
                media_root=tmp_path / "media",
                servers=1,
                workers=1,
                **settings_env,
            )
        )
        in_process = stack_env(
            database_url=processes.test_database_url(),
            redis_url=redis_url,
            queue="unused",
            media_root=tmp_path / "media",
            **settings_env,
            TASK_BACKEND="inprocess",
        )
        server_a = spawn_daphne("daphne-inprocess", in_process, tmp_path / "logs")
        stack.callback(server_a.stop)
        wait_until_ready([server_a])
        server_b = celery.servers[0].url

        # Server A's generations fail over, and open the primary's circuit.
        for concept_id in ("c001", "c002"):
            content = generated(server_a.url, alice, roadmap, concept_id)
            assert (content.status, content.provider) == ("completed", "secondary")
        assert len(primary.requests) == FAILURES * SDK_TRIES
        primary.default = ok()  # back, but nobody may ask it before the cool-off

        # Server B reports it open, and the worker's generation skips the primary.
        states = circuits(server_b)
        assert states["primary"]["open"] is True, states
        assert states["primary"]["consecutive_failures"] == FAILURES
        assert states["secondary"] == {
            "open": False,
            "consecutive_failures": 0,
            "opened_until": None,
        }
        assert gauges(server_b) == {"primary": 1.0, "secondary": 0.0}
        content = generated(server_b, alice, roadmap, "c003")
        assert (content.status, content.provider) == ("completed", "secondary")
        assert len(primary.requests) == FAILURES * SDK_TRIES
        worker = celery.workers[0]
        wait_until(lambda: worker.succeeded_tasks() == 1, 10, "the worker did not log it")
        # Still within the cool-off: no process has claimed the trial yet.
        row = ProviderCircuit.objects.get(name="primary")
        assert row.opened_until.isoformat() == states["primary"]["opened_until"], (
            "the cool-off ended before the worker's generation: a very slow machine?"
        )

        # Past the cool-off the worker's next generation is the one trial; it closes it.
        wait_until(
            lambda: not circuits(server_b)["primary"]["open"],
            timeout=COOL_OFF_SECONDS + 5,
            message="the cool-off did not end",
        )
        content = generated(server_b, alice, roadmap, "c004")
        assert (content.status, content.provider) == ("completed", "primary")
        assert len(primary.requests) == FAILURES * SDK_TRIES + 1
        assert circuits(server_b)["primary"] == {
            "open": False,
            "consecutive_failures": 0,
            "opened_until": None,
        }
        assert gauges(server_b) == {"primary": 0.0, "secondary": 0.0}

        # Every later generation, of either server, goes to the primary.
        served_by_secondary = len(secondary.requests)
        for server, concept_id in [(server_b, "c005"), (server_a.url, "c006")]:
            content = generated(server, alice, roadmap, concept_id)
            assert (content.status, content.provider) == ("completed", "primary")
        assert len(primary.requests) == FAILURES * SDK_TRIES + 3
        assert len(secondary.requests) == served_by_secondary


UNSET_KEY = "FAILOVER_TEST_KEY_NEVER_SET"


def test_a_worker_with_a_wrong_provider_list_refuses_to_start(settings, monkeypatch, tmp_path):
    entries = [
        {"name": "primary", "base_url": "https://primary.test/v1",
         "api_key_env": "PRIMARY_API_KEY", "model": "m"},
        {"name": "backup", "base_url": "ftp://backup.test", "api_key_env": UNSET_KEY,
         "model": "m"},
    ]  # fmt: skip
    monkeypatch.setenv("PRIMARY_API_KEY", FAKE_API_KEY)
    monkeypatch.delenv(UNSET_KEY, raising=False)
    settings.GENERATION_PROVIDERS = entries
    expected = [message.msg for message in check_providers()]
    assert len(expected) == 2, expected

    # Its broker is a closed port: a worker that went past the check would retry
    # connecting to it, never exit.
    env = stack_env(
        database_url=processes.test_database_url(),
        redis_url="redis://127.0.0.1:1/0",
        queue="unused",
        media_root=tmp_path / "media",
        GENERATION_PROVIDER="openai",
        GENERATION_PROVIDERS=json.dumps(entries),
    )
    worker = spawn_worker("misconfigured", env, tmp_path / "logs")
    try:
        code = worker.process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        worker.kill()
        pytest.fail(f"the worker did not exit:\n{worker.log()[-3000:]}")

    log = worker.log()
    assert code == 1, log
    assert "The worker does not start:" in log
    assert all(message in log for message in expected), (expected, log)
    assert " ready." not in log and FAKE_API_KEY not in log
