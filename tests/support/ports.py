"""Ports for the servers the tests start in child processes."""

import random
import socket
from pathlib import Path

_choose = random.SystemRandom()  # not the seeded `random` a test may have reset


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A free port below the kernel's ephemeral range. `bind(0)` picks from that
    range, and so does every outgoing connection: between this check and the
    child's own bind (or a restart on the same port), a connection the machine
    opens meanwhile could take the port, and the child would fail to start."""
    low = _ephemeral_low()
    while True:
        port = _choose.randrange(10_000, low)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
