"""`make run-distributed`: the distributed mode on one machine (docs/deployment.md).

Against the local PostgreSQL and Redis: creates the database if missing, migrates,
seeds the demo, then runs two daphne servers and two Celery workers with
TASK_BACKEND=celery. One Ctrl-C (or SIGTERM) stops all of them; if any of them
exits, the others are stopped too.

Environment: DATABASE_URL (default postgres://postgres@127.0.0.1:5432/roadmaps),
REDIS_URL (default redis://127.0.0.1:6379/0), HOST (127.0.0.1), PORTS (8000,8001),
WORKERS (2), plus every setting of DESIGN §8.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dj_database_url
import psycopg
import redis
from psycopg import sql

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/roadmaps"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
STOP_TIMEOUT_SECONDS = 20.0


class SetupError(Exception):
    """A missing service or failed step, with what to do about it."""


def distributed_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("DATABASE_URL", DEFAULT_DATABASE_URL)
    env.setdefault("REDIS_URL", DEFAULT_REDIS_URL)
    env.setdefault("DJANGO_SETTINGS_MODULE", "roadmap_project.settings")
    env["TASK_BACKEND"] = "celery"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def ensure_database(database_url: str, *, fresh: bool = False) -> None:
    """Create the PostgreSQL database if it does not exist yet (drop it first if
    `fresh`: benchmarks start from an empty database)."""
    config = dj_database_url.parse(database_url)
    if "postgresql" not in config["ENGINE"]:
        raise SetupError(f"DATABASE_URL must point at PostgreSQL, not {config['ENGINE']}.")
    server = {
        "host": config["HOST"] or "127.0.0.1",
        "port": config["PORT"] or 5432,
        "user": config["USER"] or None,
        "password": config["PASSWORD"] or None,
        "dbname": "postgres",
        "connect_timeout": 5,
        "autocommit": True,
    }
    try:
        with psycopg.connect(**server) as connection:
            name = sql.Identifier(config["NAME"])
            if fresh:
                connection.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
            exists = connection.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", [config["NAME"]]
            ).fetchone()
            if not exists:
                connection.execute(sql.SQL("CREATE DATABASE {}").format(name))
                print(f"Created database {config['NAME']}", flush=True)
    except psycopg.OperationalError as error:
        raise SetupError(
            f"PostgreSQL is not reachable at {server['host']}:{server['port']} ({error}). "
            "Start it, or set DATABASE_URL."
        ) from error


def ensure_redis(redis_url: str) -> None:
    try:
        redis.Redis.from_url(redis_url, socket_connect_timeout=2).ping()
    except redis.RedisError as error:
        raise SetupError(
            f"Redis is not reachable ({error}). Start it, or set REDIS_URL."
        ) from error


def manage(*args: str, env: dict[str, str]) -> None:
    result = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env)
    if result.returncode:
        raise SetupError(f"manage.py {' '.join(args)} failed (exit {result.returncode}).")


def start(name: str, command: list[str], env: dict[str, str]) -> subprocess.Popen:
    """A child in its own session: Ctrl-C reaches only this supervisor, which then
    stops each child exactly once with SIGTERM (a warm shutdown for Celery)."""
    print(f"Starting {name}: {' '.join(command)}", flush=True)
    return subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True)


def stop_all(children: dict[str, subprocess.Popen]) -> None:
    for process in children.values():
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
    for name, process in children.items():
        try:
            process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"{name} did not stop in time; killing it", flush=True)
            process.kill()
            process.wait()


def supervise(children: dict[str, subprocess.Popen]) -> int:
    """Wait until a signal arrives or a child exits, then stop everything."""
    stopping = False

    def request_stop(signum, _frame) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    exit_code = 0
    while not stopping:
        exited = [name for name, process in children.items() if process.poll() is not None]
        if exited:
            print(f"{', '.join(exited)} exited; stopping the others", flush=True)
            exit_code = 1
            break
        time.sleep(0.2)
    print("Stopping all processes…", flush=True)
    stop_all(children)
    return exit_code


def main() -> int:
    env = distributed_env()
    host = env.get("HOST", "127.0.0.1")
    ports = [port.strip() for port in env.get("PORTS", "8000,8001").split(",") if port.strip()]
    workers = int(env.get("WORKERS", "2"))
    try:
        ensure_database(env["DATABASE_URL"])
        ensure_redis(env["REDIS_URL"])
        manage("migrate", "--no-input", env=env)
        manage("collectstatic", "--no-input", "--verbosity", "0", env=env)
        # The sample content is made in this one-off process (in-process engine,
        # offline provider), whether or not the workers are up yet.
        seed_env = {**env, "TASK_BACKEND": "inprocess"}
        manage("seed_demo", "--base-url", f"http://{host}:{ports[0]}", env=seed_env)
    except SetupError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1

    children: dict[str, subprocess.Popen] = {}
    try:
        for port in ports:
            children[f"daphne:{port}"] = start(
                f"daphne on port {port}",
                [sys.executable, "-m", "daphne", "-b", host, "-p", port,
                 "roadmap_project.asgi:application"],
                env,
            )  # fmt: skip
        for number in range(1, workers + 1):
            children[f"worker{number}"] = start(
                f"Celery worker {number}",
                [sys.executable, "-m", "celery", "-A", "roadmap_project", "worker",
                 "--hostname", f"worker{number}@%h", "--loglevel", "INFO"],
                env,
            )  # fmt: skip
    except BaseException:
        stop_all(children)
        raise
    urls = "\n".join(f"  http://{host}:{port}/api/v1/docs/" for port in ports)
    print(
        "\nDistributed mode is running (PostgreSQL, Redis, Celery):\n"
        f"{urls}\n"
        f"  admin:     http://{host}:{ports[0]}/admin/\n"
        f"  websocket: ws://{host}:{ports[0]}/api/v1/ws/<task_id>?token=<token>\n"
        f"  {len(ports)} daphne server(s), {workers} Celery worker(s). Press Ctrl-C to stop.\n",
        flush=True,
    )
    return supervise(children)


if __name__ == "__main__":
    sys.exit(main())
