"""Many generations in flight in one process: is the server's own cost per
generation small beside the provider's latency?

One daphne (in-process engine, GENERATION_CONCURRENCY = the batch size) generates
a batch of tutorials against the fake OpenAI server (tests/support/fake_openai.py,
another process), which streams every answer over STREAM_SECONDS, through the real
SDK over HTTP. Every generation can run at once, so the ideal makespan is one
answer's time; anything above it is the server's own work (claims, state
transitions, events, files, progress). Measured: makespan and its ratio to the
ideal, peak RSS of the server, and its CPU seconds per generation. SQLite
(embedded) and PostgreSQL + Redis (channel layer).

Before and after in the same run: the same batch, the same fake, served by
BEFORE's project (bench.baseline) and by this one, alternating, ROUNDS runs each
on a fresh database; the figures are their means, with the after's ratios to the
before (BEFORE; BENCH_IN_FLIGHT_BEFORE names another commit). BENCH_PROFILE=DIR
records each run's server with py-spy (`profiled`)."""

import json
import logging
import os
import platform
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import dj_database_url
import httpx
import psycopg

from bench.baseline import tree
from bench.retry_load import BASE_ENV
from bench.worker_scaling import bench_database_url, framework
from roadmap_project.distributed import (
    DEFAULT_REDIS_URL,
    SetupError,
    ensure_database,
    ensure_redis,
)
from tests.support.daphne_server import daphne_server
from tests.support.processes import ROOT

RESULTS = ROOT / "bench" / "results" / "in_flight.json"
GENERATIONS = int(os.environ.get("BENCH_IN_FLIGHT", "500"))
ROUNDS = int(os.environ.get("BENCH_IN_FLIGHT_ROUNDS", "2"))
# The before: the server as it was before its attempts were fenced against a
# cancel every 0.5 s. The after must not cost more CPU per generation beyond noise.
BEFORE = os.environ.get("BENCH_IN_FLIGHT_BEFORE", "f02fbcd")
STREAM_SECONDS = 10.0
TIMEOUT_SECONDS = 100.0
USERNAME, PASSWORD = "bench", "bench-password-not-secret"

SEED = f"""
from django.contrib.auth import get_user_model
get_user_model().objects.create_user(username={USERNAME!r}, password={PASSWORD!r})
"""


def process_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def task_row(database_url: str, task_id: str) -> tuple[str, int, int]:
    """Status and counters of a task, read from the database by this process: the
    server's CPU is what is measured, so it is not asked."""
    query = "SELECT status, completed, failed FROM generation_generationtask WHERE id = %s"
    return run_sql(database_url, query, [task_id])[0]


def run_sql(database_url: str, statement: str, params: list | None = None) -> list[tuple]:
    """One statement on the server's database, from this process, committed; its
    rows. Parameters are `%s`, on SQLite too."""
    if database_url.startswith("sqlite"):
        path = dj_database_url.parse(database_url)["NAME"]
        with sqlite3.connect(path) as connection:
            return connection.execute(statement.replace("%s", "?"), params or []).fetchall()
    with psycopg.connect(database_url, autocommit=True) as connection:
        cursor = connection.execute(statement, params or [])
        return cursor.fetchall() if cursor.description else []


def fake_provider(
    stream_seconds: float = STREAM_SECONDS, stamped_chars: int | None = None
) -> tuple[subprocess.Popen, str]:
    """The fake OpenAI server in its own process, streaming each answer over
    `stream_seconds`, and its base URL. With `stamped_chars`, tutorials are that
    long and each chunk carries its send time (fake_openai.stamped_tutorial)."""
    command = [sys.executable, "-m", "tests.support.fake_openai", str(stream_seconds)]
    if stamped_chars:
        command.append(str(stamped_chars))
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    return process, process.stdout.readline().strip()


def prepare(env: dict, seed: str, root: Path = ROOT) -> str:
    """Migrate the configuration's database and run the benchmark's seed script
    with the project at `root`; returns what the seed printed."""
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--no-input", "-v", "0"],
        cwd=root, env=env, check=True,
    )  # fmt: skip
    return subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", seed],
        cwd=root, env=env, check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip


