"""What one Prometheus scrape of GET /metrics costs as the usage records grow.

Every figure is summed by the database at scrape time (generation.metrics), in a
fixed number of queries; their time grows with the rows they sum. One daphne
(`DEBUG=0`) serves the scrape to a client in this process, with the metrics
token, at 1,000 and then 100,000 usage records (bulk-created, each with a random
one of 2 providers with 2 models each, 5 outcomes and 3 content types: the 60
label combinations a production answer has), beside a roadmap at the size limit
(1,500 pairs) and 1,000 lease expiries. Goal: well under a second at 100,000
records, a scrape interval being tens of seconds. SQLite (embedded) and
PostgreSQL + Redis. Writes bench/results/metrics_scrape.json."""

import logging
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

from bench.in_flight import measure_each, prepare
from tests.support.daphne_server import daphne_server
from tests.support.processes import ROOT

RESULTS = ROOT / "bench" / "results" / "metrics_scrape.json"
SIZES = (1_000, 100_000)
SAMPLES = 10
TOKEN = "bench-metrics-token"

SEED = """
from django.contrib.auth import get_user_model
from roadmaps.services import create_roadmap
from tests.support.roadmaps import framework_of
from generation.models import LeaseExpiry
import uuid
owner = get_user_model().objects.create_user(username="bench-metrics")
create_roadmap(owner=owner, title="Metrics", goal="", preferences={},
               framework=framework_of(stages=10, modules=50, concepts=500))
LeaseExpiry.objects.bulk_create(LeaseExpiry(attempt_id=uuid.uuid4()) for _ in range(1000))
"""

# Adds records up to the total in BENCH_METRICS_RECORDS.
GROW = """
import os, random, uuid
from decimal import Decimal
from django.utils import timezone
from generation.models import UsageRecord
wanted = int(os.environ["BENCH_METRICS_RECORDS"])
have = UsageRecord.objects.count()
rng = random.Random(have)
now = timezone.now()
def made(n):
    provider = rng.choice(("openai", "backup"))
    return UsageRecord(
        roadmap_id=uuid.uuid4(), task_id="batch-retry-bench", attempt_id=uuid.uuid4(),
        content_type=rng.choice(("tutorial", "resources", "quiz")),
        provider=provider, model=f"{provider}-model-{rng.randint(1, 2)}",
        prompt_tokens=rng.randint(200, 900), completion_tokens=rng.randint(300, 3000),
        first_token_seconds=rng.uniform(0.2, 6.0), duration_seconds=rng.uniform(2, 90),
        outcome=rng.choice(("completed", "unusable", "truncated", "failed", "cancelled")),
        cost=Decimal("0.0012"), created_at=now,
    )
UsageRecord.objects.bulk_create((made(n) for n in range(have, wanted)), batch_size=5000)
"""


def grow(env: dict, records: int) -> None:
    subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", GROW],
        cwd=ROOT, env={**env, "BENCH_METRICS_RECORDS": str(records)}, check=True,
    )  # fmt: skip


def measure(env: dict, scratch: Path) -> dict:
    prepare(env, SEED)
    result = {}
    with (
        daphne_server(scratch, **env, METRICS_TOKEN=TOKEN) as server,
        httpx.Client(
            base_url=server.http_url,
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=120,
        ) as client,
    ):
        for records in SIZES:
            grow(env, records)
            client.get("/metrics").raise_for_status()  # warm: connections, imports
            times = []
            for _ in range(SAMPLES):
                started = time.perf_counter()
                response = client.get("/metrics")
                times.append((time.perf_counter() - started) * 1000)
                response.raise_for_status()
            result[f"records_{records}"] = {
                "median_ms": round(statistics.median(times)),
                "max_ms": round(max(times)),
                "kib": round(len(response.content) / 1024),
            }
    return result


def describe(result: dict) -> str:
    return ", ".join(
        f"{size:,} records: {result[f'records_{size}']['median_ms']} ms "
        f"(max {result[f'records_{size}']['max_ms']}, {result[f'records_{size}']['kib']} KiB)"
        for size in SIZES
    )


def main() -> None:
    logging.getLogger("httpx").setLevel(logging.WARNING)
    report = {
        "machine": f"{platform.node()}, {os.cpu_count()} cores",
        "sizes": list(SIZES),
        "samples": SAMPLES,
    }
    print(
        f"GET /metrics, {SAMPLES} scrapes at each of {', '.join(f'{s:,}' for s in SIZES)} records"
    )
    measure_each(report, RESULTS, measure, describe)
