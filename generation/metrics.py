"""GET /metrics: the Prometheus text format, for a staff session or the metrics
token (roadmap_project.monitoring); what each figure means is in
docs/operations.md "Metrics".

Every figure is read from the database when it is scraped, by a custom
collector. Two daphnes and two Celery workers share the work, a scrape reaches
one of them, and any of them may restart: a counter kept in a process's memory
would be that process's share since it started. The database already holds
every fact the counters count, durably: a usage record per provider request
(generations, tokens, cost and timings), a LeaseExpiry row per lease that ran
out, the content and item rows for the gauges, and each server process's
reported socket count (notifications.socket_count). prometheus_client's
multiprocess mode was the other way; it sums the files of the processes of one
host, so it is blind to a second machine and loses a counter whose files are
not kept across a deploy.

A scrape is the same five queries whatever the data size, each an aggregate the
database computes; its time grows with the usage records it sums (`make bench`,
bench/metrics_scrape.py)."""

from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime

from django.conf import settings
from django.db.models import Count, Min, Q, Sum
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_safe
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from generation.models import GenerationItem, ItemState, LeaseExpiry, UsageRecord
from generation.providers import circuit
from generation.providers import config as provider_config
from notifications.socket_count import open_connections
from roadmap_project import monitoring
from roadmaps.models import ConceptContent, ContentStatus, ContentType

# Upper bounds (seconds) of the histograms' buckets: a model answers a tutorial
# in 30-60 s, and its first token in a second or a few.
GENERATION_BUCKETS = (1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 45.0, 60.0, 90.0, 120.0, 180.0, 300.0)
FIRST_TOKEN_BUCKETS = (0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0)
REQUEST_LABELS = ("outcome", "content_type", "provider", "model")


def configured_providers() -> list[str]:
    """The providers generations may use, by the name their usage records carry."""
    return provider_config.names()


class RoadmapCollector:
    """The product's figures, read from the database at each collect(). Holds no
    state: a new collector (a restarted process) reports the same values."""

    def collect(self) -> Iterator[Metric]:
        now = timezone.now()
        yield content_items()
        yield from queued_items(now)
        yield from usage()
        yield lease_expiries()
        yield circuits()
        yield GaugeMetricFamily(
            "roadmap_websocket_connections",
            "WebSocket connections open on all server processes (each reports its "
            "count to the database every NOTIFICATIONS_CONNECTIONS_REPORT_SECONDS).",
            value=open_connections(now=now),
        )


def content_items() -> Metric:
    family = GaugeMetricFamily(
        "roadmap_content_items",
        "(concept, content type) pairs by generation status.",
        labels=["status", "content_type"],
    )
    counts = dict.fromkeys(((s, t) for s in ContentStatus.values for t in ContentType.values), 0)
    rows = ConceptContent.objects.order_by().values_list("status", "content_type")
    counts |= {(status, kind): n for status, kind, n in rows.annotate(n=Count("id"))}
    for (status, kind), n in sorted(counts.items()):
        family.add_metric([status, kind], n)
    return family


def queued_items(now: datetime) -> Iterator[Metric]:
    queued = GenerationItem.objects.filter(state=ItemState.QUEUED).aggregate(
        count=Count("id"), since=Min("task__created_at")
    )
    yield GaugeMetricFamily(
        "roadmap_queued_items",
        "Task items waiting for a provider slot (not yet running).",
        value=queued["count"],
    )
    waited = (now - queued["since"]).total_seconds() if queued["since"] else 0.0
    yield GaugeMetricFamily(
        "roadmap_oldest_queued_item_seconds",
        "How long the longest-waiting queued item has waited (since its task started); "
        "0 when nothing is queued.",
        value=max(waited, 0.0),
    )


def _buckets(row: dict, prefix: str, bounds: tuple[float, ...], total: int) -> list:
    return [(str(b), row[f"{prefix}{i}"]) for i, b in enumerate(bounds)] + [("+Inf", total)]


