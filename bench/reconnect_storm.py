"""A reconnect storm: 1,000 WebSocket clients connect at once to one roadmap's
stream, as they do after a deploy or a restart. Are they all accepted and
replayed within 10 s, and do they all leave cleanly?

One daphne (SQLite + in-memory layer; PostgreSQL + Redis layer); the clients are
real `websockets` connections from another process, each resuming with
`after=0` and reading the roadmap's stored events. Then they all close at once,
and the server's log is searched for consumers killed for a slow shutdown."""

import json
import logging
import os
import platform
import subprocess
import sys
from pathlib import Path

from bench.in_flight import measure_each, prepare
from tests.support.daphne_server import daphne_server
from tests.support.processes import ROOT

RESULTS = ROOT / "bench" / "results" / "reconnect_storm.json"
CLIENTS = int(os.environ.get("BENCH_STORM_CLIENTS", "1000"))
GOAL_SECONDS = 10.0

SEED = """
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
from generation import services
from roadmaps.services import create_roadmap
from roadmaps.models import ConceptContent
user = get_user_model().objects.create_user(username="storm")
framework = {"stages": [{"name": "S", "modules": [{"name": "M", "concepts": [
    {"concept_id": f"c{i}", "name": f"Concept {i}"} for i in range(1, 4)]}]}]}
roadmap = create_roadmap(owner=user, title="Storm", framework=framework).roadmap
for content in ConceptContent.objects.filter(roadmap=roadmap).select_related("concept", "roadmap"):
    services.reset_status(content=content, status="failed")
print("STORM=" + Token.objects.create(user=user).key + " " + str(roadmap.pk))
"""

# The clients, in their own process: connect all at once, read the replay, wait
# until every client is done, then close all at once.
CLIENT = """
import asyncio, json, sys, time
import websockets

url, count, expected = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
done, failures, all_done = [], [], asyncio.Event()

async def client():
    started = time.perf_counter()
    try:
        async with websockets.connect(url, open_timeout=60, close_timeout=10) as socket:
            for _ in range(expected):
                json.loads(await asyncio.wait_for(socket.recv(), 60))
            done.append(time.perf_counter() - started)
            if len(done) + len(failures) == count:
                all_done.set()
            await all_done.wait()
    except Exception as error:
        failures.append(type(error).__name__)
        if len(done) + len(failures) == count:
            all_done.set()

async def main():
    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(count)))
    done.sort()
    print(json.dumps({
        "replayed": len(done),
        "failed": len(failures),
        "failures": sorted(set(failures)),
        "all_replayed_s": round(done[-1], 2) if done else None,
        "p50_s": round(done[len(done) // 2], 2) if done else None,
        "wall_s": round(time.perf_counter() - started, 2),
    }))

asyncio.run(main())
"""


def measure(env: dict, scratch: Path) -> dict:
    token, roadmap_id = prepare(env, SEED).split("STORM=", 1)[1].split()
    expected = 9  # the seed's status changes: 3 concepts x 3 content types
    with daphne_server(scratch, **env) as server:
        url = f"{server.ws_url}/api/v1/ws/roadmaps/{roadmap_id}?token={token}&after=0"
        clients = subprocess.run(
            [sys.executable, "-c", CLIENT, url, str(CLIENTS), str(expected)],
            cwd=ROOT, capture_output=True, text=True, timeout=180,
        )  # fmt: skip
        if clients.returncode:
            raise SystemExit(f"the storm's clients failed: {clients.stderr[-2000:]}")
        log = server.log.read_text(errors="replace")
    result = json.loads(clients.stdout.strip().splitlines()[-1])
    result["killed_slow_shutdown"] = log.count("took too long to shut down")
    return result


def main() -> None:
    logging.getLogger("httpx").setLevel(logging.WARNING)
    report = {"machine": f"{platform.node()}, {os.cpu_count()} cores", "clients": CLIENTS}
    print(f"{CLIENTS} WebSocket clients connecting at once to one roadmap stream")
    measure_each(
        report,
        RESULTS,
        measure,
        lambda result: (
            f"{result['replayed']} replayed ({result['failed']} failed "
            f"{result['failures']}), all within {result['all_replayed_s']} s "
            f"(p50 {result['p50_s']} s; goal {GOAL_SECONDS} s), "
            f"{result['killed_slow_shutdown']} consumers killed at shutdown"
        ),
    )
