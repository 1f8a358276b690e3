"""A batch with the primary provider down from the start, against the same batch
with it healthy: does failover keep the makespan (goal: at most 1.2 times), and does the
circuit keep the batch off the dead provider?

One daphne (in-process engine, GENERATION_CONCURRENCY slots) with
GENERATION_PROVIDERS naming two fake OpenAI servers (tests/support/fake_openai.py,
threads of this process, which counts their requests), each streaming every
answer over STREAM_SECONDS through the real SDK. *Healthy*: both answer, the
primary serves. *Primary down*: the primary answers every request 503 (no
Retry-After, so the SDK backs off as it would against a real one), from the
first. Runs alternate healthy / down, a fresh roadmap of GENERATIONS tutorials
each, every circuit forgotten in between. The primary's requests while down are
bounded by the calls that started before its circuit opened: each slot's first
call, with the SDK's retries (OPENAI_MAX_RETRIES), not the batch size. SQLite
(embedded) and PostgreSQL + Redis."""

import json
import logging
import os
import platform
import statistics
import time
from pathlib import Path

import httpx

from bench.in_flight import (
    PASSWORD,
    SEED,
    USERNAME,
    measure_each,
    prepare,
    process_seconds,
    run_sql,
    task_row,
)
from bench.worker_scaling import framework
from tests.support.daphne_server import daphne_server
from tests.support.fake_openai import FakeOpenAI, error, streaming_seconds
from tests.support.processes import ROOT

RESULTS = ROOT / "bench" / "results" / "failover.json"
GENERATIONS = int(os.environ.get("BENCH_FAILOVER_PAIRS", "500"))
SLOTS = 32  # GENERATION_CONCURRENCY (the default)
STREAM_SECONDS = 1.0
ROUNDS = 3  # healthy/down pairs per configuration
CIRCUIT_FAILURES = 5  # GENERATION_CIRCUIT_FAILURES (the default)
SDK_RETRIES = 2  # OPENAI_MAX_RETRIES (the default)
TIMEOUT_SECONDS = 300.0
HEALTHY = streaming_seconds(STREAM_SECONDS)
# A real provider's 503 need not say when to come back: the SDK's own backoff.
DOWN = error(503, headers={})


def providers(primary: FakeOpenAI, secondary: FakeOpenAI) -> dict[str, str]:
    return {
        "GENERATION_PROVIDER": "openai",
        "GENERATION_PROVIDERS": json.dumps(
            [
                {
                    "name": name,
                    "base_url": fake.base_url,
                    "model": f"gpt-{name}",
                    "api_key_env": f"{name.upper()}_API_KEY",
                }
                for name, fake in (("primary", primary), ("secondary", secondary))
            ]
        ),
        "PRIMARY_API_KEY": "sk-bench-primary",
        "SECONDARY_API_KEY": "sk-bench-secondary",
        "GENERATION_CIRCUIT_FAILURES": str(CIRCUIT_FAILURES),
        "OPENAI_MAX_RETRIES": str(SDK_RETRIES),
        "GENERATION_CONCURRENCY": str(SLOTS),
        "BATCH_MAX_PAIRS": str(GENERATIONS),
    }


def one_batch(client: httpx.Client, database_url: str, pid: int) -> dict:
    """Generate a fresh roadmap's tutorials; makespan and the server's CPU seconds."""
    created = client.post("/roadmaps", json={"title": "Bench", "framework": framework(GENERATIONS)})
    roadmap_id = created.raise_for_status().json()["roadmap_id"]
    cpu_before = process_seconds(pid)
    started = time.perf_counter()
    response = client.post(
        f"/roadmaps/{roadmap_id}/concepts/retry-batch",
        json={"content_types": ["tutorial"], "statuses": ["pending"]},
    )
    task_id = response.raise_for_status().json()["data"]["task_id"]
    first_wave = None
    while (task := task_row(database_url, task_id))[0] == "running":
        elapsed = time.perf_counter() - started
        if elapsed > TIMEOUT_SECONDS:
            raise SystemExit(f"the batch did not finish in {TIMEOUT_SECONDS} s")
        if first_wave is None and task[1] + task[2] >= SLOTS:
            first_wave = elapsed
        time.sleep(0.1)
    return {
        "makespan_s": round(time.perf_counter() - started, 2),
        # Until as many pairs ended as there are slots: the calls that started at once.
        "first_slots_s": round(first_wave or 0.0, 2),
        "cpu_s": round(process_seconds(pid) - cpu_before, 2),
        "completed": task[1],
        "failed": task[2],
        "load_average": round(os.getloadavg()[0], 2),
    }


def measure(env: dict, scratch: Path) -> dict:
    prepare(env, SEED)
    primary, secondary = FakeOpenAI(HEALTHY).start(), FakeOpenAI(HEALTHY).start()
    runs: dict[str, list[dict]] = {"healthy": [], "primary_down": []}
    try:
        with (
            daphne_server(scratch, **env, **providers(primary, secondary)) as server,
            httpx.Client(base_url=f"{server.http_url}/api/v1", timeout=60) as client,
        ):
            token = client.post("/auth/token", json={"username": USERNAME, "password": PASSWORD})
            client.headers["Authorization"] = f"Token {token.raise_for_status().json()['token']}"
            for _ in range(ROUNDS):
                for label, answer in (("healthy", HEALTHY), ("primary_down", DOWN)):
                    run_sql(env["DATABASE_URL"], "DELETE FROM generation_providercircuit")
                    primary.default = answer
                    asked = len(primary.requests), len(secondary.requests)
                    run = one_batch(client, env["DATABASE_URL"], server.process.pid)
                    run["primary_requests"] = len(primary.requests) - asked[0]
                    run["secondary_requests"] = len(secondary.requests) - asked[1]
                    runs[label].append(run)
                    print(f"    {label:12} {run}", flush=True)
    finally:
        primary.stop()
        secondary.stop()

    def median(label: str, key: str) -> float:
        return round(statistics.median(run[key] for run in runs[label]), 2)

    healthy, down = median("healthy", "makespan_s"), median("primary_down", "makespan_s")
    return {
        **runs,
        "healthy_makespan_s": healthy,
        "primary_down_makespan_s": down,
        "ratio": round(down / healthy, 2),
        # The server's own work for the batch: apart from the load of the machine.
        "cpu_ratio": round(median("primary_down", "cpu_s") / median("healthy", "cpu_s"), 2),
        "primary_requests_while_down": max(r["primary_requests"] for r in runs["primary_down"]),
    }


def main() -> None:
    logging.getLogger("httpx").setLevel(logging.WARNING)
    report = {
        "machine": f"{platform.node()}, {os.cpu_count()} cores",
        "load_average_at_start": round(os.getloadavg()[0], 2),
        "generations": GENERATIONS,
        "slots": SLOTS,
        "stream_seconds": STREAM_SECONDS,
        "circuit_failures": CIRCUIT_FAILURES,
        "sdk_retries": SDK_RETRIES,
    }
    print(
        f"{GENERATIONS} tutorials, {SLOTS} slots, answers over {STREAM_SECONDS} s; "
        f"healthy primary vs primary answering 503, alternated, {ROUNDS} of each"
    )
    measure_each(
        report,
        RESULTS,
        measure,
        lambda result: (
            f"healthy {result['healthy_makespan_s']:6.2f} s, primary down "
            f"{result['primary_down_makespan_s']:6.2f} s ({result['ratio']:.2f}x; goal <= 1.2x; "
            f"server CPU {result['cpu_ratio']:.2f}x), "
            f"primary asked {result['primary_requests_while_down']} times while down"
        ),
    )
