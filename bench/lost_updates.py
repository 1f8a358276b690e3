"""Lost updates under concurrent writers, on PostgreSQL (I8).

The same workload twice: THREADS writers, each owning CONCEPTS / THREADS
concepts of one roadmap, each recording ROUNDS status changes per concept
(every change also bumps a per-concept counter, so a lost update is countable).

* seed-style: every concept's status in one JSON document per roadmap, changed by
  read-modify-write (SELECT the document, change one concept, UPDATE the
  document), as the seed's design did;
* this design: one `roadmaps_conceptcontent` row per (concept, content type),
  changed by one UPDATE of that row, as generation.state does.

Lost updates = expected counter total - counted total. Runs in a fresh
`*_bench` database beside the configured PostgreSQL; writes
bench/results/lost_updates.json. Skipped, with the reason, without PostgreSQL.
"""

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import psycopg
from psycopg.types.json import Jsonb

from bench.worker_scaling import bench_database_url
from roadmap_project.distributed import SetupError, ensure_database

THREADS = 8
CONCEPTS = 40
ROUNDS = 25
# Not `generating`: the schema requires an attempt and a lease with it.
STATUSES = ("completed", "failed", "pending")
SELECT_DOCUMENT = "SELECT doc FROM bench_seed_roadmap WHERE id = 1"
RESULTS = Path(__file__).resolve().parent / "results" / "lost_updates.json"
ROOT = Path(__file__).resolve().parent.parent

SEED = """
from django.contrib.auth import get_user_model
from roadmaps.services import create_roadmap
concepts = [{"concept_id": f"c{i:03d}", "name": f"Concept {i}"} for i in range(1, %d + 1)]
framework = {"stages": [{"name": "S", "modules": [{"name": "M", "concepts": concepts}]}]}
user = get_user_model().objects.create_user(username="bench-lost-updates")
print("ROADMAP=" + str(create_roadmap(owner=user, title="Bench", framework=framework).roadmap.pk))
"""


def run_writers(write) -> None:
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        try:
            with psycopg.connect(DSN, autocommit=True) as connection:
                mine = range(index, CONCEPTS, THREADS)
                for round_ in range(ROUNDS):
                    for concept in mine:
                        write(connection, concept, STATUSES[round_ % len(STATUSES)])
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    if errors:
        raise errors[0]


def seed_style() -> int:
    with psycopg.connect(DSN, autocommit=True) as connection:
        connection.execute("DROP TABLE IF EXISTS bench_seed_roadmap")
        connection.execute("CREATE TABLE bench_seed_roadmap (id int PRIMARY KEY, doc jsonb)")
        doc = {f"c{i}": {"status": "pending", "changes": 0} for i in range(CONCEPTS)}
        connection.execute("INSERT INTO bench_seed_roadmap VALUES (1, %s)", [Jsonb(doc)])

    def write(connection, concept: int, status: str) -> None:
        [document] = connection.execute(SELECT_DOCUMENT).fetchone()
        entry = document[f"c{concept}"]
        entry["status"], entry["changes"] = status, entry["changes"] + 1
        connection.execute("UPDATE bench_seed_roadmap SET doc = %s WHERE id = 1", [Jsonb(document)])

    run_writers(write)
    with psycopg.connect(DSN) as connection:
        [document] = connection.execute(SELECT_DOCUMENT).fetchone()
        connection.execute("DROP TABLE bench_seed_roadmap")
    return CONCEPTS * ROUNDS - sum(entry["changes"] for entry in document.values())


def this_design(roadmap_id: str) -> int:
    with psycopg.connect(DSN) as connection:
        rows = connection.execute(
            "SELECT c.id FROM roadmaps_conceptcontent c JOIN roadmaps_concept k "
            "ON k.id = c.concept_id WHERE c.roadmap_id = %s AND c.content_type = 'tutorial' "
            "ORDER BY k.order",
            [roadmap_id],
        ).fetchall()
    ids = [row[0] for row in rows]

    def write(connection, concept: int, status: str) -> None:
        connection.execute(
            "UPDATE roadmaps_conceptcontent SET status = %s, version = version + 1, "
            "updated_at = now() WHERE id = %s",
            [status, ids[concept]],
        )

    run_writers(write)
    with psycopg.connect(DSN) as connection:
        [total] = connection.execute(
            "SELECT sum(version) FROM roadmaps_conceptcontent WHERE id = ANY(%s)", [ids]
        ).fetchone()
    return CONCEPTS * ROUNDS - total


def main() -> None:
    global DSN
    url = bench_database_url()
    try:
        ensure_database(url, fresh=True)
    except SetupError as error:
        raise SystemExit(str(error)) from error
    env = {**os.environ, "DATABASE_URL": url, "REDIS_URL": "", "TASK_BACKEND": "inprocess"}
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--no-input", "-v", "0"],
        cwd=ROOT, env=env, check=True,
    )  # fmt: skip
    out = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", SEED % CONCEPTS],
        cwd=ROOT, env=env, check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    roadmap_id = out.split("ROADMAP=", 1)[1].strip()
    DSN = url.replace("postgres://", "postgresql://", 1)
    expected = CONCEPTS * ROUNDS
    results = {
        "writers": THREADS,
        "changes": expected,
        "seed_style_lost": seed_style(),
        "this_design_lost": this_design(roadmap_id),
    }
    print(
        f"  {THREADS} writers, {expected} status changes on one roadmap: "
        f"seed-style JSON document lost {results['seed_style_lost']}, "
        f"per-pair rows lost {results['this_design_lost']}"
    )
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")


DSN = ""