def configurations(scratch: Path) -> dict[str, dict]:
    """The environments of a benchmark that runs the work in the server: SQLite
    (embedded) and PostgreSQL + Redis (a fresh `*_bench` database)."""
    base = {**os.environ, **BASE_ENV, "DJANGO_SETTINGS_MODULE": "roadmap_project.settings"}
    base.pop("BENCH_TASKS")  # the work runs here: that is what is measured
    redis_url = os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL
    database_url = bench_database_url()
    try:
        ensure_redis(redis_url)
        ensure_database(database_url, fresh=True)
    except SetupError as error:
        raise SystemExit(f"PostgreSQL + Redis not available: {error}") from error
    sqlite = scratch / "sqlite"
    sqlite.mkdir(exist_ok=True)
    return {
        "sqlite": {
            **base,
            "VAR_DIR": str(sqlite),
            "DATABASE_URL": f"sqlite:///{sqlite / 'db.sqlite3'}",
            "REDIS_URL": "",
        },
        "postgres_redis": {**base, "DATABASE_URL": database_url, "REDIS_URL": redis_url},
    }


def measure_each(
    report: dict, results: Path, measure: Callable[[dict, Path], dict], describe: Callable
) -> None:
    """Measure every configuration (SQLite; PostgreSQL + Redis), print one line per
    configuration (`describe(result)`), and write `report` with the results."""
    with tempfile.TemporaryDirectory() as scratch:
        for label, env in configurations(Path(scratch)).items():
            report[label] = result = measure(env, Path(scratch))
            print(f"  {label:15} {describe(result)}")
    results.parent.mkdir(exist_ok=True)
    results.write_text(json.dumps(report, indent=2) + "\n")


def fresh(env: dict, scratch: Path, name: str) -> dict:
    """The configuration's environment with an empty database and files of its
    own: every run of a before/after starts alike, whichever project migrates it."""
    var = scratch / name
    var.mkdir()
    env = {**env, "VAR_DIR": str(var)}
    if env["DATABASE_URL"].startswith("sqlite"):
        return env | {"DATABASE_URL": f"sqlite:///{var / 'db.sqlite3'}"}
    ensure_database(env["DATABASE_URL"], fresh=True)
    return env


@contextmanager
def profiled(pid: int, name: str) -> Iterator[None]:
    """With BENCH_PROFILE=DIR, a `py-spy record --gil` of the server over the
    block, as collapsed stacks in DIR/NAME.txt (the sampling slows the server:
    for finding where the time goes, not for the figures)."""
    directory = os.environ.get("BENCH_PROFILE")
    if not directory:
        yield
        return
    output = Path(directory) / f"{name}.txt"
    output.parent.mkdir(parents=True, exist_ok=True)
    command = ["py-spy", "record", "--gil", "--format", "raw", "-r", "200", "-p", str(pid)]
    spy = subprocess.Popen([*command, "-o", str(output)], stdout=subprocess.DEVNULL)
    time.sleep(1)  # attached before the work starts
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        spy.wait(30)


