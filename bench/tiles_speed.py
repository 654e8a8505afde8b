"""Benchmark: map tiles and day maps on the demo cube (run ``tamrl demo`` first), in-process through the HTTP app.

- one-day tiles: every tile at zoom 6, 7 and 8 over the cube, each on DAYS random days (GPP);
- month tiles: the same tiles, each the mean of a random calendar month (GPP);
- a one-day read of the 10 x 10 deg region (the whole demo cube, 200 x 200 cells): `OpenCube.window` of GPP, and
  for comparison ``GET /flux/bbox`` of one day (GPP, RECO, NEE and spreads as JSON).

Each runs twice: ``cold``, with no cache of decoded chunks (``--cache-mb 0``: every request decodes its chunks), and
``warm``, with the service's default cache after one pass over the same requests. Requests run one after another.

    python bench/tiles_speed.py --cubes tamrl_demo
"""

import argparse
import time
from pathlib import Path

import morecantile
import numpy as np
import pandas as pd
from fastapi.testclient import TestClient

from service.api import create_app
from service.settings import Settings

ZOOMS = (6, 7, 8)
DAYS = 4
TMS = morecantile.tms.get("WebMercatorQuad")


def timed(client: TestClient, requests: list[tuple[str, dict]]) -> np.ndarray:
    """Milliseconds per request, each checked to answer 200."""
    ms = []
    for url, params in requests:
        started = time.perf_counter()
        response = client.get(url, params=params)
        ms.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, response.text
    return np.array(ms)


def tile_requests(bbox: list[float], params: list[dict]) -> list[tuple[str, dict]]:
    tiles = [t for z in ZOOMS for t in TMS.tiles(*bbox, [z])]
    return [(f"/tiles/{t.z}/{t.x}/{t.y}.png", {"variable": "GPP", **p}) for t in tiles for p in params]


def report(what: str, ms: np.ndarray, target: float) -> None:
    print(f"{what}: n={len(ms)}, p50 {np.percentile(ms, 50):.1f} ms, p95 {np.percentile(ms, 95):.1f} ms "
          f"(target p50 <= {target:.0f} ms)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cubes", type=Path, default=Path("tamrl_demo"))
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    for label, cache_mb in (("cold", 0), ("warm", 1024)):
        with TestClient(create_app(Settings(cubes=str(args.cubes), workers=0, cache_mb=cache_mb))) as client:
            (info,) = client.get("/cubes").json()
            days = pd.date_range(info["start"], info["end"]).strftime("%Y-%m-%d")
            months = pd.period_range(info["start"], info["end"], freq="M")
            one_day = tile_requests(info["bbox"], [{"date": d} for d in rng.choice(days, DAYS)])
            month = [{"start": f"{m.start_time:%Y-%m-%d}", "end": f"{m.end_time:%Y-%m-%d}"}
                     for m in rng.choice(months, DAYS)]  # fmt: skip
            month_tiles = tile_requests(info["bbox"], month)
            region = [("/flux/bbox", {"bbox": ",".join(map(str, info["bbox"])), "start": d, "end": d})
                      for d in rng.choice(days, 10)]  # fmt: skip
            cube = client.app.state.catalog.get(info["name"])
            cube.prepare()
            index = [int(i) for i in rng.choice(len(days), 10)]
            if label == "warm":
                timed(client, one_day + month_tiles + region)
                _ = [cube.window("GPP", slice(i, i + 1), slice(0, 200), slice(0, 200)) for i in index]
            report(f"{label} one-day tile z={ZOOMS}", timed(client, one_day), 50)
            report(f"{label} month-mean tile z={ZOOMS}", timed(client, month_tiles), 300)
            reads = []
            for i in index:
                started = time.perf_counter()
                cube.window("GPP", slice(i, i + 1), slice(0, 200), slice(0, 200))
                reads.append((time.perf_counter() - started) * 1000)
            report(f"{label} one-day read of 10 x 10 deg (200 x 200 cells, GPP)", np.array(reads), 20)
            report(f"{label} GET /flux/bbox one day of 10 x 10 deg (6 variables, JSON)", timed(client, region), 1000)


if __name__ == "__main__":
    main()
