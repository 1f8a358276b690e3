"""GET /api/v1/usage/ (DESIGN §4 "Usage and budgets"): a user's tokens and cost
over a period of UTC days, in all and per group, with today's budget, summed by
the database from the usage records."""

import datetime as dt
import uuid
from decimal import Decimal

import pytest
from asgiref.sync import sync_to_async
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from generation.models import UsageRecord
from generation.usage_report import today_utc
from tests.conftest import auth
from tests.support.fake_openai import FAKE_MODEL
from tests.support.retries import retry_url, settled, wait_for
from tests.support.usage import DAY, PRICES, at, record, save

pytestmark = pytest.mark.django_db(transaction=True)

URL = "/api/v1/usage/"
ONE_DAY = dt.timedelta(days=1)
ZERO = {
    "generations": 0,
    "requests": 0,
    "prompt_tokens": 0,
    "completion_tokens": 0,
    "cost": "0.0000000000",
}


async def usage(api, requester, **query) -> dict:
    response = await api.get(URL, params=query, headers=auth(requester))
    assert response.status_code == 200, response.text
    return response.json()


def utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


async def test_usage_sums_the_users_records_of_the_period_by_utc_day(api, alice, bob):
    attempt = uuid.uuid4()
    await sync_to_async(save)(
        # The first instant of `since` and the last of `until` are in the period …
        record(alice, created_at=at(DAY - ONE_DAY, 0), attempt_id=attempt),
        record(
            alice,
            created_at=at(DAY - ONE_DAY, 23, 59) + dt.timedelta(seconds=59.999999),
            attempt_id=attempt,  # a second request of the same attempt (a re-ask)
            prompt=10,
            completion=5,
            cost=Decimal("0.00002"),
        ),
        record(alice, created_at=at(DAY, 23), prompt=1000, completion=500, cost=Decimal("0.001")),
        # … the instants either side are not, and neither is anyone else's usage.
        record(alice, created_at=at(DAY + ONE_DAY, 0)),
        record(alice, created_at=at(DAY - 2 * ONE_DAY, 23, 59) + dt.timedelta(seconds=59.9)),
        record(bob, created_at=at(DAY)),
    )

    body = await usage(
        api, alice, since=(DAY - ONE_DAY).isoformat(), until=DAY.isoformat(), group_by="day"
    )

    assert (body["since"], body["until"]) == ("2025-03-09", "2025-03-10")
    assert body["totals"] == {
        "generations": 2,
        "requests": 3,
        "prompt_tokens": 1110,
        "completion_tokens": 555,
        "cost": "0.0011200000",
    }
    assert body["groups"] == [
        {
            "key": "2025-03-09",
            "generations": 1,
            "requests": 2,
            "prompt_tokens": 110,
            "completion_tokens": 55,
            "cost": "0.0001200000",
        },
        {
            "key": "2025-03-10",
            "generations": 1,
            "requests": 1,
            "prompt_tokens": 1000,
            "completion_tokens": 500,
            "cost": "0.0010000000",
        },
    ]


@pytest.mark.parametrize(
    ("group_by", "field", "values"),
    [
        ("roadmap", "roadmap_id", [uuid.UUID(int=2), uuid.UUID(int=1)]),
        ("content_type", "content_type", ["tutorial", "quiz"]),
        ("model", "model", ["fake-gpt-b", "fake-gpt-a"]),
    ],
)
async def test_usage_groups_by_key_in_key_order(api, alice, group_by, field, values):
    first, second = values
    await sync_to_async(save)(
        record(alice, created_at=at(DAY), **{field: first}),
        record(alice, created_at=at(DAY), **{field: first}),
        record(alice, created_at=at(DAY), **{field: second}, prompt=7),
    )

    body = await usage(api, alice, since=DAY.isoformat(), until=DAY.isoformat(), group_by=group_by)

    assert [(g["key"], g["requests"], g["prompt_tokens"]) for g in body["groups"]] == [
        (str(second), 1, 7),
        (str(first), 2, 200),
    ]
    assert body["totals"]["requests"] == 3


async def test_a_group_with_any_unpriced_request_has_a_null_cost(api, alice, settings):
    """Leaving the unpriced requests out of a sum would show a cost that looks
    complete and is too low."""
    settings.GENERATION_PRICES = PRICES
    await sync_to_async(save)(
        record(alice, created_at=at(DAY), model="fake-gpt", cost=Decimal("0.25")),
        record(alice, created_at=at(DAY), model="other", cost=Decimal("0.5")),
        record(alice, created_at=at(DAY), model="other", cost=None),
    )

    body = await usage(api, alice, since=DAY.isoformat(), until=DAY.isoformat(), group_by="model")

    assert body["currency"] == "EUR"
    assert [(g["key"], g["cost"]) for g in body["groups"]] == [
        ("fake-gpt", "0.2500000000"),
        ("other", None),
    ]
    assert body["totals"]["cost"] is None
    assert body["totals"]["prompt_tokens"] == 300


