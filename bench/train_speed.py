"""Benchmark: wall time of a single-seed TAM-RL training on the real sites (target: 15 minutes or less).

Trains on every modis_met site except the documented test hold-out (about 160 sites, of which 20% are used
for early stopping), on this machine's CPU (or a GPU when present), and prints the figures recorded in
docs/BENCHMARKS.md.

    python bench/train_speed.py [--feature-set modis_met] [--out runs/bench_speed.pt]
"""

import argparse
import logging
import os
import platform
import time
from pathlib import Path

import torch

from tamrl.config import load_config
from tamrl.data import load_fluxnet, read_sites_table, select_sites
from tamrl.train import train

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--feature-set", default="modis_met")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_speed.pt")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("tamrl.data").setLevel(logging.ERROR)

    started = time.perf_counter()
    ids = select_sites(list(read_sites_table(DATA / "fluxnet2015").index),
                       exclude_file=ROOT / "docs" / "validation" / "test_sites.txt")
    sites = load_fluxnet(DATA / "fluxnet2015", ids, DATA / "modis")
    loaded = time.perf_counter()
    bundle = train(load_config(model="tamrl", feature_set=args.feature_set, seeds=1), sites, args.out,
                   progress=False)
    done = time.perf_counter()
    epochs = {}
    for h in bundle["history"][0]:
        epochs[h["stage"]] = epochs.get(h["stage"], 0) + 1
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
          f"{torch.__version__}, device {'cuda' if torch.cuda.is_available() else 'cpu'}")
    print(f"sites: {len(sites)} loaded, {len(bundle['training_sites'])} fit")
    print(f"epochs: {epochs}")
    print(f"data loading: {loaded - started:.0f} s; training: {done - loaded:.0f} s; "
          f"total {done - started:.0f} s (target <= 900 s)")


if __name__ == "__main__":
    main()
