"""The retry endpoint under load, beside a trivial view of the same server.

A real daphne (one process) serves `bench.settings`: the product plus a trivial
async view. `wrk` (Debian's package) sends the load from another process; every
request retries a different (concept, content type) pair, so each one is a real
start (202) that also runs the generation in the background (offline provider).

Scenarios, on SQLite (embedded) and on PostgreSQL + Redis (channel layer and
throttle cache), with the work of each start recorded but not run (BENCH_TASKS),
so what is measured is the request path:
* one roadmap of 500 concepts (every request on one roadmap row: the worst case),
  and 50 users with a roadmap each;
* paced at 75 requests/s over 50 connections, and saturated at 10 and 50.

Writes bench/results/retry_load.json; `python -m bench` then writes
docs/performance.md. bench/retry_load_stock.py measures Django's stock request
handling in the same run, the baseline of the ratios.
"""

import json
import os
import platform
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

from bench.worker_scaling import bench_database_url
from roadmap_project.distributed import (
    DEFAULT_REDIS_URL,
    SetupError,
    ensure_database,
    ensure_redis,
)
from tests.support.daphne_server import daphne_server
from tests.support.processes import ROOT

SECONDS = int(os.environ.get("BENCH_SECONDS", "6"))  # keeps the module under 2 minutes
PACED_RATE = 75
PAUSE_SECONDS = 1.0
RESULTS_DIR = ROOT / "bench" / "results"
LUA = ROOT / "bench" / "retry.lua"

RUNS = ("paced_75_c50", "saturated_c10", "saturated_c50")
SEED = (
    f"RUNS = {RUNS!r}\n"
    + """
import json
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
from roadmaps.services import create_roadmap

def framework(n):
    concepts = [{"concept_id": f"c{i:03d}", "name": f"Concept {i}"} for i in range(1, n + 1)]
    return {"stages": [{"name": "S", "modules": [{"name": "M", "concepts": concepts}]}]}

# Fresh pairs for every run, so each request is a real start, never a 409.
targets = {}
for scenario, users, concepts in (("one_roadmap", 1, 500), ("fifty_users", 50, 30)):
    for run in RUNS:
        targets[f"{scenario}/{run}"] = []
        for u in range(users):
            user = get_user_model().objects.create_user(username=f"{scenario}-{run}-{u}")
            token = Token.objects.create(user=user).key
            framework_ = framework(concepts)
            roadmap = create_roadmap(owner=user, title="Bench", framework=framework_).roadmap
            targets[f"{scenario}/{run}"].append(f"{token} {roadmap.pk} {concepts}")
print("TARGETS=" + json.dumps(targets))
"""
)


