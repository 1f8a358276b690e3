"""Many clients going away at once: the end of a `wrk` run against the health view.

When wrk stops, it drops all its connections together, many of them mid-request.
A client going away is not a server error: the server's log must show no ERROR
and no traceback. One daphne (embedded: SQLite, in-memory layer), three runs of
`wrk -t2 -c50 -d5s` against `/api/v1/health`; the log's ERROR lines and
tracebacks are counted after each run.

Writes bench/results/disconnect_storm.json."""

import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx

from bench.retry_load import RESULTS_DIR, wrk
from tests.support.daphne_server import daphne_server

RUNS = 3
CONNECTIONS = 50
SECONDS = 5


def problems(log: str) -> dict[str, int]:
    return {"error_lines": log.count(" ERROR "), "tracebacks": log.count("Traceback")}


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        scratch_dir = Path(scratch)
        env = {
            "DATABASE_URL": f"sqlite:///{scratch_dir / 'db.sqlite3'}",
            "MEDIA_ROOT": str(scratch_dir / "media"),
            "DEBUG": "0",
            "SECRET_KEY": "bench-" + "x" * 50,
            "INSECURE_HTTP": "1",
            "LOG_LEVEL": "INFO",
        }
        os.environ.pop("REDIS_URL", None)
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--no-input", "-v", "0"],
            env={**os.environ, **env},
            check=True,
        )
        runs = []
        with daphne_server(scratch_dir, **env) as server:
            url = f"{server.http_url}/api/v1/health"
            httpx.get(url)
            for _ in range(RUNS):
                before = problems(server.log.read_text(errors="replace"))
                result = wrk(url, connections=CONNECTIONS, seconds=SECONDS)
                after = problems(server.log.read_text(errors="replace"))
                runs.append(
                    {
                        "requests_per_second": result["requests_per_second"],
                        **{key: after[key] - before[key] for key in after},
                    }
                )
                print(f"disconnect storm: {runs[-1]}", flush=True)
    results = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "wrk": f"-t2 -c{CONNECTIONS} -d{SECONDS}s /api/v1/health",
        "runs": runs,
    }
    RESULTS_DIR.mkdir(exist_ok=True)
    (RESULTS_DIR / "disconnect_storm.json").write_text(json.dumps(results, indent=2) + "\n")
