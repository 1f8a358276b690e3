"""Queries, transactions and CPU per generation, by content type and for a batch,
with usage records and budget reservations (after) and without them (before:
the commit before usage records landed, bench.baseline), measured in the same run.

Every database statement of every thread (request, engine, maintenance) is
counted through an execute wrapper installed on each new connection. A
transaction is one that reached the database: a commit or rollback after at
least one statement in an atomic block (SQLite's BEGIN IMMEDIATE counts as one:
it takes the write lock), or a write in autocommit; savepoints are counted
apart. Queries are the statements the driver is given: SQLite's BEGIN is one,
PostgreSQL's BEGIN and either's COMMIT are sent by the driver and are not. The
fence's rounds (liveness.Fence: one query per process every 0.5 s, whatever runs)
are counted apart too: they are not per generation.

The generation runs for real in a child process (the in-process engine on a
private loop, the offline provider streaming each answer over 0.05 s), in a
fresh database of its own (bench.in_flight.fresh), after one
unmeasured warm-up generation. The before runs this same file in the old
project's directory, so both sides run the same scenario; the sides alternate,
ROUNDS times each. CPU is the child's process time (every thread) over each
measurement. SQLite and PostgreSQL + Redis. Writes
bench/results/queries_per_generation.json.

Only the standard library is imported at the top: the child imports this file
by path with the project under test, old or new, on its path."""

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "queries_per_generation.json"
# The before: the commit whose child is the first with usage records.
BEFORE = "00a7131^"
ROUNDS = int(os.environ.get("BENCH_QUERIES_ROUNDS", "3"))
BATCH = 50
WRITES = ("INSERT", "UPDATE", "DELETE")
FENCE_THREAD = "generation-fence"
_TABLE = re.compile(r'\b(?:FROM|INTO|UPDATE)\s+"?(\w+)"?', re.IGNORECASE)
# The child runs this file's `child` with the project under test on its path.
CHILD = "import runpy, sys; runpy.run_path(sys.argv[1])['child'](*sys.argv[2:])"


def shape(sql: str) -> str:
    """A statement's kind and first table: what the before/after difference names."""
    verb = sql.lstrip().split(None, 1)[0].upper()
    if verb == "SELECT" and " FOR " in sql and "UPDATE" in sql.rsplit(" FOR ", 1)[1]:
        verb = "SELECT … FOR UPDATE"
    table = _TABLE.search(sql)
    return f"{verb} {table[1]}" if table and verb not in ("SAVEPOINT", "RELEASE") else verb


