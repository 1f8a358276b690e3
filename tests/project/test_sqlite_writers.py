"""The SQLite backend's in-process writer queue (roadmap_project/patches/django.py): a
transaction holds the process's writer lock from BEGIN to its end, however it
ends, so a later writer never waits forever. Runs on its own SQLite file in both
CI passes, whatever DATABASE_URL says."""

import threading

import pytest
from django.db import OperationalError
from django.db.utils import ConnectionHandler

from roadmap_project.patches.django import _writer


@pytest.fixture
def connect(tmp_path, django_db_blocker):
    opened = []

    def open_connection(timeout: float = 0.5):
        handler = ConnectionHandler(
            {
                "default": {
                    "ENGINE": "roadmap_project.db.sqlite3",
                    "NAME": str(tmp_path / "queue.sqlite3"),
                    "OPTIONS": {"transaction_mode": "IMMEDIATE", "timeout": timeout},
                }
            }
        )
        connection = handler.create_connection("default")
        connection.ensure_connection()
        opened.append(connection)
        return connection

    with django_db_blocker.unblock():  # a private database, not the test database
        yield open_connection
        for connection in opened:
            connection.close()
    assert not _writer.locked()


@pytest.mark.parametrize("end", ["commit", "rollback", "close"])
def test_every_end_of_a_transaction_releases_the_writer_lock(connect, end):
    connection = connect()
    connection._start_transaction_under_autocommit()
    assert _writer.locked()

    getattr(connection, end)()

    assert not _writer.locked()


def test_a_second_writer_waits_for_the_first_to_commit(connect):
    # A wait far longer than the 0.2 s the first holds on: a loaded machine may
    # take a while to wake the second once the first commits.
    first, second = connect(timeout=10), connect(timeout=10)
    first._start_transaction_under_autocommit()
    first.cursor().execute("CREATE TABLE t (n INTEGER)")
    order = []

    def write() -> None:
        second._start_transaction_under_autocommit()
        order.append("second began")
        second.cursor().execute("INSERT INTO t VALUES (2)")
        second.commit()

    writer = threading.Thread(target=write)
    second.inc_thread_sharing()
    writer.start()
    writer.join(0.2)
    order.append("first commits")
    first.commit()
    writer.join(5)
    second.dec_thread_sharing()

    assert order == ["first commits", "second began"]


def test_a_writer_that_waits_past_the_timeout_gets_database_is_locked(connect):
    first, second = connect(), connect()
    first._start_transaction_under_autocommit()

    with pytest.raises(OperationalError, match="database is locked"):
        second._start_transaction_under_autocommit()
    first.rollback()
