"""Benchmark: point-query latency under 32 concurrent clients, and the bbox total of a 5 x 5 deg year.

Starts the real server (``tamrl serve``) on a free loopback port over a folder holding the demo cube (run
``tamrl demo`` first), then:
- point queries: CLIENTS concurrent clients, each asking for the one-year series (GPP, RECO, NEE and spreads) of
  random land cells of the cube, one request after another, for SECONDS; latency per request, p50 and p99;
- bbox total: ``/flux/bbox?aggregate=total`` over 5 x 5 deg for the whole year, sequentially, REPEATS times.
The clients (`bench/load.py`) run in this process on the same 2 cores as the server, so they take CPU from it.

    python bench/service_latency.py --cubes tamrl_demo [--clients 32] [--seconds 30]
"""

import argparse
import time
from pathlib import Path

import httpx
import numpy as np
import xarray as xr
from load import run_load, start_server

BBOX_5X5 = "7.5,45,12.5,50"
REPEATS = 5


def land_points(cubes: Path, n: int, seed: int = 0) -> list[tuple[float, float]]:
    ds = xr.open_zarr(cubes / "demo.zarr")
    i, j = np.nonzero(ds.land_mask.values == 1)
    pick = np.random.default_rng(seed).choice(len(i), n)
    return [(float(ds.lat[i[k]]), float(ds.lon[j[k]])) for k in pick]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cubes", type=Path, default=Path("tamrl_demo"))
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=30)
    args = parser.parse_args()
    server, port = start_server(["--cubes", str(args.cubes), "--workers", "0"])
    base = f"http://127.0.0.1:{port}"
    try:
        paths = [("point", f"/flux?lat={lat}&lon={lon}") for lat, lon in land_points(args.cubes, 5000)]
        run_load(port, paths[:200], 4, 3)  # warm-up: imports, first chunk reads
        load = run_load(port, paths, args.clients, args.seconds)
        ms, errors = np.array(load.latencies["point"]) * 1000, load.errors
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
        cells = response.json()["computed_cells"]
        print(f"bbox total over {BBOX_5X5} for the year ({cells:,} computed cells x 365 days): "
              f"median {np.median(seconds) * 1000:.0f} ms, max {max(seconds) * 1000:.0f} ms over {REPEATS} runs "
              f"(GPP {total:.1f} Tg C)")  # fmt: skip
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