class StatementLog:
    """The execute wrapper and commit/rollback hooks of every connection."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.shapes: Counter[str] = Counter()
        self.enabled = False

    def watch(self, connection) -> None:
        """Count on this connection (once, however often it reconnects)."""
        if getattr(connection, "bench_watched", False):
            return
        connection.bench_watched = True
        connection.bench_pending = 0  # statements of its open transaction
        connection.execute_wrappers.append(self)
        for name in ("commit", "rollback"):
            setattr(connection, name, self._ending(connection, getattr(connection, name)))

    def _ending(self, connection, end):
        def ended(*args, **kwargs):
            try:
                return end(*args, **kwargs)
            finally:
                if connection.bench_pending and self.enabled:
                    with self.lock:
                        self.counts["transactions"] += 1
                connection.bench_pending = 0

        return ended

    def __call__(self, execute, sql, params, many, context):
        if self.enabled:
            connection = context["connection"]
            verb = sql.lstrip().split(None, 1)[0].upper()
            with self.lock:
                if threading.current_thread().name == FENCE_THREAD:
                    self.counts["fence_queries"] += 1
                else:
                    self.counts["queries"] += 1
                    self.shapes[shape(sql)] += 1
                    if verb == "BEGIN" or connection.in_atomic_block:
                        connection.bench_pending += 1
                    elif verb in WRITES:
                        self.counts["transactions"] += 1
                    if verb in WRITES:
                        self.counts["writes"] += 1
                    if verb == "SAVEPOINT":
                        self.counts["savepoints"] += 1
        return execute(sql, params, many, context)


def measure(log: StatementLog, start, *, pairs: int) -> dict:
    from generation import engine

    log.counts.clear()
    log.shapes.clear()
    log.enabled = True
    cpu = time.process_time()
    start()
    assert engine.wait_until_idle(60), "the generations did not finish"
    cpu = time.process_time() - cpu
    log.enabled = False
    per_pair = {key: value / pairs for key, value in log.counts.items() if key != "fence_queries"}
    return {
        **{key: round(per_pair.get(key, 0), 2) for key in ("queries", "transactions", "writes")},
        "savepoints": round(per_pair.get("savepoints", 0), 2),
        "fence_queries": log.counts["fence_queries"],
        "cpu_ms": round(cpu * 1000 / pairs, 2),
        "statements": dict(log.shapes),
    }


def without_usage() -> None:
    """Switch off, in this process only, what usage records and budgets add to a
    generation: no provider request is metered (so none is recorded), a start
    reserves nothing (so it admits without reading the budget), and an attempt's
    end settles no reservation. The product is not told; what it would record,
    check and settle is simply not there."""
    from contextlib import nullcontext

    from generation import budgets
    from generation.providers import metering

    switches = {
        (metering, "metered"): lambda provider, model: nullcontext(),
        (budgets, "reservation"): lambda content, **kwargs: 0,
        (budgets, "settle"): lambda item_id: None,
    }
    for (module, name), replacement in switches.items():
        if not hasattr(module, name):
            raise SystemExit(f"the usage switch no longer fits: {module.__name__}.{name} is gone")
        setattr(module, name, replacement)


def child(output: str, usage: str = "on") -> None:
    """Run every scenario in this process, with the project under test (usage
    records and budgets switched off with `usage="off"`); write the figures to
    `output` as JSON."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "roadmap_project.settings")
    import django

    django.setup()
    if usage == "off":
        without_usage()

    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db.backends.signals import connection_created
    from django.test.utils import override_settings

    from generation import engine, services
    from generation.providers import reset_provider
    from roadmaps.models import ConceptContent
    from roadmaps.services import create_roadmap

    log = StatementLog()

    def watch(sender, connection, **kwargs) -> None:
        log.watch(connection)

    connection_created.connect(watch)
    call_command("migrate", verbosity=0)  # not counted: the log is not enabled yet
    results: dict = {"vendor": settings.DATABASES["default"]["ENGINE"]}
    try:
        with override_settings(
            GENERATION_PROVIDER="offline",
            OFFLINE_PROVIDER_DELAY_SECONDS=0.05,
            TASKS={"default": {"BACKEND": "generation.engine.InProcessBackend"}},
        ):
            reset_provider()
            user = get_user_model().objects.create_user(username="bench-queries")
            concepts = [
                {"concept_id": f"c{i:03d}", "name": f"Concept {i}"} for i in range(1, BATCH + 3)
            ]
            module = {"name": "M", "concepts": concepts}
            framework = {"stages": [{"name": "S", "modules": [module]}]}
            roadmap = create_roadmap(owner=user, title="Bench", framework=framework).roadmap
            pairs = ConceptContent.objects.select_related("concept", "roadmap")
            # Warm-up of each content type's path (imports, the provider, the engine's
            # first sweep) on the last concept, not measured; the batch is the others'.
            for warm_up in pairs.filter(roadmap=roadmap, concept__concept_id=f"c{BATCH + 2:03d}"):
                services.retry_content(content=warm_up, user=user)
                assert engine.wait_until_idle(60), "the warm-up did not finish"
            for content_type in ("tutorial", "resources", "quiz"):
                content = pairs.get(
                    roadmap=roadmap, concept__concept_id="c001", content_type=content_type
                )
                results[f"retry_{content_type}"] = measure(
                    log,
                    lambda content=content: services.retry_content(content=content, user=user),
                    pairs=1,
                )
            results[f"batch_of_{BATCH}_per_pair"] = measure(
                log,
                lambda: services.retry_batch(
                    roadmap=roadmap, user=user, content_types=["tutorial"], statuses=["pending"]
                ),
                pairs=BATCH,
            )
    finally:
        reset_provider()
        connection_created.disconnect(watch)
    Path(output).write_text(json.dumps(results))


