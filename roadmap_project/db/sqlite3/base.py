"""SQLite whose writers queue in-process instead of sleep-polling.

A transaction takes SQLite's write lock at `BEGIN IMMEDIATE`. When another
connection holds it, SQLite's busy handler sleeps and polls (1, 2, 5 … up to 100 ms
per sleep), so under concurrent writers the waiting, not the work, sets the
latency: a profile of the retry endpoint under load showed 79 % of the server's
thread time in that sleep. Here every connection of the process first takes one
process-wide lock, which wakes the next writer the moment the previous one commits;
SQLite's own lock (and busy timeout) still arbitrates between processes."""

import threading
from collections.abc import Callable

from django.db import OperationalError
from django.db.backends.sqlite3 import base

_writer = threading.Lock()


class DatabaseWrapper(base.DatabaseWrapper):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._holds_writer_lock = False

    def _start_transaction_under_autocommit(self) -> None:
        timeout = self.settings_dict["OPTIONS"].get("timeout", 5)
        if not _writer.acquire(timeout=timeout):
            raise OperationalError("database is locked: another writer held it too long")
        self._holds_writer_lock = True
        try:
            super()._start_transaction_under_autocommit()
        except BaseException:
            self._release_writer_lock()
            raise

    def _release_writer_lock(self) -> None:
        if self._holds_writer_lock:
            self._holds_writer_lock = False
            _writer.release()

    def _end(self, end: Callable[[], None]) -> None:
        """Commit, rollback or close, then let the next writer in, whatever happened."""
        try:
            end()
        finally:
            self._release_writer_lock()

    def _commit(self) -> None:
        self._end(super()._commit)

    def _rollback(self) -> None:
        self._end(super()._rollback)

    def _close(self) -> None:
        self._end(super()._close)
