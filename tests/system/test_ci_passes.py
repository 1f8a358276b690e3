"""The two CI passes (.ci/run) and the tests of the distributed one (marked
`distributed`: the outages, the Celery cells of the fault matrix, the
circuit shared by processes). The embedded
pass deselects them; wherever they are selected they need PostgreSQL and Redis,
and under CI=true a missing service fails them instead of skipping them (the
project's require_service). Run as CI runs them: pytest in a subprocess."""

import os
import re
import subprocess
import sys

from tests.support.processes import ROOT

DISTRIBUTED = [
    "tests/system/test_outages.py",
    "tests/system/test_fault_matrix.py",
    "tests/system/test_failover_processes.py",
    "-m",
    "distributed",
]


def pytest_run(*args: str, **env: str) -> subprocess.CompletedProcess:
    """pytest in a fresh process with no service configured (the embedded pass)."""
    bare = {k: v for k, v in os.environ.items() if k not in ("CI", "DATABASE_URL", "REDIS_URL")}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *args],
        cwd=ROOT,
        env=bare | env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def outcomes(run: subprocess.CompletedProcess) -> dict[str, int]:
    """The counts of pytest's last summary line ("3 failed, 5 deselected in 2.1s")."""
    summary = run.stdout.strip().splitlines()[-1]
    return {word: int(n) for n, word in re.findall(r"(\d+) (\w+)", summary)}


def test_distributed_tests_without_their_services_fail_under_ci():
    run = pytest_run(*DISTRIBUTED, CI="true")

    counts = outcomes(run)
    assert run.returncode == 1, run.stdout[-3000:]
    assert counts.get("errors", counts.get("error", 0)) >= 5 and "skipped" not in counts, counts
    assert "PostgreSQL is required in CI" in run.stdout
    assert "distributed-pass tests: 0 passed" in run.stdout


def test_distributed_tests_skip_with_the_reason_on_a_bare_machine():
    run = pytest_run(*DISTRIBUTED)

    assert run.returncode == 0, run.stdout[-3000:]
    assert outcomes(run)["skipped"] >= 5
    assert "PostgreSQL is not configured" in run.stdout


def test_the_embedded_pass_deselects_them_for_the_distributed_pass():
    run = pytest_run(
        "tests/system/test_outages.py",
        "-m",
        "not fuzz and not browser and not distributed",
        CI="true",
    )

    assert run.returncode == 5, run.stdout[-3000:]  # nothing selected, nothing failed
    assert "distributed-pass tests: 4 deselected (they run in the distributed pass)" in run.stdout