def wrk(url: str, *, connections: int, seconds: int, script: Path | None = None, **env) -> dict:
    """One wrk run: requests/s, latency percentiles (ms), errors."""
    threads = min(2, connections)
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency"]
    if script:
        command += ["-s", str(script)]
    result = subprocess.run(
        [*command, url],
        capture_output=True,
        text=True,
        env={**os.environ, "RETRY_THREADS": str(threads), **{k: str(v) for k, v in env.items()}},
        check=True,
    )
    out = result.stdout

    def latency(percentile: str) -> float:
        value, unit = re.search(rf"^\s+{percentile}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M).groups()
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {
        "requests_per_second": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50_ms": latency("50"),
        "p99_ms": latency("99"),
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": errors.group(1) if errors else "",
    }


def seed(env: dict) -> dict[str, list[str]]:
    subprocess.run(
        [os.sys.executable, "manage.py", "migrate", "--no-input", "-v", "0"],
        cwd=ROOT, env=env, check=True,
    )  # fmt: skip
    out = subprocess.run(
        [os.sys.executable, "manage.py", "shell", "-c", SEED],
        cwd=ROOT, env=env, check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return json.loads(out.split("TARGETS=", 1)[1])


def measure(label: str, env: dict, scratch: Path, scenarios: dict[str, tuple[str, ...]]) -> dict:
    """Seed, start one daphne with `env`, run the trivial view and every scenario."""
    targets = seed(env)
    results: dict = {}
    with daphne_server(scratch, **env) as server:
        base = server.http_url
        with httpx.Client() as client:  # warm up imports and connections
            client.get(f"{base}/bench/trivial")
        results["trivial"] = wrk(f"{base}/bench/trivial", connections=10, seconds=5)
        for scenario, runs in scenarios.items():
            results[scenario] = {}
            for run in runs:
                time.sleep(PAUSE_SECONDS)
                connections = 10 if run.endswith("c10") else 50
                pacing = int(connections / PACED_RATE * 1000) if run.startswith("paced") else 0
                results[scenario][run] = wrk(
                    base,
                    connections=connections,
                    seconds=SECONDS,
                    script=LUA,
                    RETRY_TARGETS=";".join(targets[f"{scenario}/{run}"]),
                    RETRY_DELAY_MS=pacing,
                )
    trivial = results["trivial"]["requests_per_second"]
    print(f"  {label}: trivial view {trivial:.0f} req/s")
    for scenario, runs in scenarios.items():
        for name in runs:
            run = results[scenario][name]
            run["ratio_to_trivial"] = round(run["requests_per_second"] / trivial, 2)
            print(
                f"    {scenario:12} {name:14} {run['requests_per_second']:7.1f} req/s "
                f"({run['ratio_to_trivial']:.2f}x trivial)  "
                f"p50 {run['p50_ms']:7.1f} ms  p99 {run['p99_ms']:7.1f} ms  "
                f"non-2xx {run['non_2xx']}  {run['socket_errors']}"
            )
    return results


BASE_ENV = {
    "DJANGO_SETTINGS_MODULE": "bench.settings",
    # Production-like: no DEBUG query log.
    "DEBUG": "0",
    "SECRET_KEY": "bench-only-secret-key-0123456789abcdefghijklmnopqrstuvwxyz",
    "ALLOWED_HOSTS": "127.0.0.1,localhost",
    # wrk speaks plain HTTP to 127.0.0.1: no TLS proxy, so no HTTPS redirect.
    "INSECURE_HTTP": "1",
    "RETRY_THROTTLE_RATE": "1000000/minute",
    # The request path alone: starts are recorded, the work is not run here (in
    # production it runs in Celery workers; one process cannot do both at this rate).
    "BENCH_TASKS": "dummy",
    "LOG_LEVEL": "WARNING",
}


def run(report_name: str, configurations: dict[str, dict], scenarios: dict) -> None:
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (apt-get install wrk; `make bench` does it).")
    redis_url = os.environ.get("REDIS_URL") or DEFAULT_REDIS_URL
    database_url = bench_database_url()
    report = {"machine": f"{platform.node()}, {os.cpu_count()} cores", "seconds": SECONDS}
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        for label, overrides in configurations.items():
            env = {**BASE_ENV, **overrides}
            if overrides.get("DATABASE_URL") == "postgres":
                try:
                    ensure_redis(redis_url)
                    ensure_database(database_url, fresh=True)
                except SetupError as error:
                    raise SystemExit(f"{label} not run: {error}") from error
                env |= {"DATABASE_URL": database_url, "REDIS_URL": redis_url}
            else:
                folder = scratch / label
                folder.mkdir()
                env |= {
                    "VAR_DIR": str(folder),
                    "DATABASE_URL": f"sqlite:///{folder / 'db.sqlite3'}",
                    "REDIS_URL": "",
                }
            report[label] = {"env": overrides, **measure(label, env, scratch, scenarios)}
    path = RESULTS_DIR / f"{report_name}.json"
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"  wrote {path.relative_to(ROOT)}")


def main() -> None:
    run(
        "retry_load",
        {"sqlite": {}, "postgres_redis": {"DATABASE_URL": "postgres"}},
        {"one_roadmap": RUNS, "fifty_users": RUNS},
    )
