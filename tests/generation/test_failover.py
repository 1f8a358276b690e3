"""Provider failover (DESIGN §6): with two OpenAI-compatible providers configured,
a pair whose first provider is down (5xx, silent, misconfigured, circuit open)
completes on the second, within the same attempt; a rejected request does not
move on; with both down the pair fails, retryable, with one public message."""

import logging
import time
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone

from generation.errors import AllProvidersDown
from generation.models import GenerationItem, ProviderCircuit, UsageRecord
from generation.providers import circuit, get_provider, reset_provider
from tests.conftest import auth
from tests.support.fake_openai import (
    FAKE_API_KEY,
    FAKE_MODEL,
    VALID_TUTORIAL,
    Behaviour,
    FakeOpenAI,
    error,
)
from tests.support.retries import (
    batch_url,
    fail_contents,
    retry_to_the_end,
    statuses,
    task_finished,
    wait_for,
)

pytestmark = pytest.mark.django_db(transaction=True)

SECONDARY_KEY = "sk-secondary-7a1c9e3b5d"


@pytest.fixture
def secondary():
    fake = FakeOpenAI().start()
    yield fake
    fake.stop()


@pytest.fixture
def providers(fake_openai, secondary, settings, monkeypatch):
    """The fake_openai server is "primary", a second one "secondary"."""
    monkeypatch.setenv("PRIMARY_API_KEY", FAKE_API_KEY)
    monkeypatch.setenv("SECONDARY_API_KEY", SECONDARY_KEY)
    settings.GENERATION_PROVIDERS = [
        {
            "name": "primary",
            "base_url": fake_openai.base_url,
            "api_key_env": "PRIMARY_API_KEY",
            "model": "gpt-primary",
        },
        {
            "name": "secondary",
            "base_url": secondary.base_url,
            "api_key_env": "SECONDARY_API_KEY",
            "model": "gpt-secondary",
            "models": {"quiz": "gpt-secondary-quiz"},
        },
    ]
    settings.GENERATION_CIRCUIT_FAILURES = 3
    settings.GENERATION_CIRCUIT_SECONDS = 60
    settings.GENERATION_FIRST_TOKEN_SECONDS = 0.5
    reset_provider()
    yield fake_openai, secondary
    reset_provider()


@sync_to_async
def records_of(roadmap) -> list[tuple[str, str, str]]:
    return list(
        UsageRecord.objects.filter(roadmap_id=roadmap.pk)
        .order_by("id")
        .values_list("provider", "outcome", "attempt_id")
    )


@sync_to_async
def generating_items() -> int:
    return GenerationItem.objects.filter(state__in=("running", "queued")).count()


async def test_a_batch_completes_on_the_secondary_while_the_primary_answers_503(
    api, alice, make_roadmap, providers, settings
):
    primary, secondary = providers
    primary.default = error(503)
    settings.GENERATION_CONCURRENCY = 4
    roadmap = await sync_to_async(make_roadmap)(alice, concepts=12)
    await fail_contents(roadmap, 30)

    response = await api.post(batch_url(roadmap), json={}, headers=auth(alice))
    assert response.status_code == 202, response.text
    task = await wait_for(lambda: task_finished(response.json()["data"]["task_id"]), within=60)

    assert (task.status, task.completed, task.failed) == ("completed", 30, 0)
    assert list((await statuses(roadmap)).values()).count("completed") == 30
    records = await records_of(roadmap)
    served = [record for record in records if record[1] == "completed"]
    assert len(served) == 30 and {provider for provider, _, _ in served} == {"secondary"}
    assert {provider for provider, outcome, _ in records if outcome == "failed"} <= {"primary"}
    # Each call the primary took cost it its SDK tries (2); at most the threshold
    # plus the calls already in flight reached it before its circuit opened.
    tries = settings.OPENAI_MAX_RETRIES + 1
    assert len(primary.requests) <= (3 + 4) * tries
    assert len(primary.requests) >= 3
    assert len(secondary.requests) == 30
    assert (await ProviderCircuit.objects.aget(name="primary")).opened_until is not None

    from roadmaps.models import ConceptContent

    contents = ConceptContent.objects.filter(roadmap=roadmap, status="completed")
    async for content in contents:
        assert (content.provider, content.model) == ("secondary", FAKE_MODEL)
    asked = {request.body["model"] for request in secondary.requests}
    assert asked == {"gpt-secondary", "gpt-secondary-quiz"}


async def test_a_silent_primary_fails_over_after_the_first_token_window(
    api, alice, make_roadmap, providers
):
    primary, _ = providers
    primary.script(Behaviour(kind="ok", hang_after_chunks=0))
    roadmap = await sync_to_async(make_roadmap)(alice)

    started = time.monotonic()
    content = await retry_to_the_end(api, alice, roadmap)

    assert content.status == "completed" and content.provider == "secondary"
    assert 0.5 <= time.monotonic() - started < 5
    assert "generating" not in (await statuses(roadmap)).values()
    records = await records_of(roadmap)
    assert [(p, o) for p, o, _ in records] == [("primary", "failed"), ("secondary", "completed")]
    assert records[0][2] == records[1][2]  # one attempt
    assert await generating_items() == 0


