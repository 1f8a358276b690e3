"""A redis-server of a test's own, to stop and start under running work."""

import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import require_service
from tests.support.lifecycle import wait_until
from tests.support.ports import free_port


@dataclass
class PrivateRedis:
    """A redis-server of this test's own, with an append-only file, so stopping it
    disturbs no one else and a restart keeps the queued messages (the deployment
    guide's advice for queued work that must survive Redis)."""

    port: int
    directory: Path
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        command = [
            shutil.which("redis-server") or "redis-server",
            "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.directory),
        ]  # fmt: skip
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_until(self.answers, 10, "the private Redis did not start")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False


@contextmanager
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    require_service("redis-server", shutil.which("redis-server") is not None, "not on PATH")
    redis = PrivateRedis(port=free_port(), directory=tmp_path / "redis")
    redis.directory.mkdir()
    redis.start()
    try:
        yield redis
    finally:
        redis.stop()
