"""What idle WebSocket connections cost a server: store statements per second and
memory per connection.

One daphne (bench settings: a statement counter at /bench/statements); 1,000
`websockets` clients in another process subscribe to ten roadmap streams and
then sit idle. The daphne's resident memory is read from /proc before and after
they connect, and its SQL statements are counted over an idle window.
Goal: at most 1 store query per second per process for 1,000 idle sockets."""

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.in_flight import configurations, prepare
from tests.support.daphne_server import daphne_server
from tests.support.processes import ROOT

RESULTS = ROOT / "bench" / "results" / "idle_sockets.json"
SOCKETS = 1000
IDLE_SECONDS = 20.0

SEED = """
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
from roadmaps.services import create_roadmap
user = get_user_model().objects.create_user(username="idle")
framework = {"stages": [{"name": "S", "modules": [{"name": "M", "concepts": [
    {"concept_id": "c1", "name": "Concept 1"}]}]}]}
roadmaps = [create_roadmap(owner=user, title=f"Idle {i}", framework=framework).roadmap
            for i in range(10)]
print("IDLE=" + Token.objects.create(user=user).key + " " + ",".join(str(r.pk) for r in roadmaps))
"""

# Open every socket (spread over the roadmaps, 50 at a time: this measures idle
# cost, not a storm), say READY, hold them until stdin closes.
CLIENT = """
import asyncio, sys
import websockets

urls, count = sys.argv[1].split(","), int(sys.argv[2])

async def main():
    sockets = []
    for start in range(0, count, 50):
        sockets += await asyncio.gather(*(
            websockets.connect(urls[i % len(urls)], open_timeout=60, ping_interval=None)
            for i in range(start, min(count, start + 50))))
    print("READY", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await asyncio.gather(*(socket.close() for socket in sockets))

asyncio.run(main())
"""


def resident_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def measure(server, token: str, roadmap_ids: list[str]) -> dict:
    statements = f"{server.http_url}/bench/statements"
    urls = [f"{server.ws_url}/api/v1/ws/roadmaps/{pk}?token={token}" for pk in roadmap_ids]
    time.sleep(1)  # the server settles after its health check
    before_kib = resident_kib(server.process.pid)
    clients = subprocess.Popen(
        [sys.executable, "-c", CLIENT, ",".join(urls), str(SOCKETS)],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        if clients.stdout.readline().strip() != "READY":
            raise SystemExit("the clients did not connect")
        time.sleep(2)  # the last replays finish
        after_kib = resident_kib(server.process.pid)
        first = httpx.get(statements).json()["statements"]
        time.sleep(IDLE_SECONDS)
        last = httpx.get(statements).json()["statements"]
    finally:
        clients.stdin.close()
        clients.wait(60)
    return {
        "sockets": SOCKETS,
        "statements_per_second": round((last - first) / IDLE_SECONDS, 2),
        "rss_before_mib": round(before_kib / 1024, 1),
        "rss_after_mib": round(after_kib / 1024, 1),
        "kib_per_socket": round((after_kib - before_kib) / SOCKETS, 1),
    }


def main() -> None:
    report = {"machine": f"{platform.node()}, {os.cpu_count()} cores"}
    with tempfile.TemporaryDirectory() as scratch:
        for label, env in configurations(Path(scratch)).items():
            env = {**env, "DJANGO_SETTINGS_MODULE": "bench.settings"}
            token, ids = prepare(env, SEED).split("IDLE=", 1)[1].split()
            with daphne_server(Path(scratch), **env) as server:
                result = report[label] = measure(server, token, ids.split(","))
            print(
                f"  {label:15} {result['sockets']} idle sockets: "
                f"{result['statements_per_second']} statements/s (goal <= 1), "
                f"{result['kib_per_socket']} KiB each "
                f"(RSS {result['rss_before_mib']} -> {result['rss_after_mib']} MiB)",
                flush=True,
            )
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