async def test_without_dates_usage_is_todays_and_without_group_by_there_are_no_groups(api, alice):
    today = today_utc()
    await sync_to_async(save)(
        record(alice, created_at=at(today, 0)),
        record(alice, created_at=at(today - ONE_DAY, 23)),
    )

    body = await usage(api, alice)

    assert (body["since"], body["until"]) == (today.isoformat(), today.isoformat())
    assert body["totals"]["requests"] == 1
    assert body["groups"] == []


async def test_usage_of_a_user_with_no_records_is_zero_and_costs_zero(api, alice):
    body = await usage(api, alice, group_by="day")

    assert body["totals"] == ZERO
    assert body["groups"] == []


async def test_budget_counts_todays_tokens_against_the_daily_budget(api, alice, bob, settings):
    settings.GENERATION_USER_DAILY_TOKENS = 1000
    today = today_utc()
    await sync_to_async(save)(
        record(alice, created_at=at(today, 0), prompt=200, completion=100),
        record(alice, created_at=at(today - ONE_DAY, 23), prompt=5000),  # yesterday's
        record(bob, created_at=at(today, 0), prompt=5000),
    )

    # The budget is today's, whatever period the report covers.
    body = await usage(api, alice, since="2024-01-01", until="2024-01-31")

    budget = body["budget"]
    assert (budget["daily_tokens"], budget["used"], budget["reserved"], budget["remaining"]) == (
        1000,
        300,
        0,
        700,
    )
    assert utc(budget["resets_at"]) == dt.datetime.combine(
        today + ONE_DAY, dt.time.min, tzinfo=dt.UTC
    )


async def test_an_unset_daily_budget_is_unlimited(api, alice, settings):
    settings.GENERATION_USER_DAILY_TOKENS = None
    await sync_to_async(save)(record(alice, created_at=at(today_utc(), 0)))

    budget = (await usage(api, alice))["budget"]

    assert (budget["daily_tokens"], budget["used"], budget["remaining"]) == (None, 150, None)


@pytest.mark.parametrize("path", ["/api/v1/usage/", "/api/v1/usage"])
async def test_usage_answers_with_and_without_the_trailing_slash(api, alice, path):
    response = await api.get(path, headers=auth(alice))

    assert response.status_code == 200
    assert response.json()["totals"] == ZERO


async def test_usage_needs_authentication(api):
    assert (await api.get(URL)).status_code == 401


# --- Whose usage ---------------------------------------------------------------------


async def test_staff_read_another_users_usage_with_user(api, alice, bob, make_user):
    staff = await sync_to_async(make_user)("root", is_staff=True)
    await sync_to_async(save)(
        record(bob, created_at=at(DAY), prompt=42), record(alice, created_at=at(DAY))
    )

    body = await usage(api, staff, since=DAY.isoformat(), until=DAY.isoformat(), user="bob")

    assert (body["totals"]["requests"], body["totals"]["prompt_tokens"]) == (1, 42)


async def test_a_user_naming_themselves_reads_their_own_usage(api, alice):
    await sync_to_async(save)(record(alice, created_at=at(DAY)))

    body = await usage(api, alice, since=DAY.isoformat(), until=DAY.isoformat(), user="alice")

    assert body["totals"]["requests"] == 1


@pytest.mark.parametrize("username", ["bob", "nobody"])
async def test_someone_elses_usage_answers_404_to_a_user_who_is_not_staff(
    api, alice, bob, username
):
    """The same answer for an existing user and an unknown one: existence is never
    revealed."""
    await sync_to_async(save)(record(bob, created_at=at(DAY)))

    response = await api.get(URL, params={"user": username}, headers=auth(alice))

    assert response.status_code == 404
    assert response.json() == {"detail": "Not found."}


async def test_an_unknown_user_answers_404_to_staff(api, make_user):
    staff = await sync_to_async(make_user)("root", is_staff=True)

    response = await api.get(URL, params={"user": "nobody"}, headers=auth(staff))

    assert response.status_code == 404


# --- Bad queries ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "field", "says"),
    [
        ({"since": "2025-13-01"}, "since", "Date has wrong format"),
        ({"since": "yesterday"}, "since", "Date has wrong format"),
        ({"since": "2025-03-10", "until": "2025-03-09"}, "until", "Must not be before since"),
        ({"since": "2024-01-01", "until": "2025-01-01"}, "until", "at most 366 days"),
        ({"since": "9999-12-31", "until": "9999-12-31"}, "until", "Must be before 9999-12-31"),
        ({"group_by": "week"}, "group_by", "not a valid choice"),
        ({"group_by": "user"}, "group_by", "not a valid choice"),  # it would name others
    ],
)
async def test_a_bad_query_answers_400_naming_the_field(api, alice, query, field, says):
    await sync_to_async(save)(record(alice, created_at=at(DAY)))

    response = await api.get(URL, params=query, headers=auth(alice))

    assert response.status_code == 400, response.text
    [message] = response.json()[field]
    assert says in message
    assert await UsageRecord.objects.acount() == 1