def run(root: Path, env: dict, scratch: Path, usage: str) -> dict:
    """This file's scenarios in a child process, with the project at `root`."""
    output = scratch / "figures.json"
    subprocess.run(
        [sys.executable, "-c", CHILD, __file__, str(output), usage],
        cwd=root, env=env, check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    return json.loads(output.read_text())


def summary(runs: list[dict]) -> dict:
    """One side's figures: counts from the first run (the others' queries are
    listed if their statements differ), CPU the mean over its runs."""
    first, scenarios = runs[0], [name for name in runs[0] if name != "vendor"]
    result: dict = {"vendor": first["vendor"]}
    for name in scenarios:
        counts = {k: v for k, v in first[name].items() if k not in ("cpu_ms", "fence_queries")}
        varied = [r[name]["queries"] for r in runs if r[name]["statements"] != counts["statements"]]
        result[name] = {
            **counts,
            "cpu_ms": round(statistics.fmean(r[name]["cpu_ms"] for r in runs), 1),
            "cpu_ms_runs": [r[name]["cpu_ms"] for r in runs],
            "fence_queries_runs": [r[name]["fence_queries"] for r in runs],
        }
        if varied:
            result[name]["other_runs_queries"] = varied
    return result


def difference(before: dict, after: dict) -> dict[str, int]:
    """What the after's statements add (positive) or drop (negative)."""
    changed = Counter(after)
    changed.subtract(before)
    return {shape: count for shape, count in sorted(changed.items()) if count}


def main() -> None:
    from bench.baseline import tree
    from bench.in_flight import configurations, fresh
    from tests.support.processes import ROOT

    # side: (project, usage records and budgets)
    projects = {"usage_off": (ROOT, "off"), "after": (ROOT, "on")}
    try:
        projects = {"before": (tree(BEFORE), "on"), **projects}
    except SystemExit as missing:
        print(f"  no before: {missing}")
    report: dict = {"before_commit": BEFORE if "before" in projects else None, "rounds": ROUNDS}
    with tempfile.TemporaryDirectory() as scratch:
        for label, env in configurations(Path(scratch)).items():
            env = {**env, "LOG_LEVEL": "WARNING"}
            runs: dict[str, list[dict]] = {side: [] for side in projects}
            loads = [os.getloadavg()[0]]
            for round_number in range(1, ROUNDS + 1):
                for side, (root, usage) in projects.items():
                    name = f"{label}-{side}-{round_number}"
                    run_env = fresh(env, Path(scratch), name)
                    runs[side].append(run(root, run_env, Path(scratch) / name, usage))
            loads.append(os.getloadavg()[0])
            report[label] = entry = {side: summary(side_runs) for side, side_runs in runs.items()}
            entry["load_average_1min"] = [round(load, 2) for load in loads]
            for scenario in (name for name in entry["after"] if name != "vendor"):
                after = entry["after"][scenario]
                for side in projects:
                    figures = entry[side][scenario]
                    print(
                        f"  {label:15} {scenario:21} {side:9} {figures['queries']} queries, "
                        f"{figures['transactions']} transactions, {figures['savepoints']} "
                        f"savepoints, {figures['writes']} writes, {figures['cpu_ms']} ms CPU"
                    )
                    if side != "after":
                        after[f"against_{side}"] = compared = {
                            "cpu_ratio": round(after["cpu_ms"] / figures["cpu_ms"], 2),
                            "added": difference(figures["statements"], after["statements"]),
                        }
                        print(f"  {'':15} {'':21} after / {side}: {compared}", flush=True)
            print(f"  {label:15} load {loads[0]:.2f} -> {loads[1]:.2f}")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
