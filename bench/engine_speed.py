"""Benchmark: engine efficiency = end-to-end pixel-days/s divided by the bare model's pixel-days/s.

End to end: `jobs.engine.upscale` on the demo's synthetic drivers (Zarr) for a region of at least 10,000 land
pixels and one year, WORKERS single-threaded workers, drivers read to cube written. Bare model:
`Predictor.predict_arrays` on one tile's features already in memory (the same 90 spin-up + 365 days, the same support
sets, members and precision) on one torch thread, times WORKERS: what the workers would do if they did nothing but
run the model. (One process with 2 threads is slower than that: an LSTM step parallelises poorly.) Both count the
365 output days per pixel. Target: a ratio of 0.7 or more.

    python bench/engine_speed.py [--members 10] [--precision float32] [--out runs/bench_engine]
"""

import argparse
import shutil
import time
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import torch

from jobs import engine
from jobs.cli import DEMO_BBOX, demo_drivers
from jobs.engine import SPINUP_DAYS, run_dates, upscale
from jobs.tiles import plan_tiles
from tamrl.checkpoint import file_hash, resolve

ROOT = Path(__file__).resolve().parents[1]
REGION = (5.0, 47.5, 10.0, 52.5)  # 100 x 100 cells of the demo region, chunk-aligned
WORKERS = 2


def bare_rate(
    checkpoint: Path, drivers: Path, members: int, precision: str, first: date, last: date
) -> tuple[float, int]:
    """Pixel-days/s of predict_arrays alone on one 50 x 50 tile's in-memory features, one thread (median of 3 runs)
    times WORKERS."""
    job = engine.TileJob(checkpoint=str(checkpoint), sha256=file_hash(checkpoint), members=members, precision=precision,
                         device="cpu", drivers=(str(drivers),), accumulations=("auto",), bbox=REGION, start=first,
                         end=last, support_years=(last.year,))  # fmt: skip
    tile = next(t for t in plan_tiles(REGION, 50, 50)[1])
    predictor = engine.cached_predictor(job.checkpoint, job.sha256, members, precision)
    ii, _, x, x_support, statics = engine.tile_features(tile, job, predictor.fs)
    run = run_dates(first, last)
    torch.set_num_threads(1)
    predictor.predict_arrays(x[:64], statics[:64], x_support[:64])  # warm-up
    seconds = []
    for _ in range(3):
        started = time.perf_counter()
        predictor.predict_arrays(x, statics, x_support)
        seconds.append(time.perf_counter() - started)
    return WORKERS * len(ii) * len(run) / float(np.median(seconds)), len(ii)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=10)
    parser.add_argument("--precision", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_engine")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    first, last = date(2019, 1, 1), date(2019, 12, 31)
    drivers = demo_drivers(args.out / "drivers.zarr", str(first - timedelta(days=SPINUP_DAYS)), str(last))
    assert DEMO_BBOX[0] <= REGION[0] and REGION[2] <= DEMO_BBOX[2]
    checkpoint = resolve("default")
    bare, pixels = bare_rate(checkpoint, drivers, args.members, args.precision, first, last)
    cube = args.out / "cube.zarr"
    shutil.rmtree(cube, ignore_errors=True)
    # tiles of one 50 x 50 chunk, so both workers have work (4 tiles)
    summary = upscale(checkpoint, [str(drivers)], REGION, first, last, cube, workers=WORKERS, members=args.members,
                      precision=args.precision, tile_chunks=1, progress=False)
    print(summary)
    e2e = summary.pixel_days_per_second
    print(f"members {args.members}, {args.precision}; bare model {bare:,.0f} pixel-days/s (one tile, {pixels} "
          f"pixels, 1 thread x {WORKERS}); "
          f"end to end {e2e:,.0f} pixel-days/s on {summary.pixels_computed:,} land pixels x {summary.days} days; "
          f"efficiency {e2e / bare:.2f} (target >= 0.7)")
    global_days = 5_758_230 * 365
    print(f"projected global year (5,758,230 land pixels x 365 days) at the end-to-end rate on this machine: "
          f"{global_days / e2e / 3600:,.1f} hours with {args.members} members")


if __name__ == "__main__":
    main()
