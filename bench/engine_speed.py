"""Benchmark: engine efficiency, end to end against the bare model, for a 4 x 4 deg job and for the demo.

End to end: `jobs.engine.upscale` on the demo's synthetic drivers (Zarr), one year, WORKERS single-threaded
workers, from the cluster's start to the cube and its quick-look written. Two measures of the bare model:

- in the run: the time the tasks spent in `Predictor.ensemble_members`, per task slot, over the wall time
  (`Summary.efficiency`);
- alone: `ensemble_members` on one tile's features already in memory (the same spin-up, support sets, members and
  precision) on one torch thread in this process, times WORKERS: what the workers would do if they did nothing but
  run the model, without contending for memory bandwidth; the ratio is end-to-end pixel-days/s over that rate.

Target: at least 0.85 on both jobs.

    python bench/engine_speed.py [--out runs/bench_engine]
"""

import argparse
import shutil
import time
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import torch

from jobs.cli import DEMO_BBOX, DEMO_PRECISION, DEMO_TILE_CHUNKS, demo_drivers
from jobs.compute import SPINUP_DAYS, Part, cached_predictor, part_features, run_dates
from jobs.engine import Summary, upscale
from jobs.prepare import prepare_job
from jobs.request import JobRequest, Resources
from jobs.tiles import plan_tiles

ROOT = Path(__file__).resolve().parents[1]
WORKERS = 2
YEAR = 2019
JOBS = {  # name: bbox, precision, tile_chunks (None: the default 2 x 2 chunks)
    "4x4 deg": ((6.0, 46.0, 10.0, 50.0), "float32", None),
    "demo": (DEMO_BBOX, DEMO_PRECISION, DEMO_TILE_CHUNKS),
}


def bare_rate(request: JobRequest, resources: Resources) -> float:
    """Pixel-days/s of ensemble_members alone on the job's first land tile's features, one thread (median of 3 runs),
    times WORKERS."""
    job = prepare_job(request, resources).job
    predictor = cached_predictor(job.checkpoint, job.sha256, job.members, job.precision)
    for tile in plan_tiles(request.bbox, 50, 50)[1]:
        ii, _, x, x_support, statics = part_features(Part(tile), job, predictor.fs)
        if len(ii):
            break
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    predictor.ensemble_members(x[:64], statics[:64], x_support[:64])  # warm-up
    seconds = []
    for _ in range(3):
        started = time.perf_counter()
        predictor.ensemble_members(x, statics, x_support)
        seconds.append(time.perf_counter() - started)
    torch.set_num_threads(threads)
    return WORKERS * len(ii) * len(run_dates(job.start, job.end)) / float(np.median(seconds))


def run_job(name: str, drivers: Path, out: Path) -> tuple[Summary, float]:
    bbox, precision, tile_chunks = JOBS[name]
    request = JobRequest(bbox=bbox, start=date(YEAR, 1, 1), end=date(YEAR, 12, 31), precision=precision)
    cube = out / f"{name.replace(' ', '_')}.zarr"
    shutil.rmtree(cube, ignore_errors=True)
    resources = Resources(drivers=(str(drivers),), out=str(cube), tile_chunks=tile_chunks)
    summary = upscale(request, resources, workers=WORKERS, progress=False)
    return summary, bare_rate(request, resources)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_engine")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    first = date(YEAR, 1, 1) - timedelta(days=SPINUP_DAYS)
    drivers = demo_drivers(args.out / "drivers.zarr", str(first), f"{YEAR}-12-31")
    for name in JOBS:
        summary, bare = run_job(name, drivers, args.out)
        # the bare rate counts the spin-up days too, as the model runs them; so does the end-to-end rate here
        e2e = summary.pixels_computed * (summary.days + SPINUP_DAYS) / summary.seconds
        print(f"{name}: {summary}")
        print(f"{name}: efficiency in the run {summary.efficiency:.2f}; end to end {e2e:,.0f} model pixel-days/s "
              f"against the bare model alone {bare:,.0f} (1 thread x {WORKERS}): {e2e / bare:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
