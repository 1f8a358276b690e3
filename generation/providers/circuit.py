"""A circuit per provider, shared by every process through the database (it works
the same with the in-process and the Celery engine, and needs no Redis):
GENERATION_CIRCUIT_FAILURES consecutive failures open it for
GENERATION_CIRCUIT_SECONDS; past that, one trial request decides, and only one
process gets it (a conditional UPDATE claims it by moving `opened_until` on).
Every change is one conditional UPDATE, so concurrent processes never lose one.
Called from worker threads (in_worker_thread), once per provider request."""

from datetime import timedelta

from django.conf import settings
from django.db.models import F, Q
from django.utils import timezone

from generation.models import ProviderCircuit


def _cool_off() -> timedelta:
    return timedelta(seconds=settings.GENERATION_CIRCUIT_SECONDS)


def _ensure(name: str) -> None:
    ProviderCircuit.objects.bulk_create([ProviderCircuit(name=name)], ignore_conflicts=True)


def allows(name: str) -> bool:
    """Whether a request may go to `name` now: its circuit is closed, or it is
    past its cool-off and this call claimed the one trial."""
    now = timezone.now()
    circuit = ProviderCircuit.objects.filter(name=name).first()
    if circuit is None or circuit.opened_until is None:
        return True
    if circuit.opened_until > now:
        return False
    # Half-open: whoever moves opened_until on has the trial; the others wait.
    return bool(
        ProviderCircuit.objects.filter(name=name, opened_until=circuit.opened_until).update(
            opened_until=now + _cool_off()
        )
    )


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
    ProviderCircuit.objects.filter(name=name).filter(
        Q(consecutive_failures__gt=0) | Q(opened_until__isnull=False)
    ).update(consecutive_failures=0, opened_until=None)


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
