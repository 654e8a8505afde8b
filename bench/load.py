"""Load generation on loopback, shared by the service benchmarks and the load test.

`start_server` runs ``tamrl serve`` in its own process; `run_load` drives it with N concurrent clients, each a
minimal keep-alive HTTP/1.1 connection (asyncio streams, no HTTP library: httpx spends more CPU per request than
the server does, and here clients and server share 2 cores), asking for the given paths in turn.
"""

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args: Sequence[str], env: dict | None = None) -> tuple[subprocess.Popen, int]:
    """``tamrl serve ARGS`` on a free loopback port, once it answers; returns the process and the port."""
    port = free_port()
    command = [sys.executable, "-m", "service.cli", "serve", "--port", str(port), *args]
    server = subprocess.Popen(command, env=os.environ | (env or {}), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)  # fmt: skip
    for _ in range(300):
        try:
            httpx.get(f"http://127.0.0.1:{port}/cubes", timeout=1)
            return server, port
        except httpx.TransportError:
            time.sleep(0.1)
    server.kill()
    raise RuntimeError("the server did not start")


@dataclass
class Load:
    """What the clients saw: latency per request [s] by kind, and the failed requests."""

    latencies: dict[str, list[float]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    @property
    def requests(self) -> int:
        return sum(map(len, self.latencies.values()))


async def _client(port: int, paths: Sequence[tuple[str, str]], until: float, load: Load) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    k = 0
    try:
        while time.perf_counter() < until:
            kind, path = paths[k % len(paths)]
            k += 1
            started = time.perf_counter()
            writer.write(f"GET {path} HTTP/1.1\r\nHost: load\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(next(line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
                         .split(b":")[1])  # fmt: skip
            body = await reader.readexactly(length)
            load.latencies.setdefault(kind, []).append(time.perf_counter() - started)
            if not head.startswith(b"HTTP/1.1 200") or not body:
                status = head.split(b"\r\n")[0].decode()
                load.errors.append(f"{path}: {status} {body[:200]!r}")
    finally:
        writer.close()


def run_load(port: int, paths: Sequence[tuple[str, str]], clients: int, seconds: float) -> Load:
    """``clients`` concurrent connections for ``seconds``, client c starting at path c and cycling through all."""
    load = Load()
    until = time.perf_counter() + seconds

    async def main() -> None:
        shifted = [list(paths[c % len(paths):]) + list(paths[: c % len(paths)]) for c in range(clients)]
        await asyncio.gather(*(_client(port, shifted[c], until, load) for c in range(clients)))

    asyncio.run(main())
    return load