async def test_a_primary_answering_401_is_logged_once_and_skipped(
    api, alice, make_roadmap, providers, caplog
):
    primary, secondary = providers
    primary.script(error(401))
    roadmap = await sync_to_async(make_roadmap)(alice)

    with caplog.at_level(logging.ERROR, logger="generation.providers.failover"):
        content = await retry_to_the_end(api, alice, roadmap, "resources")

    assert content.status == "completed" and content.provider == "secondary"
    lines = [r.getMessage() for r in caplog.records if r.name == "generation.providers.failover"]
    [line] = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert line in lines and "primary" in line
    assert FAKE_API_KEY not in caplog.text and FAKE_API_KEY[:8] not in line
    assert len(primary.requests) == 1 and len(secondary.requests) == 1


async def test_a_rejected_request_fails_without_failover(api, alice, make_roadmap, providers):
    primary, secondary = providers
    primary.script(error(400))
    roadmap = await sync_to_async(make_roadmap)(alice)

    content = await retry_to_the_end(api, alice, roadmap, "quiz")

    assert content.status == "failed" and not secondary.requests
    assert len(primary.requests) == 1


async def test_the_circuit_opens_and_a_trial_closes_it_when_the_primary_is_back(
    providers, settings
):
    primary, secondary = providers
    settings.GENERATION_CIRCUIT_SECONDS = 60
    primary.default = error(503)
    provider = get_provider()
    request = _request()

    for _ in range(3):
        await provider.resources(request)
    tries = settings.OPENAI_MAX_RETRIES + 1
    assert len(primary.requests) == 3 * tries
    assert (await sync_to_async(circuit.states)(["primary"]))["primary"]["open"]

    await provider.resources(request)  # open: straight to the secondary
    assert len(primary.requests) == 3 * tries

    primary.default = Behaviour()
    await sync_to_async(end_cool_off)("primary")
    _, _ = await provider.resources(request)  # the trial, served by the primary
    assert len(primary.requests) == 3 * tries + 1
    state = (await sync_to_async(circuit.states)(["primary"]))["primary"]
    assert not state["open"] and state["consecutive_failures"] == 0
    assert len(secondary.requests) == 4


async def test_one_caller_gets_the_trial_and_its_failure_keeps_the_circuit_open(
    providers, settings
):
    primary, _ = providers
    settings.GENERATION_CIRCUIT_SECONDS = 60
    primary.default = error(503)
    provider = get_provider()
    for _ in range(3):
        await provider.resources(_request())
    await sync_to_async(end_cool_off)("primary")
    claim = sync_to_async(circuit.first_allowed)
    assert await claim(["primary"]) == 0  # this call has the trial
    assert await claim(["primary"]) == 1  # nobody else does
    await sync_to_async(circuit.failed)("primary")
    assert (await sync_to_async(circuit.states)(["primary"]))["primary"]["open"]


def test_one_read_skips_the_open_circuits_and_claims_only_the_trial_it_returns(
    providers, settings, django_assert_num_queries
):
    for _ in range(3):
        circuit.failed("primary")
    with django_assert_num_queries(1):
        assert circuit.first_allowed(["primary", "secondary"]) == 1

    settings.GENERATION_CIRCUIT_SECONDS = 60
    for name in ("a", "b", "a", "b", "a", "b"):
        circuit.failed(name)
    end_cool_off("a", "b")
    assert circuit.first_allowed(["a", "b"]) == 0  # a's trial
    assert circuit.first_allowed(["b"]) == 0  # b's is still there to claim
    assert circuit.first_allowed(["a", "b"]) == 2


async def test_both_providers_down_fail_retryable_with_one_message(
    api, alice, make_roadmap, providers
):
    primary, secondary = providers
    primary.default = error(503)
    secondary.default = error(503)
    roadmap = await sync_to_async(make_roadmap)(alice)

    content = await retry_to_the_end(api, alice, roadmap)

    assert content.status == "failed"
    assert content.public_error == str(AllProvidersDown.public_message)
    assert AllProvidersDown.retryable
    assert "generating" not in (await statuses(roadmap)).values()
    assert await generating_items() == 0


def _request():
    from generation.providers.base import GenerationRequest

    return GenerationRequest(
        roadmap_title="Learn React",
        roadmap_goal="Ship apps",
        concept_name="Hooks",
        concept_description="useState and useEffect",
    )


