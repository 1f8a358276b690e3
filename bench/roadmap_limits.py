"""A roadmap at the size limits, and a body far over them (DESIGN §4).

One daphne (`DEBUG=0`); a client in this process creates a roadmap of
ROADMAP_MAX_STAGES stages, ROADMAP_MAX_MODULES modules and ROADMAP_MAX_CONCEPTS
concepts through `POST /roadmaps/`, then reads it with `GET /roadmaps/{id}/`, a few
times; and sends a 1 MB framework of 80,000 stages, which must be refused before
its stages are validated (it was created, in ~100 s, before the limits). Goal:
create and read in well under a second. SQLite (embedded) and PostgreSQL + Redis.
Writes bench/results/roadmap_limits.json."""

import json
import logging
import os
import platform
import statistics
import time
from pathlib import Path

import httpx
from django.conf import settings

from bench.in_flight import measure_each, prepare
from tests.support.daphne_server import daphne_server
from tests.support.processes import ROOT
from tests.support.roadmaps import framework_of

RESULTS = ROOT / "bench" / "results" / "roadmap_limits.json"
SAMPLES = 5
OVERSIZED_STAGES = 80_000
USERNAME, PASSWORD = "bench-limits", "bench-password-not-secret"

SEED = f"""
from django.contrib.auth import get_user_model
get_user_model().objects.create_user(username={USERNAME!r}, password={PASSWORD!r})
"""


def oversized_body() -> bytes:
    """About 1 MB (the body limit): one real stage, then bare ones."""
    stages = [{"name": "s"} for _ in range(OVERSIZED_STAGES - 1)]
    stages.insert(0, framework_of(stages=1, modules=1, concepts=1)["stages"][0])
    body = {"title": "Oversized", "framework": {"stages": stages}}
    return json.dumps(body, separators=(",", ":")).encode()


def timed(send, *args, **kwargs) -> tuple[httpx.Response, float]:
    """The response and its time in milliseconds."""
    started = time.perf_counter()
    response = send(*args, **kwargs)
    return response, (time.perf_counter() - started) * 1000


def measure(env: dict, scratch: Path) -> dict:
    prepare(env, SEED)
    body = {
        "title": "At the limits",
        "framework": framework_of(
            stages=settings.ROADMAP_MAX_STAGES,
            modules=settings.ROADMAP_MAX_MODULES,
            concepts=settings.ROADMAP_MAX_CONCEPTS,
        ),
    }
    oversized = oversized_body()
    create_ms, read_ms, refuse_ms = [], [], []
    with (
        daphne_server(scratch, **env) as server,
        httpx.Client(base_url=f"{server.http_url}/api/v1", timeout=120) as client,
    ):
        token = client.post("/auth/token", json={"username": USERNAME, "password": PASSWORD})
        client.headers["Authorization"] = f"Token {token.raise_for_status().json()['token']}"
        for _ in range(SAMPLES):
            created, elapsed = timed(client.post, "/roadmaps/", json=body)
            create_ms.append(elapsed)
            roadmap_id = created.raise_for_status().json()["roadmap_id"]
            detail, elapsed = timed(client.get, f"/roadmaps/{roadmap_id}/")
            read_ms.append(elapsed)
            detail.raise_for_status()
            refused, elapsed = timed(
                client.post,
                "/roadmaps/",
                content=oversized,
                headers={"Content-Type": "application/json"},
            )
            refuse_ms.append(elapsed)
            if refused.status_code != 400:
                raise SystemExit(f"the oversized body answered {refused.status_code}")
    return {
        "create_median_ms": round(statistics.median(create_ms)),
        "create_max_ms": round(max(create_ms)),
        "read_median_ms": round(statistics.median(read_ms)),
        "read_max_ms": round(max(read_ms)),
        "detail_kib": round(len(detail.content) / 1024),
        "refuse_oversized_median_ms": round(statistics.median(refuse_ms)),
    }


def main() -> None:
    logging.getLogger("httpx").setLevel(logging.WARNING)
    report = {
        "machine": f"{platform.node()}, {os.cpu_count()} cores",
        "stages": settings.ROADMAP_MAX_STAGES,
        "modules": settings.ROADMAP_MAX_MODULES,
        "concepts": settings.ROADMAP_MAX_CONCEPTS,
        "samples": SAMPLES,
        "oversized_stages": OVERSIZED_STAGES,
        "oversized_kib": round(len(oversized_body()) / 1024),
    }
    print(
        f"{report['stages']} stages, {report['modules']} modules, {report['concepts']} concepts: "
        f"create then read, {SAMPLES} times; and {OVERSIZED_STAGES:,} stages refused"
    )
    measure_each(
        report,
        RESULTS,
        measure,
        lambda result: (
            f"create {result['create_median_ms']} ms (max "
            f"{result['create_max_ms']}), read {result['read_median_ms']} ms (max "
            f"{result['read_max_ms']}, {result['detail_kib']} KiB), oversized refused in "
            f"{result['refuse_oversized_median_ms']} ms"
        ),
    )
