"""Benchmark: point-query latency under 32 concurrent clients, and the bbox total of a 5 x 5 deg year.

Starts the real server (``tamrl serve``) on a free loopback port over a folder holding the demo cube (run
``tamrl demo`` first), then:
- point queries: CLIENTS concurrent clients, each asking for the one-year series (GPP, RECO, NEE and spreads) of
  random land cells of the cube, one request after another, for SECONDS; latency per request, p50 and p99;
- bbox total: ``/flux/bbox?aggregate=total`` over 5 x 5 deg for the whole year, sequentially, REPEATS times.
The clients run in this process (asyncio, one keep-alive connection each) on the same 2 cores as the server, so
they take CPU from it.

    python bench/service_latency.py --cubes tamrl_demo [--clients 32] [--seconds 30]
"""

import argparse
import asyncio
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import xarray as xr

BBOX_5X5 = "7.5,45,12.5,50"
REPEATS = 5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def land_points(cubes: Path, n: int, seed: int = 0) -> list[tuple[float, float]]:
    ds = xr.open_zarr(cubes / "demo.zarr")
    i, j = np.nonzero(ds.land_mask.values == 1)
    pick = np.random.default_rng(seed).choice(len(i), n)
    return [(float(ds.lat[i[k]]), float(ds.lon[j[k]])) for k in pick]


async def client(port: int, points: list, until: float, latencies: list, errors: list) -> None:
    """One keep-alive HTTP/1.1 connection asking for points one after another until ``until``.

    A minimal client (asyncio streams, no HTTP library): httpx spends more CPU per request than the server does,
    and here the clients share the server's 2 cores.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    k = 0
    try:
        while time.perf_counter() < until:
            lat, lon = points[k % len(points)]
            k += 1
            started = time.perf_counter()
            writer.write(f"GET /flux?lat={lat}&lon={lon} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(next(line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
                         .split(b":")[1])  # fmt: skip
            body = await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            if not head.startswith(b"HTTP/1.1 200") or not body.endswith(b"}"):
                errors.append(head.split(b"\r\n")[0].decode())
    finally:
        writer.close()


async def point_load(port: int, points: list, clients: int, seconds: float) -> tuple[list, list]:
    latencies: list[float] = []
    errors: list[int] = []
    until = time.perf_counter() + seconds
    shares = [points[c::clients] for c in range(clients)]
    await asyncio.gather(*(client(port, shares[c], until, latencies, errors) for c in range(clients)))
    return latencies, errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cubes", type=Path, default=Path("tamrl_demo"))
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=30)
    args = parser.parse_args()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "service.cli", "serve", "--cubes", str(args.cubes), "--port",
                               str(port), "--workers", "0"], stdout=subprocess.DEVNULL)  # fmt: skip
    try:
        for _ in range(100):
            try:
                httpx.get(f"{base}/cubes", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        points = land_points(args.cubes, 5000)
        asyncio.run(point_load(port, points[:200], 4, 3))  # warm-up: imports, first chunk reads
        latencies, errors = asyncio.run(point_load(port, points, args.clients, args.seconds))
        ms = np.array(latencies) * 1000
        print(f"point queries (one year, 3 fluxes + spreads), {args.clients} concurrent clients, {args.seconds:.0f} "
              f"s: {len(ms):,} requests, {len(ms) / args.seconds:,.0f} req/s, {len(errors)} errors; latency p50 "
              f"{np.percentile(ms, 50):.1f} ms, p99 {np.percentile(ms, 99):.1f} ms (target p50 < 20, p99 < 100)")
        seconds = []
        for _ in range(REPEATS):
            started = time.perf_counter()
            response = httpx.get(f"{base}/flux/bbox", params={"bbox": BBOX_5X5, "aggregate": "total"}, timeout=120)
            seconds.append(time.perf_counter() - started)
            response.raise_for_status()
        total = response.json()["variables"]["GPP"]["value"]
        print(f"bbox total over {BBOX_5X5} for the year ({response.json()['land_cells']:,} land cells x 365 days): "
              f"median {np.median(seconds) * 1000:.0f} ms, max {max(seconds) * 1000:.0f} ms over {REPEATS} runs "
              f"(GPP {total:.1f} Tg C)")  # fmt: skip
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
