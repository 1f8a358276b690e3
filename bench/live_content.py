"""Live content: what watching a generation as it is written costs the server,
and how long a chunk of text takes from the model to the watcher.

The in_flight scenario with a watcher: one daphne (in-process engine,
GENERATION_CONCURRENCY = the batch size) generates a batch of tutorials (one
retry-batch request) against the fake OpenAI server (tests/support/fake_openai.py,
its own process), which streams each answer of ANSWER_CHARS characters over
STREAM_SECONDS in chunks that carry their send time (fake_openai.stamped_tutorial).
One `websockets` client in another process, subscribed to the roadmap's stream
before the start, gets every pair's content_snapshot and content_delta events,
applies them as docs/events.md says, and times each chunk from the fake's send
time to its own receipt of the frame that brings it (`time.time()` on both
sides, same machine).

Runs, each on a fresh daphne, in one configuration: GENERATIONS with no socket
(the baseline: the same work, live content written to the store and published,
nobody subscribed), the same watched, then 1 and 100 watched (latency by
concurrent streams). Measured: makespan (the start to the task's end, read from
the database by this process), the server's CPU per generation and its busiest
second, chunk-to-client latency (overall, each second's p99, and the steady part
between the burst in which the streams start and the one in which they end), and
the bytes of the content_snapshot and content_delta frames per generation against
the stored content. SQLite (embedded) and PostgreSQL + Redis (channel layer and
live store in Redis).
Goals at 500: CPU per generation at most 1.5 times and makespan within 10 % of the
baseline; chunk p99 ≤ 150 ms (a delta may wait 100 ms by design)."""

import json
import logging
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import httpx

from bench.in_flight import (
    fake_provider,
    measure_each,
    prepare,
    process_seconds,
    task_row,
)
from tests.support.daphne_server import daphne_server
from tests.support.processes import ROOT

RESULTS = ROOT / "bench" / "results" / "live_content.json"
GENERATIONS = int(os.environ.get("BENCH_LIVE", "500"))
STREAM_SECONDS = 10.0
ANSWER_CHARS = 2000
TIMEOUT_SECONDS = 150.0
# (name, generations, watched), in the order they run, each on its own roadmap.
RUNS = (
    ("unwatched", GENERATIONS, False),
    ("watched", GENERATIONS, True),
    ("watched N=1", 1, True),
    ("watched N=100", min(100, GENERATIONS), True),
)

SEED = f"""
import json
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
from roadmaps.services import create_roadmap
user = get_user_model().objects.create_user(username="live")

def framework(n):
    concepts = [{{"concept_id": f"c{{i:03d}}", "name": f"Concept {{i}}"}} for i in range(n)]
    return {{"stages": [{{"name": "S", "modules": [{{"name": "M", "concepts": concepts}}]}}]}}

roadmaps = [
    str(create_roadmap(owner=user, title="Live", framework=framework(n)).roadmap.pk)
    for n in {[count for _, count, _ in RUNS]!r}
]
print("LIVE=" + json.dumps({{"token": Token.objects.create(user=user).key, "roadmaps": roadmaps}}))
"""

# One socket on a roadmap's stream: says READY once subscribed, then follows every
# pair's live text until task_complete, and prints what it measured as JSON.
CLIENT = r"""
import asyncio, json, re, sys, time
import websockets

STAMP = re.compile(r"(\d{10}\.\d{6}) sent")

def frame_bytes(payload):
    size = len(payload.encode())
    return size + (2 if size < 126 else 4 if size < 65536 else 10)  # server frames: unmasked

async def main(url):
    latencies, received_at, held, timed = [], [], {}, {}
    result = {"frames": 0, "wire_bytes": 0, "snapshots": 0, "gaps": 0, "ended": {}}
    async with websockets.connect(url, open_timeout=60, max_size=None) as socket:
        result["compressed"] = bool(socket.protocol.extensions)
        print("READY", flush=True)
        while True:
            raw = await asyncio.wait_for(socket.recv(), 120)
            received = time.time()
            event = json.loads(raw)
            kind, pair = event["type"], event.get("concept_id")
            if kind == "task_complete":
                break
            if kind == "concept_complete":  # how much of its text came before it
                result["ended"][pair] = len(held.get(pair, ""))
            if kind not in ("content_snapshot", "content_delta"):
                continue
            result["frames"] += 1
            result["wire_bytes"] += frame_bytes(raw)
            text = held.get(pair, "")
            if kind == "content_snapshot":
                result["snapshots"] += 1
                if not event["text"].startswith(text):
                    timed[pair] = 0  # another answer: every stamp in it is new
                text = event["text"]
            elif event["offset"] == len(text):
                text += event["text"]
            else:
                result["gaps"] += 1
                continue
            held[pair] = text
            # Each stamp is timed once, by the first frame that brings it (chunks,
            # hence stamps, are never split between two frames).
            for stamp in STAMP.findall(text, timed.get(pair, 0)):
                latencies.append((received - float(stamp)) * 1000)
                received_at.append(round(received, 3))
            timed[pair] = len(text)
    result["held"] = {pair: len(text) for pair, text in held.items()}
    result["cpu_s"] = time.process_time()
    print(json.dumps({"latencies": latencies, "received_at": received_at, **result}), flush=True)

asyncio.run(main(sys.argv[1]))
"""


