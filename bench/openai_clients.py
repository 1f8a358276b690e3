"""What the OpenAI SDK's set-up costs the processes that generate, before
(BENCH_BEFORE, an earlier commit run from its own files, bench.baseline) and
after, alternating, ROUNDS runs each.

* Celery worker: CPU per generation. A worker runs each task on an event loop of
  its own, so it builds an OpenAI client per generation; one worker
  (GENERATION_CONCURRENCY=CONCURRENCY) runs GENERATIONS tutorials streamed by the
  fake OpenAI server (its own process) over STREAM_SECONDS each, after a first
  round of CONCURRENCY alone (what a worker pays once is not counted), and the
  worker's CPU is read from /proc over the batch. PostgreSQL + Redis.
* Embedded server: how long its loop stalls at the first generation. A thread of
  this process asks daphne for /api/v1/health every PROBE_SECONDS while the
  server's first generation starts (one retry, the in-process engine, SQLite);
  the slowest answer is the stall every socket and request of the server met."""

import json
import logging
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from bench.baseline import tree
from bench.in_flight import (
    PASSWORD,
    SEED,
    USERNAME,
    fake_provider,
    prepare,
    process_seconds,
    profiled,
)
from bench.retry_load import BASE_ENV
from bench.worker_scaling import bench_database_url, framework
from roadmap_project.distributed import DEFAULT_REDIS_URL, SetupError, ensure_database, ensure_redis
from tests.support.celery_workers import running_stack
from tests.support.daphne_server import daphne_server
from tests.support.processes import ROOT

RESULTS = ROOT / "bench" / "results" / "openai_clients.json"
BEFORE = os.environ.get("BENCH_BEFORE", "40fc7d3")
ROUNDS = int(os.environ.get("BENCH_OPENAI_CLIENTS_ROUNDS", "2"))
GENERATIONS = 60
CONCURRENCY = 8
STREAM_SECONDS = 2.0
PROBE_SECONDS = 0.02
TIMEOUT_SECONDS = 120.0


@contextmanager
def signed_in(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"{base_url}/api/v1", timeout=30) as client:
        token = client.post("/auth/token", json={"username": USERNAME, "password": PASSWORD})
        client.headers["Authorization"] = f"Token {token.raise_for_status().json()['token']}"
        yield client


def start_tutorials(client: httpx.Client, count: int) -> str:
    created = client.post("/roadmaps", json={"title": "Bench", "framework": framework(count)})
    roadmap_id = created.raise_for_status().json()["roadmap_id"]
    response = client.post(
        f"/roadmaps/{roadmap_id}/concepts/retry-batch",
        json={"content_types": ["tutorial"], "statuses": ["pending"]},
    )
    return response.raise_for_status().json()["data"]["task_id"]


def wait_finished(client: httpx.Client, task_id: str) -> dict:
    deadline = time.perf_counter() + TIMEOUT_SECONDS
    while (task := client.get(f"/tasks/{task_id}").json())["status"] == "running":
        if time.perf_counter() > deadline:
            raise SystemExit(f"task {task_id} still running after {TIMEOUT_SECONDS} s")
        time.sleep(0.1)
    return task


def worker_cpu(root: Path, env: dict, scratch: Path, base_url: str, name: str) -> dict:
    """CPU per generation of one Celery worker running the project at `root`
    (with BENCH_PROFILE=DIR, its py-spy profile in DIR, bench.in_flight.profiled)."""
    ensure_database(env["DATABASE_URL"], fresh=True)
    prepare(env, SEED, root)
    with running_stack(
        database_url=env["DATABASE_URL"],
        redis_url=env["REDIS_URL"],
        log_dir=scratch / "logs",
        media_root=scratch / "media",
        servers=1,
        workers=1,
        root=root,
        GENERATION_PROVIDER="openai",
        OPENAI_API_KEY="sk-bench",
        OPENAI_BASE_URL=base_url,
        GENERATION_CONCURRENCY=CONCURRENCY,
        BATCH_MAX_PAIRS=GENERATIONS,
    ) as stack:
        pid = stack.workers[0].process.pid
        with signed_in(stack.servers[0].url) as client, profiled(pid, f"worker-{name}"):
            # A first round alone: what a worker pays once (imports on either side)
            # is not a generation's.
            wait_finished(client, start_tutorials(client, CONCURRENCY))
            before = process_seconds(pid)
            task = wait_finished(client, start_tutorials(client, GENERATIONS))
            cpu = process_seconds(pid) - before
    return {
        "cpu_ms_per_generation": round(cpu * 1000 / GENERATIONS, 1),
        "completed": task["completed"],
    }


