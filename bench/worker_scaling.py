"""N generations on one Celery worker, then on two, against a provider of fixed
latency: does throughput scale with workers?

Everything is real except the model: PostgreSQL (a fresh `*_bench` database),
Redis, daphne and `celery worker` processes; the offline provider sleeps
OFFLINE_PROVIDER_DELAY_SECONDS per generation, like a model that always answers in
that time. Work is started and watched through the HTTP API
(`POST /roadmaps/{id}/concepts/retry-batch`, then `GET /tasks/{id}`), so the time includes
enqueueing, the broker, the state machine and the event store.

Ideal: one worker needs N / concurrency * delay seconds, two workers half that
(throughput ratio 2.0). Skipped, with the reason, when PostgreSQL or Redis is not
reachable.
"""

import json
import logging
import os
import tempfile
import time
from pathlib import Path

import dj_database_url
import httpx

from roadmap_project.distributed import (
    DEFAULT_DATABASE_URL,
    DEFAULT_REDIS_URL,
    SetupError,
    ensure_database,
    ensure_redis,
    manage,
)
from tests.support.celery_workers import running_stack

RESULTS = Path(__file__).resolve().parent / "results" / "worker_scaling.json"
GENERATIONS = 60  # tutorials: the offline provider waits the full delay for those
DELAY_SECONDS = 1.0
CONCURRENCY = 4  # GENERATION_CONCURRENCY of each worker
TIMEOUT_SECONDS = 120.0
USERNAME, PASSWORD = "bench", "bench-password-not-secret"


def bench_database_url() -> str:
    """Beside the configured PostgreSQL database (or the default one), never it."""
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        url = DEFAULT_DATABASE_URL
    config = dj_database_url.parse(url)
    return url.rsplit("/", 1)[0] + f"/{config['NAME']}_bench"


def framework(concepts: int) -> dict:
    items = [{"concept_id": f"c{i:03d}", "name": f"Concept {i}"} for i in range(1, concepts + 1)]
    return {"stages": [{"name": "Stage", "modules": [{"name": "Module", "concepts": items}]}]}


def timed_generation(server_url: str, count: int) -> tuple[float, dict]:
    """Create a roadmap of `count` concepts, generate their tutorials, wait for the end."""
    with httpx.Client(base_url=f"{server_url}/api/v1", timeout=30) as client:
        token = client.post("/auth/token/", json={"username": USERNAME, "password": PASSWORD})
        token.raise_for_status()
        client.headers["Authorization"] = f"Token {token.json()['token']}"
        created = client.post(
            "/roadmaps/", json={"title": "Bench", "goal": "", "framework": framework(count)}
        )
        created.raise_for_status()
        roadmap_id = created.json()["roadmap_id"]
        started = time.perf_counter()
        response = client.post(
            f"/roadmaps/{roadmap_id}/concepts/retry-batch",
            json={"content_types": ["tutorial"], "statuses": ["pending"]},
        )
        response.raise_for_status()
        task_id = response.json()["data"]["task_id"]
        deadline = started + TIMEOUT_SECONDS
        while True:
            task = client.get(f"/tasks/{task_id}").json()
            if task["status"] != "running":
                return time.perf_counter() - started, task
            if time.perf_counter() > deadline:
                raise RuntimeError(f"task {task_id} still running after {TIMEOUT_SECONDS} s")
            time.sleep(0.1)


def main() -> None:
    logging.getLogger("httpx").setLevel(logging.WARNING)
    database_url = bench_database_url()
    redis_url = os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL
    env = {**os.environ, "DATABASE_URL": database_url, "REDIS_URL": redis_url}
    try:
        ensure_redis(redis_url)
        ensure_database(database_url, fresh=True)
        manage("migrate", "--no-input", "--verbosity", "0", env=env)
        manage(
            "createsuperuser", "--no-input", "--username", USERNAME, "--email", "bench@example.com",
            env={**env, "DJANGO_SUPERUSER_PASSWORD": PASSWORD},
        )  # fmt: skip
    except SetupError as error:
        raise SystemExit(str(error)) from error

    print(
        f"{GENERATIONS} generations, provider latency {DELAY_SECONDS} s, "
        f"concurrency {CONCURRENCY} per worker, 1 daphne"
    )
    results: dict[int, float] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for workers in (1, 2):
            with running_stack(
                database_url=database_url,
                redis_url=redis_url,
                log_dir=Path(scratch) / f"logs-{workers}",
                media_root=Path(scratch) / "media",
                servers=1,
                workers=workers,
                OFFLINE_PROVIDER_DELAY_SECONDS=DELAY_SECONDS,
                GENERATION_CONCURRENCY=CONCURRENCY,
            ) as stack:
                seconds, task = timed_generation(stack.servers[0].url, GENERATIONS)
                done_by = [worker.succeeded_tasks() for worker in stack.workers]
            ideal = GENERATIONS / (CONCURRENCY * workers) * DELAY_SECONDS
            results[workers] = seconds
            print(
                f"  {workers} worker(s): {seconds:6.2f} s wall, "
                f"{GENERATIONS / seconds:5.1f} generations/s, ideal {ideal:5.2f} s, "
                f"status {task['status']} ({task['completed']}/{task['total']} completed), "
                f"per worker {done_by}"
            )
    ratio = results[1] / results[2]
    print(f"  scaling: two workers / one worker throughput = {ratio:.2f}x (ideal 2.00x)")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "generations": GENERATIONS,
                "provider_latency_s": DELAY_SECONDS,
                "concurrency_per_worker": CONCURRENCY,
                "seconds_by_workers": {str(k): round(v, 2) for k, v in results.items()},
                "throughput_ratio": round(ratio, 2),
            },
            indent=2,
        )
        + "\n"
    )