def quantile(values: list[float], q: float) -> float:
    return round(values[min(len(values) - 1, int(q * len(values)))], 1) if values else 0.0


def by_second(latencies: list[float], received_at: list[float]) -> dict:
    """Where the p99 comes from: the p99 of each second of the run (from the first
    chunk received), and of the steady part, a second in from either end, apart
    from the bursts in which all the streams start and all of them end."""
    if not latencies:
        return {"p99_ms_by_second": [], "steady_p99_ms": 0.0}
    first, last = min(received_at), max(received_at)
    seconds: dict[int, list[float]] = {}
    steady = []
    for latency, received in zip(latencies, received_at, strict=True):
        seconds.setdefault(int(received - first), []).append(latency)
        if first + 1 <= received <= last - 1:
            steady.append(latency)
    return {
        "p99_ms_by_second": [
            quantile(sorted(seconds.get(second, [])), 0.99) for second in range(max(seconds) + 1)
        ],
        "steady_p99_ms": quantile(sorted(steady), 0.99),
    }


def one_run(
    server, env: dict, token: str, roadmap_id: str, count: int, watched: bool, provider_pid: int
) -> dict:
    """Generate the roadmap's `count` tutorials in one batch, watched by one socket
    or by none. Besides the server's CPU, the fake provider's (`provider_pid`) and
    the client's: what the whole run asks of the machine."""
    client = None
    if watched:
        url = f"{server.ws_url}/api/v1/ws/roadmaps/{roadmap_id}?token={token}"
        client = subprocess.Popen(
            [sys.executable, "-c", CLIENT, url], cwd=ROOT, stdout=subprocess.PIPE, text=True
        )
        if client.stdout.readline().strip() != "READY":
            raise SystemExit("the watching client did not subscribe")
    try:
        with httpx.Client(base_url=f"{server.http_url}/api/v1", timeout=60) as api:
            api.headers["Authorization"] = f"Token {token}"
            pid = server.process.pid
            cpu_before = process_seconds(pid)
            provider_before = process_seconds(provider_pid)
            started = time.perf_counter()
            response = api.post(
                f"/roadmaps/{roadmap_id}/concepts/retry-batch",
                json={"content_types": ["tutorial"], "statuses": ["pending"]},
            )
            task_id = response.raise_for_status().json()["data"]["task_id"]
            samples = [(started, cpu_before)]  # (time, server CPU seconds)
            while (task := task_row(env["DATABASE_URL"], task_id))[0] == "running":
                if time.perf_counter() - started > TIMEOUT_SECONDS:
                    raise SystemExit(f"the batch did not finish in {TIMEOUT_SECONDS} s")
                time.sleep(0.1)
                samples.append((time.perf_counter(), process_seconds(pid)))
            makespan = time.perf_counter() - started
            cpu = process_seconds(pid) - cpu_before
            provider_cpu = process_seconds(provider_pid) - provider_before
        # The busiest second: how close the server came to a whole core.
        busiest = max(
            (
                (cpu_b - cpu_a) / (t_b - t_a)
                for (t_a, cpu_a), (t_b, cpu_b) in zip(samples, samples[10:], strict=False)
            ),
            default=cpu / makespan,
        )
        result = {
            "generations": count,
            "makespan_s": round(makespan, 2),
            "completed": task[1],
            "failed": task[2],
            "cpu_ms_per_generation": round(cpu * 1000 / count, 1),
            "server_cores_busiest_second": round(busiest, 2),
            "provider_cpu_s": round(provider_cpu, 2),
            "load_average_1min": round(os.getloadavg()[0], 1),
        }
        if client is None:
            return result
        report = json.loads(client.stdout.readline() or "{}")
        client.wait(30)
    finally:
        if client is not None and client.poll() is None:
            client.kill()
            client.wait(10)
    phases = by_second(report.get("latencies", []), report.get("received_at", []))
    latencies = sorted(report.get("latencies", []))
    held = report.get("held", {})
    return result | {
        "p50_ms": quantile(latencies, 0.5),
        "p99_ms": quantile(latencies, 0.99),
        "max_ms": round(latencies[-1], 1) if latencies else 0.0,
        **phases,
        "chunks_timed": len(latencies),
        "frames_per_generation": round(report.get("frames", 0) / count, 1),
        "live_bytes_per_generation": round(report.get("wire_bytes", 0) / count),
        "stored_bytes": ANSWER_CHARS,  # ASCII: one byte a character
        "live_bytes_ratio": round(report.get("wire_bytes", 0) / count / ANSWER_CHARS, 2),
        "gaps": report.get("gaps", 0),
        # Pairs whose text, at the end, is the stored content (as long as it).
        "held_as_stored": sum(size == ANSWER_CHARS for size in held.values()),
        # Pairs whose concept_complete came before the last of their text (the
        # contract has it after).
        "completed_before_text": sum(
            size != ANSWER_CHARS for size in report.get("ended", {}).values()
        ),
        "compressed": report.get("compressed", False),
        "client_cpu_s": round(report.get("cpu_s", 0.0), 2),
    }