def first_generation_stall(root: Path, env: dict, scratch: Path, base_url: str) -> dict:
    """The slowest /health answer of an embedded server while its first generation starts."""
    prepare(env, SEED, root)
    with daphne_server(
        scratch,
        root=root,
        **env,
        GENERATION_PROVIDER="openai",
        OPENAI_API_KEY="sk-bench",
        OPENAI_BASE_URL=base_url,
    ) as server:
        answers: list[float] = []
        stop = threading.Event()

        def probe() -> None:
            with httpx.Client(base_url=server.http_url, timeout=30) as prober:
                while not stop.is_set():
                    sent = time.perf_counter()
                    prober.get("/api/v1/health").raise_for_status()
                    answers.append(time.perf_counter() - sent)
                    time.sleep(PROBE_SECONDS)

        with signed_in(server.http_url) as client:
            task_id = start_tutorials(client, 1)
            prober = threading.Thread(target=probe)
            prober.start()
            try:
                task = wait_finished(client, task_id)
            finally:
                stop.set()
                prober.join()
    return {
        "slowest_health_ms": round(max(answers) * 1000, 1),
        "median_health_ms": round(statistics.median(answers) * 1000, 1),
        "completed": task["completed"],
    }


def main() -> None:
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        sides = {"before": tree(BEFORE), "after": ROOT}
    except SystemExit as missing:
        print(f"  no before: {missing}")
        sides = {"after": ROOT}
    redis_url = os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL
    base = {**os.environ, **BASE_ENV, "DJANGO_SETTINGS_MODULE": "roadmap_project.settings"}
    base.pop("BENCH_TASKS")  # the work runs: that is what is measured
    try:
        ensure_redis(redis_url)
    except SetupError as error:
        raise SystemExit(f"Redis not available: {error}") from error
    distributed = base | {"DATABASE_URL": bench_database_url(), "REDIS_URL": redis_url}
    print(
        f"{GENERATIONS} tutorials on one Celery worker ({CONCURRENCY} at once, each streamed "
        f"over {STREAM_SECONDS} s); an embedded server's first generation; "
        f"{' '.join(sides)} alternating, {ROUNDS} rounds (before: {BEFORE})"
    )
    runs: dict[str, dict[str, list]] = {side: {"worker": [], "stall": []} for side in sides}
    provider, base_url = fake_provider(STREAM_SECONDS)
    try:
        with tempfile.TemporaryDirectory() as scratch:
            for round_number in range(1, ROUNDS + 1):
                for side, root in sides.items():
                    run_dir = Path(scratch) / f"{side}-{round_number}"
                    run_dir.mkdir()
                    worker = worker_cpu(
                        root, distributed, run_dir, base_url, f"{side}-{round_number}"
                    )
                    embedded = base | {
                        "VAR_DIR": str(run_dir),
                        "DATABASE_URL": f"sqlite:///{run_dir / 'db.sqlite3'}",
                        "REDIS_URL": "",
                    }
                    stall = first_generation_stall(root, embedded, run_dir, base_url)
                    runs[side]["worker"].append(worker)
                    runs[side]["stall"].append(stall)
                    print(
                        f"  {side:6} worker {worker['cpu_ms_per_generation']} ms CPU per "
                        f"generation ({worker['completed']} completed); embedded first "
                        f"generation: slowest /health {stall['slowest_health_ms']} ms "
                        f"(median {stall['median_health_ms']} ms)",
                        flush=True,
                    )
    finally:
        provider.terminate()
        provider.wait(10)
    report = {"before_commit": BEFORE, "generations": GENERATIONS, "rounds": ROUNDS}
    for side, measured in runs.items():
        report[side] = {
            "worker_cpu_ms_per_generation": statistics.fmean(
                r["cpu_ms_per_generation"] for r in measured["worker"]
            ),
            "slowest_health_ms": statistics.fmean(
                r["slowest_health_ms"] for r in measured["stall"]
            ),
            "runs": measured,
        }
    if "before" in report:
        for key in ("worker_cpu_ms_per_generation", "slowest_health_ms"):
            ratio = report["after"][key] / report["before"][key]
            report[f"{key}_ratio"] = round(ratio, 2)
            print(f"  after / before, {key}: {ratio:.2f}x")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
