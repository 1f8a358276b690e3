"""Queries and transactions per generation, by content type and for a batch.

Every database statement of every thread (request, engine, maintenance) is
counted through an execute wrapper installed on each new connection; a
transaction is a BEGIN (SQLite: every atomic block opens with BEGIN IMMEDIATE)
or a write in autocommit. The generation runs for real in this process (the
in-process engine on a private loop, the offline provider), in a throwaway
database (the test database of the configured one).

The seed's design stated 2-3 writes per generation; this design's goal is two
transactions (start and finish, with their event rows) plus the lease heartbeats
while it runs. Writes bench/results/queries_per_generation.json.
"""

import json
import threading
from collections import Counter
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "queries_per_generation.json"
WRITES = ("INSERT", "UPDATE", "DELETE")


class StatementLog:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.enabled = False

    def __call__(self, execute, sql, params, many, context):
        if self.enabled:
            verb = sql.lstrip().split(None, 1)[0].upper()
            in_transaction = context["connection"].in_atomic_block
            with self.lock:
                self.counts["queries"] += 1
                if verb == "BEGIN" or (verb in WRITES and not in_transaction):
                    self.counts["transactions"] += 1
                if verb in WRITES:
                    self.counts["writes"] += 1
        return execute(sql, params, many, context)


def measure(log: StatementLog, start, *, pairs: int) -> dict:
    from generation import engine

    log.counts.clear()
    log.enabled = True
    start()
    assert engine.wait_until_idle(60), "the generations did not finish"
    log.enabled = False
    return {key: round(value / pairs, 1) for key, value in log.counts.items()}


def main() -> None:
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.db.backends.signals import connection_created
    from django.test.utils import override_settings, setup_databases, teardown_databases

    from generation import services
    from generation.providers import reset_provider
    from roadmaps.models import ConceptContent
    from roadmaps.services import create_roadmap

    log = StatementLog()

    def wrap(sender, connection, **kwargs) -> None:
        connection.execute_wrappers.append(log)

    connection_created.connect(wrap)
    databases = setup_databases(verbosity=0, interactive=False)
    results: dict = {"vendor": settings.DATABASES["default"]["ENGINE"]}
    try:
        with override_settings(
            GENERATION_PROVIDER="offline",
            OFFLINE_PROVIDER_DELAY_SECONDS=0.05,
            TASKS={"default": {"BACKEND": "generation.engine.InProcessBackend"}},
        ):
            reset_provider()
            user = get_user_model().objects.create_user(username="bench-queries")
            concepts = [{"concept_id": f"c{i:03d}", "name": f"Concept {i}"} for i in range(1, 51)]
            module = {"name": "M", "concepts": concepts}
            framework = {"stages": [{"name": "S", "modules": [module]}]}
            roadmap = create_roadmap(owner=user, title="Bench", framework=framework).roadmap
            for content_type in ("tutorial", "resources", "quiz"):
                content = ConceptContent.objects.select_related("concept", "roadmap").get(
                    roadmap=roadmap, concept__concept_id="c001", content_type=content_type
                )
                results[f"retry_{content_type}"] = measure(
                    log,
                    lambda content=content: services.retry_content(content=content, user=user),
                    pairs=1,
                )
            results["batch_of_50_per_pair"] = measure(
                log,
                lambda: services.retry_batch(
                    roadmap=roadmap, user=user, content_types=["tutorial"], statuses=["pending"]
                ),
                pairs=50,
            )
    finally:
        reset_provider()
        connection_created.disconnect(wrap)
        teardown_databases(databases, verbosity=0)
    for name, counts in results.items():
        print(f"  {name}: {counts}")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
