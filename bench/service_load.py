"""Load test: 64 concurrent clients of point and bbox queries for 60 s while a job writes a cube.

Starts ``tamrl serve`` over a copy of the demo folder (the demo cube and its drivers; run ``tamrl demo`` first),
submits an upscaling job (2.5 x 2.5 deg of the demo region for 2019, 2 members in bfloat16, on the service's
LocalCluster), and while it runs drives the server with CLIENTS clients (`bench/load.py`) asking in turn for
one-year point series at random land cells (7 in 8 requests) and the 2019 total of random 0.5 x 0.5 deg boxes (1 in
8). The server's RSS is sampled every second. Pass: zero errors, and the mean RSS of the last 10 s within 10% of the
first 10 s.

    python bench/service_load.py --demo tamrl_demo [--clients 64] [--seconds 60]
"""

import argparse
import shutil
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import psutil
from load import run_load, start_server
from service_latency import land_points

JOB = {"bbox": [10.0, 47.5, 12.5, 50.0], "start": "2019-01-01", "end": "2019-12-31", "output": "load_job",
       "members": 2, "precision": "bfloat16", "support_years": [2019]}  # fmt: skip


def sample_rss(process: psutil.Process, until: float, out: list[tuple[float, float]]) -> None:
    """RSS [MB] of the server and its children (the LocalCluster workers excluded: they are the job) each second."""
    start = time.perf_counter()
    while time.perf_counter() < until:
        out.append((time.perf_counter() - start, process.memory_info().rss / 1e6))
        time.sleep(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", type=Path, default=Path("tamrl_demo"))
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="tamrl-load-"))
    shutil.copytree(args.demo / "demo.zarr", folder / "demo.zarr")
    # the job's cube overlaps the demo cube: queries keep to the default cube (else 409 once the job is done)
    server, port = start_server(["--cubes", str(folder), "--drivers", str(args.demo.resolve() / "drivers.zarr"),
                                 "--workers", "1"], {"TAMRL_DEFAULT_CUBE": "demo"})  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        rng = np.random.default_rng(1)
        points = [("point", f"/flux?lat={lat}&lon={lon}") for lat, lon in land_points(folder, 4000)]
        boxes = []
        for _ in range(500):
            w, s = float(rng.uniform(5, 14.5)), float(rng.uniform(42.5, 52))
            boxes.append(("bbox total", f"/flux/bbox?bbox={w:.2f},{s:.2f},{w + 0.5:.2f},{s + 0.5:.2f}&aggregate=total"))
        paths = [points[i] if i % 8 else boxes[i // 8 % len(boxes)] for i in range(4000)]
        run_load(port, paths[:400], 8, 5)  # warm-up
        location = httpx.post(f"{base}/upscale", json=JOB).headers["location"]
        rss: list[tuple[float, float]] = []
        sampler = threading.Thread(target=sample_rss, args=(psutil.Process(server.pid),
                                                            time.perf_counter() + args.seconds, rss))  # fmt: skip
        sampler.start()
        load = run_load(port, paths, args.clients, args.seconds)
        sampler.join()
        job = httpx.get(f"{base}{location}").json()
        print(f"{args.clients} clients for {args.seconds:.0f} s: {load.requests:,} requests "
              f"({load.requests / args.seconds:,.0f}/s), {len(load.errors)} errors")  # fmt: skip
        for kind, values in load.latencies.items():
            ms = np.array(values) * 1000
            print(f"  {kind}: {len(ms):,} requests, p50 {np.percentile(ms, 50):.1f} ms, p99 {np.percentile(ms, 99):.1f}"
                  f" ms, max {ms.max():.0f} ms")  # fmt: skip
        first = np.mean([m for t, m in rss if t < 10])
        last = np.mean([m for t, m in rss if t >= args.seconds - 10])
        print(f"service RSS: first 10 s {first:.0f} MB, last 10 s {last:.0f} MB ({last / first - 1:+.1%}; target "
              f"within 10%); peak {max(m for _, m in rss):.0f} MB")  # fmt: skip
        print(f"job during the load: {job['state']} {job['error'] or ''}, tiles {job['progress']['tiles_done']} of "
              f"{job['progress']['tiles_total']}")  # fmt: skip
        for error in load.errors[:5]:
            print("  error:", error)
    finally:
        server.terminate()
        server.wait(30)
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
