"""What was spent (DESIGN §4 "Usage and budgets", §7): usage records summed over a
period of UTC days, in all and per group. The one reader behind `GET /usage/`,
the admin's totals and `manage.py usage_report`, so the three always agree.

Every figure is summed by the database: a report costs the same few queries
whether a user has ten records or a million."""

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db.models import Count, F, Q, QuerySet, Sum
from django.db.models.functions import TruncDate
from django.http import Http404
from django.shortcuts import get_object_or_404
from django.utils.translation import gettext as _

from generation.models import UsageRecord
from generation.usage import currency

# The longest period one report covers (a leap year): a report stays a bounded
# amount of work, and a year of days stays a readable list of groups.
MAX_DAYS = 366
# What a report's groups may be keyed by; the API offers all but `user`, which
# would name other users.
GROUP_KEYS = {
    "day": TruncDate("created_at", tzinfo=dt.UTC),
    "roadmap": F("roadmap_id"),
    "content_type": F("content_type"),
    "model": F("model"),
    "user": F("user__username"),
}
API_GROUPS = ("day", "roadmap", "content_type", "model")
# The precision costs are stored with (UsageRecord.cost).
COST_PLACES = Decimal("1e-10")

FIGURES = {
    "generations": Count("attempt_id", distinct=True),
    "requests": Count("id"),
    "prompt_tokens": Sum("prompt_tokens", default=0),
    "completion_tokens": Sum("completion_tokens", default=0),
    # Named apart from the field: `unpriced` filters on the field itself.
    "cost_sum": Sum("cost"),
    "unpriced": Count("id", filter=Q(cost__isnull=True)),
}


@dataclass(frozen=True)
class Figures:
    """What some requests used. `generations` counts attempts (each may have
    made several requests: re-asks, failover); `cost` is None when any of the
    requests was of a model without a price, since a sum that left them out
    would look complete and be too low."""

    generations: int
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cost: Decimal | None


@dataclass(frozen=True)
class Group(Figures):
    """The figures of one day (`YYYY-MM-DD`), roadmap (its id), content type,
    model or user (username; None for a deleted user)."""

    key: str | None


@dataclass(frozen=True)
class Report:
    since: dt.date
    until: dt.date
    group_by: str | None
    currency: str
    totals: Figures
    groups: list[Group]


def check_period(*, since: dt.date, until: dt.date) -> None:
    """ValidationError (keyed by `until`) unless the period runs forward over at
    most MAX_DAYS days."""
    if until < since:
        raise ValidationError({"until": _("Must not be before since (%s).") % since.isoformat()})
    if (until - since).days + 1 > MAX_DAYS:
        raise ValidationError(
            {"until": _("A report covers at most %(days)d days.") % {"days": MAX_DAYS}}
        )
    if until == dt.date.max:
        raise ValidationError({"until": _("Must be before %s.") % dt.date.max.isoformat()})


def default_period(
    *, since: dt.date | None, until: dt.date | None, today: dt.date
) -> tuple[dt.date, dt.date]:
    """Until defaults to today (UTC), since to until: no dates, today alone."""
    until = until or today
    return since or until, until


def today_utc() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


def start_of(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time.min, tzinfo=dt.UTC)


def records_between(*, since: dt.date, until: dt.date, user=None) -> QuerySet[UsageRecord]:
    """The records of these UTC days, both included (of one user, or everyone's
    when `user` is None): a range on created_at, so the (user, created_at) index
    serves it."""
    records = UsageRecord.objects.filter(
        created_at__gte=start_of(since), created_at__lt=start_of(until + dt.timedelta(days=1))
    )
    return records if user is None else records.filter(user=user)


def figures_of(row: dict) -> dict:
    cost = None if row["unpriced"] else (row["cost_sum"] or Decimal(0)).quantize(COST_PLACES)
    return {
        "generations": row["generations"],
        "requests": row["requests"],
        "prompt_tokens": row["prompt_tokens"],
        "completion_tokens": row["completion_tokens"],
        "cost": cost,
    }


def usage_totals(records: QuerySet[UsageRecord]) -> Figures:
    """The figures of any selection of records, in one aggregate query."""
    return Figures(**figures_of(records.aggregate(**FIGURES)))


def usage_groups(records: QuerySet[UsageRecord], *, group_by: str) -> list[Group]:
    """One group per key, in key order, in one GROUP BY query."""
    rows = (
        records.annotate(key=GROUP_KEYS[group_by]).values("key").annotate(**FIGURES).order_by("key")
    )
    return [Group(key=_key(row["key"]), **figures_of(row)) for row in rows]


def _key(value) -> str | None:
    if value is None:
        return None
    return value.isoformat() if isinstance(value, dt.date) else str(value)


def usage_report(
    *,
    since: dt.date | None = None,
    until: dt.date | None = None,
    group_by: str | None = None,
    user=None,
) -> Report:
    """A user's spending (everyone's when `user` is None) over a period of UTC
    days (default: today), with its groups when `group_by` names a key. Two
    queries. ValidationError for a period check_period refuses."""
    since, until = default_period(since=since, until=until, today=today_utc())
    check_period(since=since, until=until)
    if group_by is not None and group_by not in GROUP_KEYS:
        raise ValidationError({"group_by": _("Unknown grouping: %s.") % group_by})
    records = records_between(since=since, until=until, user=user)
    return Report(
        since=since,
        until=until,
        group_by=group_by,
        currency=currency(),
        totals=usage_totals(records),
        groups=[] if group_by is None else usage_groups(records, group_by=group_by),
    )


def usage_subject(*, requester, username: str | None):
    """Whose usage a request reads: the requester's own, or with `username` any
    user's for staff. Anyone else's, for a user who is not staff, is Http404, as
    an unknown username is: existence is never revealed."""
    if not username or username == requester.get_username():
        return requester
    if not requester.is_staff:
        raise Http404
    return get_object_or_404(get_user_model(), username=username)