def end_cool_off(*names: str) -> None:
    """The open circuits' cool-off ends now, as if it had been waited out: a long
    cool-off that the test back-dates, not a short one that a slow claim outlives
    (its trial claim moves the cool-off on, and a claim after that would find it
    over again)."""
    ended = timezone.now() - timedelta(seconds=1)
    assert ProviderCircuit.objects.filter(name__in=names, opened_until__isnull=False).update(
        opened_until=ended
    ) == len(names), "a circuit to end the cool-off of is not open"


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        (
            [
                {
                    "name": "a",
                    "base_url": "https://a.test/v1",
                    "api_key_env": "UNSET_KEY_VAR",
                    "model": "m",
                }
            ],
            "'UNSET_KEY_VAR' is not set",
        ),
        (
            [
                {
                    "name": "a",
                    "base_url": "not a url",
                    "api_key_env": "PRIMARY_API_KEY",
                    "model": "m",
                }
            ],
            "is not an http(s) URL",
        ),
        (
            [
                {
                    "name": "a",
                    "base_url": "https://a.test",
                    "api_key_env": "PRIMARY_API_KEY",
                    "model": "m",
                },
                {
                    "name": "a",
                    "base_url": "https://b.test",
                    "api_key_env": "PRIMARY_API_KEY",
                    "model": "m",
                },
            ],
            "the name 'a' is used twice",
        ),
    ],
)
def test_a_wrong_provider_list_stops_the_checks_and_the_server(
    settings, monkeypatch, entries, expected
):
    from django.core import checks
    from django.core.exceptions import ImproperlyConfigured

    from generation.providers.config import refuse_to_start_if_misconfigured

    monkeypatch.setenv("PRIMARY_API_KEY", FAKE_API_KEY)
    monkeypatch.delenv("UNSET_KEY_VAR", raising=False)
    settings.GENERATION_PROVIDERS = entries

    errors = [m for m in checks.run_checks() if m.id == "generation.E001"]

    assert len(errors) == 1 and expected in errors[0].msg
    assert FAKE_API_KEY not in errors[0].msg
    with pytest.raises(
        ImproperlyConfigured, match=expected.replace("(", r"\(").replace(")", r"\)")
    ):
        refuse_to_start_if_misconfigured()


def test_a_valid_provider_list_passes_the_checks(providers):
    from django.core import checks

    assert not [m for m in checks.run_checks() if m.id == "generation.E001"]


async def test_health_and_metrics_show_each_circuit_to_operators_only(api, providers, settings):
    primary, _ = providers
    settings.METRICS_TOKEN = "metrics-token-for-tests"
    bearer = {"Authorization": "Bearer metrics-token-for-tests"}
    primary.default = error(503)
    for _ in range(3):
        await get_provider().quiz(_request())

    public = (await api.get("/api/v1/health")).json()
    operators = (await api.get("/api/v1/health", headers=bearer)).json()
    metrics = (await api.get("/metrics", headers=bearer)).text

    assert "providers" not in public and public["status"] == "ok"
    assert operators["providers"]["primary"]["open"] is True
    assert operators["providers"]["primary"]["consecutive_failures"] == 3
    assert operators["providers"]["secondary"] == {
        "open": False,
        "consecutive_failures": 0,
        "opened_until": None,
    }
    assert 'roadmap_provider_circuit_open{provider="primary"} 1.0' in metrics
    assert 'roadmap_provider_circuit_open{provider="secondary"} 0.0' in metrics


async def test_the_live_draft_starts_over_named_after_the_secondary(providers):
    from tests.support.output import RecordingSink

    primary, _ = providers
    primary.script(Behaviour(kind="ok", hang_after_chunks=2))
    sink = RecordingSink()

    draft, _ = await get_provider().tutorial(_request(), _no_progress, sink)

    assert sink.writers == ["primary", "secondary"]
    first, second = sink.answers()
    # The primary's partial answer is void; the secondary's is whole.
    assert first and "".join(sink.texts()) == VALID_TUTORIAL
    assert second == sink.answers()[-1] and draft.title


async def _no_progress(percentage: int) -> None:
    pass


def test_the_all_down_message_is_translated():
    from django.utils import translation

    with translation.override("zh-hans"):
        chinese = str(AllProvidersDown.public_message)

    assert chinese == "所有模型服务商暂时都不可用。请稍后重试。"


async def test_every_provider_misconfigured_fails_for_an_operator_not_a_retry(
    api, alice, make_roadmap, providers
):
    from generation.errors import ProviderRejected

    primary, secondary = providers
    primary.default = error(401)
    secondary.default = error(404)
    roadmap = await sync_to_async(make_roadmap)(alice)

    content = await retry_to_the_end(api, alice, roadmap, "resources")

    assert content.status == "failed"
    assert content.public_error == str(ProviderRejected.public_message)
    assert len(primary.requests) == 1 and len(secondary.requests) == 1


async def test_among_concurrent_connections_exactly_one_gets_the_trial(providers, settings):
    import asyncio

    from django.db import connection

    settings.GENERATION_CIRCUIT_SECONDS = 60
    for _ in range(3):
        await sync_to_async(circuit.failed)("primary")
    await sync_to_async(end_cool_off)("primary")

    def claim() -> bool:
        try:
            return circuit.first_allowed(["primary"]) == 0
        finally:
            connection.close()

    # Each in a thread of its own, so each on its own database connection.
    claims = await asyncio.gather(
        *(sync_to_async(claim, thread_sensitive=False)() for _ in range(8))
    )

    assert sorted(claims) == [False] * 7 + [True]
