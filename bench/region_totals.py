"""Benchmark: totals over a country-sized polygon (10 x 10 deg, 1,000 vertices) for a year of daily data.

On the demo cube (run ``tamrl demo`` first): a star-shaped polygon of 1,000 vertices spanning the cube's 10 x 10 deg
(about 25,000 of its 40,000 cells), totalled over 2019 for GPP, RECO and NEE with the members' spread and the
calibrated range. Timed twice:
- in process: `jobs.regions` + `jobs.totals` + `jobs.reports`, as ``tamrl totals`` runs them (first call, then the
  median of REPEATS);
- over HTTP: ``POST /flux/region`` against the real server (``tamrl serve``), for freq=all and freq=month, median of
  REPEATS requests one after another.

    python bench/region_totals.py --cubes tamrl_demo
"""

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import httpx
from load import start_server

from jobs.regions import cell_weights, parse_regions
from jobs.reports import report, to_json
from jobs.totals import CubeSource, TotalsQuery, totals

REPEATS = 5
VERTICES = 1_000
CENTRE = (10.0, 47.5)  # the demo cube's centre (lon, lat)


def country(vertices: int = VERTICES) -> dict:
    """A star-shaped polygon within the demo cube: radius 3.5..4.9 deg, wobbling 7 times round."""
    ring = []
    for k in range(vertices):
        angle = 2 * math.pi * k / vertices
        radius = 4.2 + 0.7 * math.sin(7 * angle)
        ring.append([CENTRE[0] + radius * math.cos(angle), CENTRE[1] + radius * math.sin(angle)])
    ring.append(ring[0])
    geometry = {"type": "Polygon", "coordinates": [ring]}
    return {"type": "Feature", "id": "country", "properties": {}, "geometry": geometry}


def in_process(cube: str, body: bytes, freq: str) -> tuple[float, dict]:
    started = time.perf_counter()
    source = CubeSource.open(cube)
    regions = parse_regions(body)
    query = TotalsQuery(freq=freq)
    results = totals(source, regions, [cell_weights(r) for r in regions], query, 10**9)
    document = report(source, query, results)
    to_json(document)
    return time.perf_counter() - started, document


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cubes", type=Path, default=Path("tamrl_demo"))
    args = parser.parse_args()
    cube = str(args.cubes / "demo.zarr")
    body = json.dumps(country()).encode()
    first, document = in_process(cube, body, "all")
    feature = document["features"][0]
    print(f"polygon: {VERTICES} vertices, {feature['area_km2']:,.0f} km2, {feature['cells']:,} cells "
          f"({feature['computed_cells']:,} computed), {feature['rows'][0]['days']} days")  # fmt: skip
    gpp = feature["rows"][0]["GPP"]
    print(f"GPP {gpp['total']:.2f} Tg C (members' std {gpp['total_std']:.2f}, 5-95% {gpp['total_p05']:.2f}.."
          f"{gpp['total_p95']:.2f}, calibrated {gpp.get('total_cal_p05', math.nan):.2f}.."
          f"{gpp.get('total_cal_p95', math.nan):.2f})")  # fmt: skip
    for freq in ("all", "month"):
        times = [in_process(cube, body, freq)[0] for _ in range(REPEATS)]
        print(f"in process, freq={freq}: first {first:.2f} s, median of {REPEATS} {statistics.median(times):.2f} s")
    server, port = start_server(["--cubes", str(args.cubes), "--workers", "0"])
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            for freq in ("all", "month"):
                times = []
                for _ in range(REPEATS):
                    started = time.perf_counter()
                    response = client.post("/flux/region", content=body, params={"freq": freq})
                    response.raise_for_status()
                    times.append(time.perf_counter() - started)
                print(f"POST /flux/region freq={freq}: median {statistics.median(times):.2f} s, "
                      f"max {max(times):.2f} s over {REPEATS}")  # fmt: skip
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
