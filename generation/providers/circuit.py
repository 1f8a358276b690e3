"""A circuit per provider, shared by every process through the database (it works
the same with the in-process and the Celery engine, and needs no Redis):
GENERATION_CIRCUIT_FAILURES consecutive failures open it for
GENERATION_CIRCUIT_SECONDS; past that, one trial request decides, and only one
process gets it (a conditional UPDATE claims it by moving `opened_until` on).
Every change is one conditional UPDATE, so concurrent processes never lose one.
Called from worker threads (in_worker_thread), once per provider request."""

from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import F, Q
from django.utils import timezone

from generation.models import ProviderCircuit


def _cool_off() -> timedelta:
    return timedelta(seconds=settings.GENERATION_CIRCUIT_SECONDS)


def _ensure(name: str) -> None:
    ProviderCircuit.objects.bulk_create([ProviderCircuit(name=name)], ignore_conflicts=True)


def first_allowed(names: list[str]) -> int:
    """The position in `names` of the first provider a request may go to now: its
    circuit is closed, or past its cool-off and this call claimed the one trial
    (of that provider only); len(names) when every one is open. One read for all
    of them, so skipping open circuits costs no round trip of its own."""
    now = timezone.now()
    opened = dict(
        ProviderCircuit.objects.filter(name__in=names).values_list("name", "opened_until")
    )
    for position, name in enumerate(names):
        until = opened.get(name)
        if until is None or (until <= now and _claim_trial(name, until, now)):
            return position
    return len(names)


def _claim_trial(name: str, until: datetime, now: datetime) -> bool:
    """Half-open: whoever moves opened_until on has the trial; the others wait."""
    claimed = ProviderCircuit.objects.filter(name=name, opened_until=until).update(
        opened_until=now + _cool_off()
    )
    return bool(claimed)


def failed(name: str) -> None:
    """One more consecutive failure; the threshold's one opens the circuit (a
    failed trial has already moved it on by a whole cool-off)."""
    _ensure(name)
    ProviderCircuit.objects.filter(name=name).update(
        consecutive_failures=F("consecutive_failures") + 1
    )
    ProviderCircuit.objects.filter(
        name=name,
        opened_until__isnull=True,
        consecutive_failures__gte=max(1, settings.GENERATION_CIRCUIT_FAILURES),
    ).update(opened_until=timezone.now() + _cool_off())


def succeeded(name: str) -> None:
    """A served request closes the circuit (a no-op write when it was closed)."""
    close([name])


def close(names: list[str]) -> int:
    """An operator closes these circuits (the provider is fixed): the next request
    goes to it at once instead of after the cool-off; how many were open or counting."""
    return (
        ProviderCircuit.objects.filter(name__in=names)
        .filter(Q(consecutive_failures__gt=0) | Q(opened_until__isnull=False))
        .update(consecutive_failures=0, opened_until=None)
    )


def states(names: list[str]) -> dict[str, dict]:
    """Each provider's circuit, for health and metrics: open, failures, until when."""
    now = timezone.now()
    # Only GENERATION_PROVIDERS run through the failover; without it no circuit is
    # ever written, so none is read (a scrape stays within its queries).
    rows = (
        {row.name: row for row in ProviderCircuit.objects.filter(name__in=names)}
        if settings.GENERATION_PROVIDERS
        else {}
    )
    result = {}
    for name in names:
        row = rows.get(name)
        until = row.opened_until if row is not None else None
        result[name] = {
            "open": until is not None and until > now,
            "consecutive_failures": row.consecutive_failures if row is not None else 0,
            "opened_until": until.isoformat() if until is not None else None,
        }
    return result
