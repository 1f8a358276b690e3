"""A real daphne process serving roadmap_project.asgi on a free port.

It uses the database the test writes to (tests.support.processes.test_database_url: the
pytest-django test database, SQLite file or PostgreSQL), so rows committed by a
`transaction=True` test are visible to the server and the other way round. No
separate migrate or user creation is needed."""

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.support.ports import free_port
from tests.support.processes import ROOT, process_env


@dataclass(frozen=True)
class DaphneServer:
    port: int
    process: subprocess.Popen
    log: Path

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


@contextmanager
def daphne_server(
    log_dir: Path,
    *,
    port: int | None = None,
    startup_timeout: float = 30.0,
    root: Path = ROOT,
    **env: str,
) -> Iterator[DaphneServer]:
    """Start daphne with `env` on top of the test process's environment, wait
    until /api/v1/health answers, and stop it (SIGTERM, then SIGKILL) at exit.
    On a free port unless `port` is given (a restart on the same port keeps a
    client's address); each start has its own log. `root` is the project it
    serves (a benchmark's baseline serves an earlier commit's)."""
    port = port or free_port()
    log, restart = log_dir / f"daphne-{port}.log", 0
    while log.exists():
        restart += 1
        log = log_dir / f"daphne-{port}-{restart}.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "daphne",
                "-b",
                "127.0.0.1",
                "-p",
                str(port),
                "roadmap_project.asgi:application",
            ],
            cwd=root,
            env=process_env(**env),
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    server = DaphneServer(port=port, process=process, log=log)
    try:
        _wait_until_healthy(server, startup_timeout)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def _wait_until_healthy(server: DaphneServer, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"daphne exited with {server.process.returncode}:\n{server.output()}"
            )
        try:
            if httpx.get(f"{server.http_url}/api/v1/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"daphne did not become healthy in {timeout} s:\n{server.output()}")
