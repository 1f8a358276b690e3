"""Row-lock waits between connections, for the tests that force a race."""

from django.db import connection


def another_connection_waits_for_a_lock() -> bool:
    """Whether another connection to this database waits for a lock (PostgreSQL).
    The caller may be inside a transaction, which would keep its first reading of
    pg_stat_activity to the end: the snapshot is dropped first, so each call sees
    now."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'"
        )
        return cursor.fetchone()[0] > 0
