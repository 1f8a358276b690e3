"""One event to many real WebSocket clients: commit -> client latency.

One daphne; N `websockets` clients in two other processes subscribe to one roadmap's
stream, or to one task's stream, before the event; a retry posted over HTTP runs
in the server (offline provider) and its `concept_complete` is timed from the
event's own timestamp (set in the transaction that stores it) to its arrival at
each client. SQLite + in-memory layer (one daphne), and PostgreSQL + Redis with
the clients spread over two daphnes (the event crosses Redis to reach the
second). Goal: p99 <= 20 ms at 1,000 subscribers in-memory, <= 50 ms
through Redis across two daphnes."""

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import httpx

from bench.in_flight import configurations, prepare
from tests.support.daphne_server import daphne_server
from tests.support.processes import ROOT

RESULTS = ROOT / "bench" / "results" / "event_fanout.json"
SUBSCRIBERS = (100, 1000)
CLIENT_PROCESSES = 2
DELAY_SECONDS = 15.0  # the generation's length: every client subscribes before its end

SEED = """
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
from roadmaps.services import create_roadmap
user = get_user_model().objects.create_user(username="fanout")
framework = {"stages": [{"name": "S", "modules": [{"name": "M", "concepts": [
    {"concept_id": f"c{i}", "name": f"Concept {i}"} for i in range(1, 11)]}]}]}
roadmap = create_roadmap(owner=user, title="Fan-out", framework=framework).roadmap
print("FANOUT=" + Token.objects.create(user=user).key + " " + str(roadmap.pk))
"""

# Subscribe `count` sockets, say READY, then time the first concept_complete; print
# the latencies. The clients are split over CLIENT_PROCESSES processes: one
# process reading 1,000 sockets in turn would time its own queue.
CLIENT = """
import asyncio, json, sys, time
from datetime import datetime
import websockets

urls, count = sys.argv[1].split(","), int(sys.argv[2])
latencies, ready = [], 0

async def client(url, all_ready):
    global ready
    async with websockets.connect(url, open_timeout=60, max_size=None) as socket:
        connected_at = time.time()
        ready += 1
        if ready == count:
            all_ready.set()
        while True:
            event = json.loads(await asyncio.wait_for(socket.recv(), 120))
            if event.get("type") == "concept_complete":
                sent = datetime.fromisoformat(event["timestamp"]).timestamp()
                if sent < connected_at:
                    continue  # replayed from before this client: not the timed event
                latencies.append((time.time() - sent) * 1000)
                return

async def main():
    all_ready = asyncio.Event()
    clients = [asyncio.create_task(client(urls[i % len(urls)], all_ready)) for i in range(count)]
    await asyncio.wait_for(all_ready.wait(), 120)
    print("READY", flush=True)
    await asyncio.gather(*clients)
    print(json.dumps(latencies), flush=True)

asyncio.run(main())
"""


def one_event(
    servers: list, token: str, roadmap_id: str, concept: str, stream: str, count: int
) -> dict:
    """The retry goes to the first server; the clients alternate between all."""
    with httpx.Client(base_url=f"{servers[0].http_url}/api/v1", timeout=30) as api:
        api.headers["Authorization"] = f"Token {token}"
        retry = f"/roadmaps/{roadmap_id}/concepts/{concept}/tutorial/retry"
        if stream == "roadmap":
            path = f"/api/v1/ws/roadmaps/{roadmap_id}"
        else:
            task_id = api.post(retry).raise_for_status().json()["data"]["task_id"]
            path = f"/api/v1/ws/{task_id}"
        urls = ",".join(f"{server.ws_url}{path}?token={token}" for server in servers)
        processes = [
            subprocess.Popen(
                [sys.executable, "-c", CLIENT, urls, str(count // CLIENT_PROCESSES)],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(CLIENT_PROCESSES)
        ]
        started = time.monotonic()
        for process in processes:
            if process.stdout.readline().strip() != "READY":
                raise SystemExit("the clients did not subscribe")
        if stream == "task" and time.monotonic() - started > DELAY_SECONDS:
            raise SystemExit("subscribing took longer than the generation: raise DELAY_SECONDS")
        if stream == "roadmap":
            api.post(retry).raise_for_status()
        latencies = sorted(
            latency for process in processes for latency in json.loads(process.stdout.readline())
        )
        for process in processes:
            process.wait(60)

    def quantile(q: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))], 1)

    return {
        "p50_ms": quantile(0.5),
        "p99_ms": quantile(0.99),
        "max_ms": round(latencies[-1], 1),
        "received": len(latencies),
    }


def main() -> None:
    report = {"machine": f"{platform.node()}, {os.cpu_count()} cores"}
    with tempfile.TemporaryDirectory() as scratch:
        for label, env in configurations(Path(scratch)).items():
            token, roadmap_id = prepare(env, SEED).split("FANOUT=", 1)[1].split()
            daphnes = 2 if env["REDIS_URL"] else 1  # the in-memory layer does not cross processes
            report[label] = {}
            with ExitStack() as stack:
                delay = {"OFFLINE_PROVIDER_DELAY_SECONDS": str(DELAY_SECONDS)}
                servers = [
                    stack.enter_context(daphne_server(Path(scratch), **env, **delay))
                    for _ in range(daphnes)
                ]
                concepts = iter(f"c{i}" for i in range(1, 11))
                for stream in ("task", "roadmap"):
                    for count in SUBSCRIBERS:
                        result = one_event(
                            servers, token, roadmap_id, next(concepts), stream, count
                        )
                        result["daphnes"] = daphnes
                        report[label][f"{stream} N={count}"] = result
                        print(
                            f"  {label} ({daphnes}) {stream:8} N={count:<5}"
                            f"  p50 {result['p50_ms']:7.1f} ms  p99 {result['p99_ms']:7.1f} ms"
                            f"  max {result['max_ms']:7.1f} ms"
                            f"  ({result['received']} received)",
                            flush=True,
                        )
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
