"""One user's single retry while another user's whole roadmap generates: does the
retry still take about one generation's time?

One daphne (in-process engine, GENERATION_CONCURRENCY slots) against the fake
OpenAI server (another process) streaming every answer over STREAM_SECONDS.
User B retries one tutorial, alone, a few times; then user A starts generating a
500-concept roadmap (1,500 pairs, ~1,500 / slots * STREAM_SECONDS of work) and B
retries again while A's backlog runs. Latency is from B's POST to B's task
ending, read in the database. First come, first served, B would wait for A's
whole backlog; fair scheduling (generation.scheduling) puts B's pair in the next
free slot. Goal: with the backlog <= 2 x alone."""

import logging
import os
import platform
import statistics
import time
from pathlib import Path

import httpx

from bench.in_flight import fake_provider, measure_each, prepare, task_row
from bench.worker_scaling import framework
from tests.support.daphne_server import daphne_server
from tests.support.processes import ROOT

RESULTS = ROOT / "bench" / "results" / "fairness.json"
STREAM_SECONDS = 1.0
SLOTS = 32
BACKLOG_CONCEPTS = 500
SAMPLES = 5
USERS = ("backlog", "single")
PASSWORD = "bench-password-not-secret"

SEED = f"""
from django.contrib.auth import get_user_model
for name in {USERS!r}:
    get_user_model().objects.create_user(username=name, password={PASSWORD!r})
"""


def client_for(base_url: str, username: str) -> httpx.Client:
    client = httpx.Client(base_url=f"{base_url}/api/v1", timeout=60)
    token = client.post("/auth/token", json={"username": username, "password": PASSWORD})
    client.headers["Authorization"] = f"Token {token.raise_for_status().json()['token']}"
    return client


def retry_latency(client: httpx.Client, database_url: str, roadmap_id: str, concept: str) -> float:
    started = time.perf_counter()
    response = client.post(f"/roadmaps/{roadmap_id}/concepts/{concept}/tutorial/retry")
    task_id = response.raise_for_status().json()["data"]["task_id"]
    while (row := task_row(database_url, task_id))[0] == "running":
        if time.perf_counter() - started > 60:
            raise SystemExit("a single retry did not finish in 60 s")
        time.sleep(0.02)
    if row[1] != 1:
        raise SystemExit(f"the single retry ended {row[0]}")
    return time.perf_counter() - started


def measure(env: dict, scratch: Path) -> dict:
    prepare(env, SEED)
    provider, base_url = fake_provider(STREAM_SECONDS)
    try:
        with daphne_server(
            scratch,
            **env,
            GENERATION_PROVIDER="openai",
            OPENAI_API_KEY="sk-bench",
            OPENAI_BASE_URL=base_url,
            GENERATION_CONCURRENCY=str(SLOTS),
        ) as server:
            backlog, single = (client_for(server.http_url, name) for name in USERS)
            mine = (
                single.post("/roadmaps", json={"title": "B", "framework": framework(2 * SAMPLES)})
                .raise_for_status()
                .json()["roadmap_id"]
            )
            alone = [
                retry_latency(single, env["DATABASE_URL"], mine, f"c{i:03d}")
                for i in range(1, SAMPLES + 1)
            ]
            theirs = (
                backlog.post(
                    "/roadmaps",
                    json={"title": "A", "framework": framework(BACKLOG_CONCEPTS), "generate": True},
                )
                .raise_for_status()
                .json()
            )
            time.sleep(2 * STREAM_SECONDS)  # every slot is taken by the backlog
            behind = [
                retry_latency(single, env["DATABASE_URL"], mine, f"c{i:03d}")
                for i in range(SAMPLES + 1, 2 * SAMPLES + 1)
            ]
            backlog_left = task_row(env["DATABASE_URL"], theirs["task_id"])
            backlog.close()
            single.close()
    finally:
        provider.terminate()
        provider.wait(10)
    if backlog_left[0] != "running":
        raise SystemExit("the backlog ended before the measurements: make it longer")
    return {
        "alone_median_s": round(statistics.median(alone), 3),
        "with_backlog_median_s": round(statistics.median(behind), 3),
        "with_backlog_max_s": round(max(behind), 3),
        "ratio": round(statistics.median(behind) / statistics.median(alone), 2),
        "backlog_completed_meanwhile": backlog_left[1],
    }


def main() -> None:
    logging.getLogger("httpx").setLevel(logging.WARNING)
    report = {
        "machine": f"{platform.node()}, {os.cpu_count()} cores",
        "stream_seconds": STREAM_SECONDS,
        "slots": SLOTS,
        "backlog_pairs": BACKLOG_CONCEPTS * 3,
        "samples": SAMPLES,
    }
    print(
        f"single retries ({STREAM_SECONDS} s answers), alone and behind another user's "
        f"{BACKLOG_CONCEPTS * 3}-pair generation, {SLOTS} slots"
    )
    measure_each(
        report,
        RESULTS,
        measure,
        lambda result: (
            f"alone {result['alone_median_s']:.2f} s, behind the backlog "
            f"{result['with_backlog_median_s']:.2f} s "
            f"(max {result['with_backlog_max_s']:.2f} s): {result['ratio']:.2f}x"
        ),
    )
