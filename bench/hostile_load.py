"""Worst-case load: rounds of 16 concurrent heavy requests on the demo cube, with and without admission control.

Starts ``tamrl serve`` over the demo cube (run ``tamrl demo`` first) and, for each heavy answer (a whole-cube total,
``GET /flux/bbox?bbox=5,42.5,15,52.5&aggregate=total``: every cell and day, 43.8 million values; the largest JSON and
NetCDF subsets the default limit allows; a whole-cube map), sends ROUNDS rounds of 16 concurrent requests to a fresh
server with the default settings; then the totals again with the value budget so large that every request is
admitted at once. Prints the answers, their latency, and the server's RSS before and at its peak (sampled every
50 ms). Pass: only 200 and 503 (with Retry-After), no request over 60 s, and the peak under the ceiling of
docs/RELIABILITY.md.

    python bench/hostile_load.py --demo tamrl_demo [--rounds 3]
"""

import argparse
import asyncio
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import psutil
from load import start_server

WORST = "/flux/bbox?bbox=5,42.5,15,52.5&aggregate=total"
SUBSET = "/flux/bbox?bbox=7.5,45,10,47.5&start=2019-03-01&end=2019-07-11"  # 2,500 cells x 133 days x 6: 1,995,000
HEAVY = {"whole-cube total": WORST, "JSON subset": SUBSET, "NetCDF subset": f"{SUBSET}&format=netcdf",
         "whole-cube map": "/flux/map.png?bbox=5,42.5,15,52.5"}  # fmt: skip
CONCURRENT = 16
UNLIMITED = {"TAMRL_MAX_CONCURRENT_VALUES": str(10**12), "TAMRL_ADMISSION_QUEUE": "64"}


async def burst(base: str, path: str) -> list[tuple[int, float, str | None]]:
    """CONCURRENT requests at once: (status, seconds, Retry-After) each."""

    async def one(client: httpx.AsyncClient) -> tuple[int, float, str | None]:
        started = time.perf_counter()
        response = await client.get(path)
        return response.status_code, time.perf_counter() - started, response.headers.get("retry-after")

    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        return await asyncio.gather(*(one(client) for _ in range(CONCURRENT)))


def measure(demo: Path, path: str, rounds: int, env: dict[str, str]) -> None:
    """Start a server with ``env``, warm it up, send ``rounds`` bursts of ``path`` and print what came back."""
    with tempfile.TemporaryDirectory(prefix="tamrl-hostile-") as folder:
        (Path(folder) / "demo.zarr").symlink_to((demo / "demo.zarr").resolve())
        server, port = start_server(["--cubes", folder, "--workers", "0"], env)
        base, process = f"http://127.0.0.1:{port}", psutil.Process(server.pid)
        try:
            httpx.get(f"{base}{path}", timeout=120).raise_for_status()  # opens the cube, imports the readers
            before, peak, done = process.memory_info().rss, [0], threading.Event()

            def sample() -> None:
                while not done.is_set():
                    peak[0] = max(peak[0], process.memory_info().rss)
                    time.sleep(0.05)

            sampler = threading.Thread(target=sample)
            sampler.start()
            answers = [a for _ in range(rounds) for a in asyncio.run(burst(base, path))]
            done.set()
            sampler.join()
        finally:
            server.terminate()
            server.wait(30)
    for status in sorted({s for s, _, _ in answers}):
        seconds = np.array([t for s, t, _ in answers if s == status])
        retry = {r for s, _, r in answers if s == status}
        print(f"  {status}: {len(seconds)} answers, median {np.median(seconds):.1f} s, max {seconds.max():.1f} s, "
              f"Retry-After {retry}")  # fmt: skip
    print(f"  RSS before {before / 1e6:,.0f} MB, peak {peak[0] / 1e6:,.0f} MB (+{(peak[0] - before) / 1e6:,.0f} MB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", type=Path, default=Path("tamrl_demo"))
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    for kind, path in HEAVY.items():
        print(f"{kind}, {args.rounds} rounds of {CONCURRENT} concurrent {path}, admission control (the defaults):")
        measure(args.demo, path, args.rounds, {})
    print(f"whole-cube total, {args.rounds} rounds of {CONCURRENT}, every request admitted at once:")
    measure(args.demo, WORST, args.rounds, UNLIMITED)


if __name__ == "__main__":
    main()