def measure(env: dict, scratch: Path) -> dict:
    seeded = json.loads(prepare(env, SEED).split("LIVE=", 1)[1])
    token = seeded["token"]
    provider, base_url = fake_provider(STREAM_SECONDS, stamped_chars=ANSWER_CHARS)
    results: dict = {}
    try:
        for (name, count, watched), roadmap_id in zip(RUNS, seeded["roadmaps"], strict=True):
            with daphne_server(
                scratch,
                **env,
                GENERATION_PROVIDER="openai",
                OPENAI_API_KEY="sk-bench",
                OPENAI_BASE_URL=base_url,
                GENERATION_CONCURRENCY=str(count),
                BATCH_MAX_PAIRS=str(count),
            ) as server:
                results[name] = run = one_run(
                    server, env, token, roadmap_id, count, watched, provider.pid
                )
            print(f"    {name:14} {describe_run(run)}", flush=True)
    finally:
        provider.terminate()
        provider.wait(10)
    unwatched, watched_run = results["unwatched"], results["watched"]
    results["cpu_ratio"] = round(
        watched_run["cpu_ms_per_generation"] / unwatched["cpu_ms_per_generation"], 2
    )
    results["makespan_ratio"] = round(watched_run["makespan_s"] / unwatched["makespan_s"], 2)
    return results


def describe_run(run: dict) -> str:
    line = (
        f"makespan {run['makespan_s']:6.2f} s, {run['completed']} completed, "
        f"{run['failed']} failed, {run['cpu_ms_per_generation']} ms CPU/generation "
        f"(busiest second {run['server_cores_busiest_second']} cores), "
        f"fake provider {run['provider_cpu_s']} s CPU, load {run['load_average_1min']}"
    )
    if "p50_ms" in run:
        line += (
            f"; chunk p50 {run['p50_ms']} ms, p99 {run['p99_ms']} ms (steady "
            f"{run['steady_p99_ms']} ms; by second {run['p99_ms_by_second']}), "
            f"max {run['max_ms']} ms "
            f"({run['chunks_timed']} chunks); {run['live_bytes_per_generation']} B of live "
            f"frames per generation ({run['live_bytes_ratio']}x stored, "
            f"{run['frames_per_generation']} frames); gaps {run['gaps']}; "
            f"held as stored {run['held_as_stored']}/{run['generations']}, "
            f"completed before their text {run['completed_before_text']}; "
            f"client {run['client_cpu_s']} s CPU"
        )
    return line


def main() -> None:
    logging.getLogger("httpx").setLevel(logging.WARNING)
    report = {
        "machine": f"{platform.node()}, {os.cpu_count()} cores",
        "generations": GENERATIONS,
        "stream_seconds": STREAM_SECONDS,
        "answer_chars": ANSWER_CHARS,
    }
    print(
        f"{GENERATIONS} tutorials of {ANSWER_CHARS} characters, each streamed over "
        f"{STREAM_SECONDS} s, unwatched and watched by one socket"
    )
    measure_each(
        report,
        RESULTS,
        measure,
        lambda results: (
            f"watched / unwatched: CPU {results['cpu_ratio']}x, "
            f"makespan {results['makespan_ratio']}x"
        ),
    )
