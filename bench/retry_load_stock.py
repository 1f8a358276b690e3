"""The baseline of bench/retry_load.py, in the same `make bench` run: the same
load against Django's stock request handling (a new thread per request, so a new
database connection per request; SQLite's sleeping busy handler), i.e. the
product with REQUEST_THREADS=0 and SQLITE_QUEUE_WRITERS=0."""

from bench.retry_load import run

STOCK = {"REQUEST_THREADS": "0", "SQLITE_QUEUE_WRITERS": "0"}


def main() -> None:
    run(
        "retry_load_stock",
        {"sqlite": STOCK, "postgres_redis": {**STOCK, "DATABASE_URL": "postgres"}},
        {"one_roadmap": ("paced_75_c50", "saturated_c10")},
    )
