"""Benchmark: peak memory is bounded by the tile, not the region.

Runs `jobs.engine.upscale` in a fresh process (tiles in-process, ``workers=0``, so one process holds everything)
on the demo's synthetic drivers for a region and for one 4 times larger, same tiles (50 x 50 cells), one year, and
reports each process's peak RSS. Target: the larger region raises peak RSS by less than 10%.

    python bench/engine_memory.py [--members 10] [--precision bfloat16] [--out runs/bench_memory]
"""

import argparse
import json
import resource
import shutil
import subprocess
import sys
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REGIONS = {"small": (5.0, 50.0, 10.0, 52.5), "4x": (5.0, 47.5, 15.0, 52.5)}  # 2 x 1 and 4 x 2 tiles of 2.5 deg


def run_one(region: str, members: int, precision: str, out: Path) -> dict:
    """Upscale ``region`` in this process and return what it did and its peak RSS (MB)."""
    from jobs.engine import upscale
    from jobs.request import JobRequest, Resources

    cube = out / f"{region}.zarr"
    shutil.rmtree(cube, ignore_errors=True)
    request = JobRequest(bbox=REGIONS[region], start="2019-01-01", end="2019-12-31", members=members,
                         precision=precision)  # fmt: skip
    resources = Resources(drivers=(str(out / "drivers.zarr"),), out=str(cube), tile_chunks=1)
    summary = upscale(request, resources, workers=0, progress=False)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"region": region, "bbox": REGIONS[region], "land_pixels": summary.land_pixels, "tiles": summary.tiles,
            "seconds": round(summary.seconds, 1), "peak_rss_mb": round(peak_mb)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=10)
    parser.add_argument("--precision", default="bfloat16", choices=["float32", "bfloat16"])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_memory")
    parser.add_argument("--region", choices=list(REGIONS), help=argparse.SUPPRESS)  # the child process's part
    args = parser.parse_args()
    if args.region:
        print(json.dumps(run_one(args.region, args.members, args.precision, args.out)))
        return
    from jobs.cli import demo_drivers
    from jobs.compute import SPINUP_DAYS

    args.out.mkdir(parents=True, exist_ok=True)
    demo_drivers(args.out / "drivers.zarr", str(date(2019, 1, 1) - timedelta(days=SPINUP_DAYS)), "2019-12-31")
    results = []
    for region in REGIONS:
        command = [sys.executable, __file__, "--region", region, "--members", str(args.members),
                   "--precision", args.precision, "--out", str(args.out)]  # fmt: skip
        line = subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        results.append(json.loads(line))
        print(results[-1])
    small, large = results
    growth = large["peak_rss_mb"] / small["peak_rss_mb"] - 1
    print(f"{args.members} members, {args.precision}: {large['land_pixels'] / small['land_pixels']:.1f}x the land "
          f"pixels raised peak RSS from {small['peak_rss_mb']} MB to {large['peak_rss_mb']} MB ({growth:+.1%}; "
          "target < +10%)")  # fmt: skip


if __name__ == "__main__":
    main()