def measure(env: dict, scratch: Path, root: Path = ROOT, name: str = "run") -> dict:
    """One batch on a fresh daphne serving the project at `root`."""
    prepare(env, SEED, root)
    provider, base_url = fake_provider()
    try:
        with (
            daphne_server(
                scratch,
                root=root,
                **env,
                GENERATION_PROVIDER="openai",
                OPENAI_API_KEY="sk-bench",
                OPENAI_BASE_URL=base_url,
                GENERATION_CONCURRENCY=str(GENERATIONS),
                BATCH_MAX_PAIRS=str(GENERATIONS),
            ) as server,
            httpx.Client(base_url=f"{server.http_url}/api/v1", timeout=60) as client,
        ):
            token = client.post("/auth/token", json={"username": USERNAME, "password": PASSWORD})
            client.headers["Authorization"] = f"Token {token.raise_for_status().json()['token']}"
            created = client.post(
                "/roadmaps", json={"title": "Bench", "framework": framework(GENERATIONS)}
            )
            roadmap_id = created.raise_for_status().json()["roadmap_id"]
            pid = server.process.pid
            load_before = os.getloadavg()[0]
            with profiled(pid, name):
                cpu_before = process_seconds(pid)
                started = time.perf_counter()
                response = client.post(
                    f"/roadmaps/{roadmap_id}/concepts/retry-batch",
                    json={"content_types": ["tutorial"], "statuses": ["pending"]},
                )
                task_id = response.raise_for_status().json()["data"]["task_id"]
                while (task := task_row(env["DATABASE_URL"], task_id))[0] == "running":
                    if time.perf_counter() - started > TIMEOUT_SECONDS:
                        raise SystemExit(f"the batch did not finish in {TIMEOUT_SECONDS} s")
                    time.sleep(0.1)
                makespan = time.perf_counter() - started
                cpu = process_seconds(pid) - cpu_before
            rss = peak_rss_mb(pid)
    finally:
        provider.terminate()
        provider.wait(10)
    return {
        "makespan_s": round(makespan, 2),
        "ratio_to_ideal": round(makespan / STREAM_SECONDS, 2),
        "completed": task[1],
        "failed": task[2],
        "peak_rss_mb": round(rss, 1),
        "cpu_ms_per_generation": round(cpu * 1000 / GENERATIONS, 1),
        "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }


def describe(result: dict) -> str:
    return (
        f"makespan {result['makespan_s']:6.2f} s "
        f"({result['ratio_to_ideal']:.2f}x ideal), {result['completed']} completed, "
        f"{result['failed']} failed, peak RSS {result['peak_rss_mb']} MB, "
        f"{result['cpu_ms_per_generation']} ms CPU per generation, "
        f"load {result['load_average_1min'][0]} -> {result['load_average_1min'][1]}"
    )


def mean(runs: list[dict], key: str) -> float:
    return round(statistics.fmean(run[key] for run in runs), 2)


def sides() -> dict[str, Path]:
    """The after (this project) and, when this checkout has it, the before."""
    try:
        return {"before": tree(BEFORE), "after": ROOT}
    except SystemExit as missing:
        print(f"  no before: {missing}")
        return {"after": ROOT}


def main() -> None:
    logging.getLogger("httpx").setLevel(logging.WARNING)
    projects = sides()
    report = {
        "machine": f"{platform.node()}, {os.cpu_count()} cores",
        "generations": GENERATIONS,
        "stream_seconds": STREAM_SECONDS,
        "before_commit": BEFORE if "before" in projects else None,
        "rounds": ROUNDS,
    }
    print(
        f"{GENERATIONS} tutorials streamed over {STREAM_SECONDS} s each, all in flight at once; "
        f"{' '.join(projects)} interleaved, {ROUNDS} rounds (before: {BEFORE})"
    )
    with tempfile.TemporaryDirectory() as scratch:
        for label, env in configurations(Path(scratch)).items():
            runs: dict[str, list[dict]] = {side: [] for side in projects}
            for round_number in range(1, ROUNDS + 1):
                for side, root in projects.items():
                    name = f"{label}-{side}-{round_number}"
                    result = measure(fresh(env, Path(scratch), name), Path(scratch), root, name)
                    runs[side].append(result)
                    print(f"  {label:15} {side:6} {describe(result)}", flush=True)
            report[label] = entry = {
                side: {
                    "cpu_ms_per_generation": mean(side_runs, "cpu_ms_per_generation"),
                    "makespan_s": mean(side_runs, "makespan_s"),
                    "peak_rss_mb": mean(side_runs, "peak_rss_mb"),
                    "runs": side_runs,
                }
                for side, side_runs in runs.items()
            }
            if "before" in entry:
                for key in ("cpu_ms_per_generation", "makespan_s"):
                    ratio = entry["after"][key] / entry["before"][key]
                    entry[f"{key.split('_')[0]}_ratio"] = round(ratio, 2)
                print(
                    f"  {label:15} after / before: CPU per generation {entry['cpu_ratio']}x, "
                    f"makespan {entry['makespan_ratio']}x"
                )
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
