"""Real processes of the distributed mode for tests and benchmarks: Celery workers
and daphne servers against one PostgreSQL database and one Redis.

Each stack gets its own broker queue (CELERY_QUEUE), so it never takes messages of
another run or of a developer's `make run-distributed` on the same Redis."""

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis

from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 15.0
# Celery's line for each task a worker finished: "Task <name>[<id>] succeeded in 0.5s".
SUCCEEDED = re.compile(r"Task generation\.tasks\.generate_content\[[0-9a-f-]+\] succeeded")


@dataclass
class ServiceProcess:
    """One child process with its log file."""

    name: str
    process: subprocess.Popen
    log_path: Path
    url: str = ""

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def succeeded_tasks(self) -> int:
        """Generations this worker ran to the end, from its own log."""
        return len(SUCCEEDED.findall(self.log()))

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to clean up (a crashed machine)."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(STOP_TIMEOUT_SECONDS)

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(STOP_TIMEOUT_SECONDS)


def _spawn(
    name: str, command: list[str], env: dict[str, str], log_dir: Path, root: Path = ROOT
) -> ServiceProcess:
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return ServiceProcess(name=name, process=process, log_path=log_path)


def spawn_worker(
    name: str, env: dict[str, str], log_dir: Path, root: Path = ROOT
) -> ServiceProcess:
    command = [
        sys.executable, "-m", "celery", "-A", "roadmap_project", "worker",
        "--hostname", f"{name}@%h", "--loglevel", "INFO",
        "--without-mingle", "--without-gossip",
    ]  # fmt: skip
    return _spawn(name, command, env, log_dir, root)


def spawn_daphne(
    name: str, env: dict[str, str], log_dir: Path, root: Path = ROOT
) -> ServiceProcess:
    port = free_port()
    command = [
        sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port),
        "roadmap_project.asgi:application",
    ]  # fmt: skip
    server = _spawn(name, command, env, log_dir, root)
    server.url = f"http://127.0.0.1:{port}"
    return server


def _ready(service: ServiceProcess) -> bool:
    if service.url:
        try:
            return httpx.get(f"{service.url}/api/v1/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False
    return f"{service.name}@" in service.log() and " ready." in service.log()


def wait_until_ready(
    services: list[ServiceProcess], timeout: float = START_TIMEOUT_SECONDS
) -> None:
    deadline = time.monotonic() + timeout
    pending = list(services)
    while pending:
        for service in list(pending):
            if service.process.poll() is not None:
                raise RuntimeError(f"{service.name} exited at start:\n{service.log()[-3000:]}")
            if _ready(service):
                pending.remove(service)
        if pending and time.monotonic() > deadline:
            names = ", ".join(service.name for service in pending)
            raise RuntimeError(f"not ready after {timeout:.0f} s: {names}")
        time.sleep(0.1)


@dataclass
class Stack:
    """Daphne servers and Celery workers sharing a database, a Redis and a queue."""

    queue: str
    redis_url: str
    servers: list[ServiceProcess] = field(default_factory=list)
    workers: list[ServiceProcess] = field(default_factory=list)

    def waiting_messages(self) -> int:
        """Messages in the stack's broker queue (not yet delivered to a worker)."""
        client = redis.Redis.from_url(self.redis_url)
        return sum(client.llen(key) for key in client.scan_iter(f"{self.queue}*"))


def stack_env(
    *, database_url: str, redis_url: str, queue: str, media_root: Path, **overrides
) -> dict[str, str]:
    """The environment of every process of a stack: the distributed mode with the
    offline provider (its delay is the provider latency)."""
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "DJANGO_SETTINGS_MODULE": "roadmap_project.settings",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "TASK_BACKEND": "celery",
        "CELERY_QUEUE": queue,
        "GENERATION_PROVIDER": "offline",
        "MEDIA_ROOT": str(media_root),
        "RETRY_THROTTLE_RATE": "100000/minute",
    }
    env.update({key: str(value) for key, value in overrides.items()})
    return env


@contextmanager
def running_stack(
    *,
    database_url: str,
    redis_url: str,
    log_dir: Path,
    media_root: Path,
    servers: int = 2,
    workers: int = 2,
    root: Path = ROOT,
    **settings_env,
) -> Iterator[Stack]:
    """Start the processes, wait until each answers, and stop them all on exit
    (and forget the stack's queue, including messages a killed worker held).
    `root` is the project they run (a benchmark's baseline runs an earlier commit's)."""
    queue = f"test-generation-{uuid.uuid4().hex[:12]}"
    env = stack_env(
        database_url=database_url,
        redis_url=redis_url,
        queue=queue,
        media_root=media_root,
        **settings_env,
    )
    stack = Stack(queue=queue, redis_url=redis_url)
    try:
        stack.servers = [
            spawn_daphne(f"daphne-{i + 1}", env, log_dir, root) for i in range(servers)
        ]
        stack.workers = [
            spawn_worker(f"worker-{i + 1}", env, log_dir, root) for i in range(workers)
        ]
        wait_until_ready(stack.servers + stack.workers)
        yield stack
    finally:
        for service in stack.workers + stack.servers:
            service.stop()
        forget_queue(redis_url, queue)


def forget_queue(redis_url: str, queue: str) -> None:
    """Delete a queue and the unacknowledged messages that were taken from it
    (kombu's Redis transport keeps those in the `unacked` hash until they are
    restored, an hour later with our visibility timeout)."""
    client = redis.Redis.from_url(redis_url)
    for key in [*client.scan_iter(f"{queue}*"), f"_kombu.binding.{queue}"]:
        client.delete(key)
    for tag, payload in client.hgetall("unacked").items():
        try:
            _message, _exchange, routing_key = json.loads(payload)
        except (ValueError, TypeError):
            continue
        if routing_key == queue:
            client.hdel("unacked", tag)
            client.zrem("unacked_index", tag)
