"""Worst-case load: rounds of 16 concurrent whole-cube totals on the demo cube, with and without admission control.

Starts ``tamrl serve`` over the demo cube (run ``tamrl demo`` first) and sends ROUNDS rounds of 16 concurrent
``GET /flux/bbox?bbox=5,42.5,15,52.5&aggregate=total`` (every cell and day: 43.8 million values each), then the same
with the value budget so large that every request is admitted at once.
Prints the answers, their latency, and the server's RSS before and at its peak (sampled every 50 ms). Pass: only
200 and 503 (with Retry-After), no request over 60 s, and the peak under the ceiling of docs/RELIABILITY.md.

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
CONCURRENT = 16
UNLIMITED = {"TAMRL_MAX_CONCURRENT_VALUES": str(10**12), "TAMRL_ADMISSION_QUEUE": "64"}


async def burst(base: str) -> list[tuple[int, float, str | None]]:
    """CONCURRENT requests at once: (status, seconds, Retry-After) each."""

    async def one(client: httpx.AsyncClient) -> tuple[int, float, str | None]:
        started = time.perf_counter()
        response = await client.get(WORST)
        return response.status_code, time.perf_counter() - started, response.headers.get("retry-after")

    async with httpx.AsyncClient(base_url=base, timeout=60) as client:
        return await asyncio.gather(*(one(client) for _ in range(CONCURRENT)))


def measure(demo: Path, rounds: int, env: dict[str, str]) -> None:
    """Start a server with ``env``, warm it up, send ``rounds`` bursts and print what came back."""
    with tempfile.TemporaryDirectory(prefix="tamrl-hostile-") as folder:
        (Path(folder) / "demo.zarr").symlink_to((demo / "demo.zarr").resolve())
        server, port = start_server(["--cubes", folder, "--workers", "0"], env)
        base, process = f"http://127.0.0.1:{port}", psutil.Process(server.pid)
        try:
            httpx.get(f"{base}{WORST}", timeout=120).raise_for_status()  # opens the cube, imports the readers
            before, peak, done = process.memory_info().rss, [0], threading.Event()

            def sample() -> None:
                while not done.is_set():
                    peak[0] = max(peak[0], process.memory_info().rss)
                    time.sleep(0.05)

            sampler = threading.Thread(target=sample)
            sampler.start()
            answers = [a for _ in range(rounds) for a in asyncio.run(burst(base))]
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
    print(f"{args.rounds} rounds of {CONCURRENT} concurrent {WORST}")
    print("admission control (the defaults):")
    measure(args.demo, args.rounds, {})
    print("every request admitted at once:")
    measure(args.demo, args.rounds, UNLIMITED)


if __name__ == "__main__":
    main()