async def test_a_period_of_366_days_is_accepted(api, alice):
    body = await usage(api, alice, since="2024-01-01", until="2024-12-31", group_by="day")

    assert body["totals"] == ZERO


# --- Bounded work --------------------------------------------------------------------


def queries_for_usage(user, records: int) -> int:
    save(
        *(
            record(user, created_at=at(DAY - dt.timedelta(days=i % 30), i % 24))
            for i in range(records)
        )
    )
    client = Client(headers={"Authorization": f"Token {user.token}"})
    query = {"since": (DAY - dt.timedelta(days=29)).isoformat(), "until": DAY.isoformat()}
    with CaptureQueriesContext(connection) as queries:
        response = client.get(URL, {**query, "group_by": "day"})
    assert response.status_code == 200
    assert response.json()["totals"]["requests"] == records
    return len(queries)


def test_usage_takes_the_same_queries_for_10_records_as_for_1000(alice, bob):
    few = queries_for_usage(alice, 10)
    many = queries_for_usage(bob, 1000)

    assert few == many <= 5, (few, many)


# --- End to end ------------------------------------------------------------------------


async def test_a_real_generation_shows_in_usage_and_on_its_content(
    api, alice, make_roadmap, fake_openai, settings
):
    """Through a generation against the OpenAI-compatible fake: the usage the
    server reported reaches the report, priced, and the content names it."""
    settings.GENERATION_PRICES = {
        "currency": "USD",
        "models": {FAKE_MODEL: {"prompt": "2.50", "completion": "10.00"}},
    }
    roadmap = await sync_to_async(make_roadmap)(alice)
    started = await api.post(retry_url(roadmap), headers=auth(alice))
    assert started.status_code == 202
    content = await wait_for(lambda: settled(roadmap), within=30)
    assert content.status == "completed"
    [reported] = fake_openai.usage_reported
    prompt, completion = reported["prompt_tokens"], reported["completion_tokens"]

    body = await usage(api, alice, group_by="model")

    expected = {
        "generations": 1,
        "requests": 1,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "cost": str(
            ((prompt * Decimal("2.50") + completion * Decimal("10")) / 1_000_000).quantize(
                Decimal("1e-10")
            )
        ),
    }
    assert body["currency"] == "USD"
    assert body["totals"] == expected
    assert body["groups"] == [{"key": FAKE_MODEL, **expected}]
    assert body["budget"]["used"] == prompt + completion
    tutorial = await api.get(
        f"/api/v1/roadmaps/{roadmap.pk}/concepts/c001/tutorial", headers=auth(alice)
    )
    assert {k: tutorial.json()[k] for k in ("provider", "model", "prompt_tokens")} == {
        "provider": "openai",
        "model": FAKE_MODEL,
        "prompt_tokens": prompt,
    }
    assert tutorial.json()["completion_tokens"] == completion


# --- What a content names of its version -------------------------------------------

CONTENT_FIELDS = {
    "tutorial": {"tutorial_id", "title", "summary", "content_url", "markdown"},
    "resources": {"resources_id", "items"},
    "quiz": {"quiz_id", "questions"},
}
VERSION_FIELDS = {
    "content_version",
    "generated_at",
    "provider",
    "model",
    "prompt_tokens",
    "completion_tokens",
}


@pytest.mark.parametrize("content_type", ["tutorial", "resources", "quiz"])
async def test_every_content_names_the_provider_model_and_tokens_of_its_version(
    api, alice, make_roadmap, content_type
):
    roadmap = await sync_to_async(make_roadmap)(alice)
    started = await api.post(retry_url(roadmap, content_type=content_type), headers=auth(alice))
    assert started.status_code == 202
    content = await wait_for(lambda: settled(roadmap, content_type=content_type), within=30)
    assert content.status == "completed"

    response = await api.get(
        f"/api/v1/roadmaps/{roadmap.pk}/concepts/c001/{content_type}", headers=auth(alice)
    )

    body = response.json()
    assert set(body) == CONTENT_FIELDS[content_type] | VERSION_FIELDS
    records = [r async for r in UsageRecord.objects.filter(task_id=content.task_id)]
    assert records
    assert (body["provider"], body["model"]) == ("offline", "offline")
    assert body["prompt_tokens"] == sum(r.prompt_tokens for r in records) > 0
    assert body["completion_tokens"] == sum(r.completion_tokens for r in records) > 0
