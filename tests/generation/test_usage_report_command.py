"""`manage.py usage_report` (DESIGN §7): the same figures as GET /usage/, for
everyone or one user, as an aligned table or as CSV."""

import csv
import datetime as dt
import io
import re
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command

from generation.usage_report import today_utc
from tests.support.usage import DAY, PRICES, at, record, save

pytestmark = pytest.mark.django_db

NEXT_DAY = DAY + dt.timedelta(days=1)


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("usage_report", *args, stdout=out)
    return out.getvalue()


def csv_rows(*args: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(run(*args, "--format", "csv"))))


@pytest.fixture
def spending(alice, bob, settings):
    """alice: two requests on DAY, one of an unpriced model on the next day; bob:
    one request on DAY."""
    settings.GENERATION_PRICES = PRICES
    save(
        record(alice, created_at=at(DAY), prompt=100, completion=50, cost=Decimal("0.25")),
        record(alice, created_at=at(DAY, 13), prompt=10, completion=5, cost=Decimal("0.5")),
        record(alice, created_at=at(NEXT_DAY), model="other", cost=None),
        record(bob, created_at=at(DAY), prompt=1, completion=1, cost=Decimal("1")),
    )


def test_csv_by_user_has_a_row_per_user_and_the_totals(spending):
    rows = csv_rows("--since", DAY.isoformat(), "--until", DAY.isoformat(), "--group-by", "user")

    assert rows == [
        {
            "user": "alice",
            "generations": "2",
            "requests": "2",
            "prompt_tokens": "110",
            "completion_tokens": "55",
            "cost": "0.7500000000",
            "currency": "EUR",
        },
        {
            "user": "bob",
            "generations": "1",
            "requests": "1",
            "prompt_tokens": "1",
            "completion_tokens": "1",
            "cost": "1.0000000000",
            "currency": "EUR",
        },
        {
            "user": "total",
            "generations": "3",
            "requests": "3",
            "prompt_tokens": "111",
            "completion_tokens": "56",
            "cost": "1.7500000000",
            "currency": "EUR",
        },
    ]


def test_csv_of_one_user_by_day_leaves_the_cost_of_an_unpriced_day_empty(spending):
    rows = csv_rows(
        "--user",
        "alice",
        "--since",
        DAY.isoformat(),
        "--until",
        NEXT_DAY.isoformat(),
        "--group-by",
        "day",
    )

    assert [(r["day"], r["requests"], r["cost"]) for r in rows] == [
        (DAY.isoformat(), "2", "0.7500000000"),
        (NEXT_DAY.isoformat(), "1", ""),
        ("total", "3", ""),
    ]


def test_the_table_names_whose_usage_the_period_and_the_currency(spending):
    output = run("--since", DAY.isoformat(), "--group-by", "model", "--until", DAY.isoformat())

    lines = output.splitlines()
    assert lines[0] == "Usage of everyone, 2025-03-10 to 2025-03-10 (UTC), cost in EUR"
    assert lines[1].split() == [
        "model",
        "generations",
        "requests",
        "prompt_tokens",
        "completion_tokens",
        "cost",
    ]
    assert lines[2].split() == ["fake-gpt", "3", "3", "111", "56", "1.7500000000"]
    assert lines[3].split() == ["total", "3", "3", "111", "56", "1.7500000000"]
    assert len({len(line) for line in lines[1:]}) == 1  # aligned columns


def test_without_dates_the_report_is_todays(alice):
    save(
        record(alice, created_at=at(today_utc(), 0)),
        record(alice, created_at=at(today_utc() - dt.timedelta(days=1), 23)),
    )

    [total] = csv_rows()

    assert (total["key"], total["requests"]) == ("total", "1")


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--user", "nobody"], "No user named 'nobody'"),
        (["--since", "2025-03-10", "--until", "2025-03-09"], "Must not be before since"),
        (["--since", "2024-01-01", "--until", "2025-01-01"], "at most 366 days"),
        (["--since", "10/03/2025"], "not a date (YYYY-MM-DD): 10/03/2025"),
        (["--group-by", "week"], "invalid choice: 'week'"),
    ],
)
def test_bad_arguments_fail_with_a_message(args, says):
    with pytest.raises(CommandError, match=re.escape(says)):
        run(*args)
