"""Usage (DESIGN §6 "Usage"): every provider request of an attempt is a usage
record whose tokens are the provider's own count (or an estimate, marked), priced
exactly, and written with the attempt's outcome."""

import asyncio
from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async

from generation.models import UsageRecord
from generation.usage import cost_of, price_of
from tests.conftest import auth
from tests.support.fake_openai import (
    FAKE_MODEL,
    LONG_TUTORIAL,
    TOKENS_PER_MESSAGE,
    error,
    fake_token_count,
    ok,
)
from tests.support.retries import retry_to_the_end, retry_url, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

PRICES = {
    "currency": "EUR",
    "models": {
        "fake-gpt": {"prompt": "0.15", "completion": "0.60"},
        "fake-gpt-test": {"prompt": "2.50", "completion": "10.00"},
    },
}


def records_of(roadmap) -> list[UsageRecord]:
    return list(UsageRecord.objects.filter(roadmap_id=roadmap.pk).order_by("id"))


@pytest.mark.parametrize("content_type", ["tutorial", "resources", "quiz"])
async def test_stored_tokens_are_the_providers_own_count(
    api, alice, make_roadmap, fake_openai, settings, content_type
):
    settings.GENERATION_PRICES = PRICES
    roadmap = await sync_to_async(make_roadmap)(alice)
    content = await retry_to_the_end(api, alice, roadmap, content_type)

    [record] = await sync_to_async(records_of)(roadmap)
    [reported] = fake_openai.usage_reported
    assert content.status == "completed"
    assert (record.prompt_tokens, record.completion_tokens) == (
        reported["prompt_tokens"],
        reported["completion_tokens"],
    )
    assert not record.estimated and record.outcome == "completed"
    assert (record.user_id, record.task_id, record.content_type) == (
        alice.pk,
        content.task_id,
        content_type,
    )
    assert (record.provider, record.model) == ("openai", FAKE_MODEL)
    assert record.cost == (
        reported["prompt_tokens"] * Decimal("2.50") + reported["completion_tokens"] * Decimal("10")
    ) / Decimal(1_000_000)
    assert record.first_token_seconds is not None and record.duration_seconds > 0
    assert (content.provider, content.model) == ("openai", FAKE_MODEL)
    assert (content.prompt_tokens, content.completion_tokens) == (
        record.prompt_tokens,
        record.completion_tokens,
    )


async def test_a_reasked_attempt_has_a_record_per_request(api, alice, make_roadmap, fake_openai):
    fake_openai.script(ok("# Only a title\n\n- a list, no prose\n"), ok())
    roadmap = await sync_to_async(make_roadmap)(alice)
    content = await retry_to_the_end(api, alice, roadmap)

    records = await sync_to_async(records_of)(roadmap)
    assert content.status == "completed"
    assert [r.outcome for r in records] == ["unusable", "completed"]
    assert [(r.prompt_tokens, r.completion_tokens) for r in records] == [
        (u["prompt_tokens"], u["completion_tokens"]) for u in fake_openai.usage_reported
    ]
    assert {r.attempt_id for r in records} == {records[0].attempt_id}
    assert content.completion_tokens == sum(r.completion_tokens for r in records)


@pytest.mark.stress
async def test_a_cancelled_stream_is_recorded_as_cancelled_with_an_estimate(
    api, alice, make_roadmap, fake_openai
):
    fake_openai.script(ok(LONG_TUTORIAL, chunk_delay=0.05))
    roadmap = await sync_to_async(make_roadmap)(alice)
    started = await api.post(retry_url(roadmap), headers=auth(alice))
    task_id = started.json()["data"]["task_id"]
    await asyncio.sleep(1.0)
    assert (
        await api.post(f"/api/v1/tasks/{task_id}/cancel", headers=auth(alice))
    ).status_code == 202

    async def recorded():
        return await sync_to_async(records_of)(roadmap)

    [record] = await wait_for(recorded, within=10)
    assert record.outcome == "cancelled" and record.estimated
    assert 0 < record.completion_tokens < fake_token_count(LONG_TUTORIAL)
    assert fake_openai.usage_reported == []


@pytest.mark.parametrize(
    "answer",
    [ok(usage=False), ok(usage_counts={"prompt_tokens": "ten", "completion_tokens": 2.5})],
    ids=["no-count", "counts-not-numbers"],
)
async def test_without_the_servers_count_the_estimate_is_within_10_percent(
    api, alice, make_roadmap, fake_openai, answer
):
    fake_openai.script(answer)
    roadmap = await sync_to_async(make_roadmap)(alice, preferences={"language": "zh-CN"})
    content = await retry_to_the_end(api, alice, roadmap)

    [record] = await sync_to_async(records_of)(roadmap)
    [request] = fake_openai.requests
    prompt = sum(
        TOKENS_PER_MESSAGE + fake_token_count(m["content"]) for m in request.body["messages"]
    )
    from generation.tutorial_files import read_tutorial

    completion = fake_token_count(await sync_to_async(read_tutorial)(content))
    assert record.estimated and record.outcome == "completed"
    assert abs(record.prompt_tokens - prompt) <= 0.1 * prompt
    assert abs(record.completion_tokens - completion) <= 0.1 * completion


async def test_a_request_that_failed_without_an_answer_used_nothing(
    api, alice, make_roadmap, fake_openai
):
    fake_openai.script(*[error(503)] * 6)
    roadmap = await sync_to_async(make_roadmap)(alice)
    content = await retry_to_the_end(api, alice, roadmap)

    records = await sync_to_async(records_of)(roadmap)
    assert content.status == "failed"
    assert records and {r.outcome for r in records} == {"failed"}
    assert {(r.prompt_tokens, r.completion_tokens, r.estimated) for r in records} == {(0, 0, False)}


@pytest.mark.parametrize(
    ("model", "prompt", "completion", "cost"),
    [
        ("fake-gpt", 1_000_000, 0, Decimal("0.15")),
        ("fake-gpt", 0, 1_000_000, Decimal("0.60")),
        ("fake-gpt", 1234, 567, Decimal("0.0005253")),  # 1234 × 0.15 + 567 × 0.60, per million
        ("fake-gpt-2024-07-18", 1, 1, Decimal("0.00000075")),  # a dated snapshot: its family
        ("fake-gpt-test", 3, 7, Decimal("0.0000775")),  # the longest priced prefix wins
        ("fake-gpt", 0, 0, Decimal("0")),
    ],
)
def test_cost_is_tokens_times_prices_decimal_exact(settings, model, prompt, completion, cost):
    settings.GENERATION_PRICES = PRICES
    assert cost_of(model, prompt_tokens=prompt, completion_tokens=completion) == cost


def test_a_model_without_a_price_costs_null_not_zero(settings):
    settings.GENERATION_PRICES = PRICES
    assert price_of("other-model") is None
    assert cost_of("other-model", prompt_tokens=10, completion_tokens=10) is None
    settings.GENERATION_PRICES = {}
    assert cost_of("fake-gpt", prompt_tokens=10, completion_tokens=10) is None