def usage_rows() -> list[dict]:
    """One row per (outcome, content type, provider, model) of the usage records,
    with every sum and bucket count the usage metrics need: one query."""
    durations = {
        f"le_duration{i}": Count("id", filter=Q(duration_seconds__lte=bound))
        for i, bound in enumerate(GENERATION_BUCKETS)
    }
    first_tokens = {
        f"le_first_token{i}": Count("id", filter=Q(first_token_seconds__lte=bound))
        for i, bound in enumerate(FIRST_TOKEN_BUCKETS)
    }
    return list(
        UsageRecord.objects.order_by()
        .values(*REQUEST_LABELS)
        .annotate(
            requests=Count("id"),
            prompt_tokens=Sum("prompt_tokens", default=0),
            completion_tokens=Sum("completion_tokens", default=0),
            cost=Sum("cost"),
            duration_sum=Sum("duration_seconds", default=0.0),
            first_token_count=Count("first_token_seconds"),
            first_token_sum=Sum("first_token_seconds", default=0.0),
            **durations,
            **first_tokens,
        )
        .order_by(*REQUEST_LABELS)
    )


def usage() -> Iterator[Metric]:
    generations = CounterMetricFamily(
        "roadmap_generations",
        "Provider requests of generations, by the request's outcome (completed, unusable, "
        "truncated, failed, cancelled); an attempt that re-asks or fails over counts each "
        "request. From the usage records: a worker killed mid-attempt records none "
        "(see roadmap_lease_expiries_total).",
        labels=list(REQUEST_LABELS),
    )
    seconds = HistogramMetricFamily(
        "roadmap_generation_seconds",
        "Duration of each provider request, from sending it to the end of the answer.",
        labels=list(REQUEST_LABELS),
    )
    first_token = HistogramMetricFamily(
        "roadmap_first_token_seconds",
        "Time to the first token of each provider request that received one.",
        labels=list(REQUEST_LABELS),
    )
    tokens: dict[tuple[str, str, str], int] = defaultdict(int)
    cost: dict[tuple[str, str], float] = defaultdict(float)
    for row in usage_rows():
        labels = [row[name] for name in REQUEST_LABELS]
        generations.add_metric(labels, row["requests"])
        seconds.add_metric(
            labels,
            _buckets(row, "le_duration", GENERATION_BUCKETS, row["requests"]),
            sum_value=row["duration_sum"],
        )
        first_token.add_metric(
            labels,
            _buckets(row, "le_first_token", FIRST_TOKEN_BUCKETS, row["first_token_count"]),
            sum_value=row["first_token_sum"],
        )
        provider, model = row["provider"], row["model"]
        tokens["prompt", provider, model] += row["prompt_tokens"]
        tokens["completion", provider, model] += row["completion_tokens"]
        if row["cost"] is not None:
            cost[provider, model] += float(row["cost"])
    yield generations
    yield seconds
    yield first_token
    token_family = CounterMetricFamily(
        "roadmap_tokens",
        "Tokens of provider requests (the provider's count, or an estimate where it "
        "reported none), by kind (prompt, completion).",
        labels=["kind", "provider", "model"],
    )
    for key, n in sorted(tokens.items()):
        token_family.add_metric(list(key), n)
    yield token_family
    currency = settings.GENERATION_PRICES.get("currency", "")
    cost_family = CounterMetricFamily(
        "roadmap_cost",
        f"Cost of provider requests in GENERATION_PRICES' currency ({currency or 'unset'}); "
        "a model without a price has no series.",
        labels=["provider", "model"],
    )
    for key, value in sorted(cost.items()):
        cost_family.add_metric(list(key), value)
    yield cost_family


def lease_expiries() -> Metric:
    return CounterMetricFamily(
        "roadmap_lease_expiries",
        "Generations failed because their lease ran out (a worker killed or hung, a "
        "message lost), by the sweep or by a start that took the pair over.",
        value=LeaseExpiry.objects.count(),
    )


def circuits() -> Metric:
    family = GaugeMetricFamily(
        "roadmap_provider_circuit_open",
        "1 while a provider's circuit is open (generations skip it), else 0.",
        labels=["provider"],
    )
    # Every configured provider has a series (0 before its first failure), so the
    # alert on it (docs/operations.md) is in place from the start.
    for provider, state in circuit.states(configured_providers()).items():
        family.add_metric([provider], 1 if state["open"] else 0)
    return family


registry = CollectorRegistry()
registry.register(RoadmapCollector())


@csrf_exempt  # reads only: any other method is 405, not a CSRF failure
@require_safe
@never_cache
def metrics(request: HttpRequest) -> HttpResponse:
    """The Prometheus text format (0.0.4) of every figure, for operators only."""
    refused = monitoring.refusal(request)
    if refused is not None:
        return refused
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_PLAIN_0_0_4)
