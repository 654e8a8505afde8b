"""Write tests/data/demo_tile_reference.npz: a demo tile's fluxes as the engine computed them before the job request
and the split into parts, for `test_a_demo_tile_matches_the_engine_before_the_refactor`.

The job: the shipped default checkpoint (2 members) over the demo tile 7.5-10 E, 47.5-50 N on the demo's
synthetic drivers (seed 0), June 2019, support year 2019, in one process. The file keeps every variable of
jobs.outputs at every 5th row and column of the tile (100 cells, water NaN) for the 30 days, as float32.

The committed file was written by running this script with the engine of commit 092df85 on the path
(``git worktree add ../ref 092df85 && PYTHONPATH=../ref python tests/make_demo_tile_reference.py old``); on the
same machine the current engine (``python tests/make_demo_tile_reference.py``) writes the same bits. Across
machines the bits differ in the last places (the CPU's float kernels), hence the test's tolerance.
"""

import sys
import tempfile
from pathlib import Path

import numpy as np
import xarray as xr

from jobs.synthetic import synthetic_drivers

TILE = (7.5, 47.5, 10.0, 50.0)
PERIOD = ("2019-06-01", "2019-06-30")
SAMPLE = (slice(None), slice(2, None, 5), slice(2, None, 5))  # (time, lat, lon)
VARIABLES = ("GPP", "RECO", "NEE", "GPP_std", "RECO_std", "NEE_std")
OUT = Path(__file__).parent / "data" / "demo_tile_reference.npz"


def compute(folder: Path, old_engine: bool) -> xr.Dataset:
    """The tile's cube, by the engine on the path (``old_engine``: the signature before commit 7904508)."""
    drivers = folder / "drivers.zarr"
    synthetic_drivers(TILE, "2019-01-01", "2019-12-31", seed=0).to_zarr(drivers, zarr_format=3, consolidated=True)
    if old_engine:
        from jobs.engine import upscale
        from tamrl.checkpoint import resolve

        upscale(resolve("modis_met_context"), str(drivers), TILE, *PERIOD, folder / "c.zarr", members=2,
                support_years=[2019], workers=0, progress=False)  # fmt: skip
    else:
        sys.path.insert(0, str(Path(__file__).parent))
        from conftest import upscale_job

        upscale_job("default", drivers, TILE, *PERIOD, folder / "c.zarr", members=2, support_years=[2019],
                    workers=0, progress=False)  # fmt: skip
    return xr.open_zarr(folder / "c.zarr")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        ds = compute(Path(tmp), old_engine=sys.argv[1:] == ["old"])
        np.savez_compressed(OUT, **{name: ds[name].values[SAMPLE].astype(np.float32) for name in VARIABLES})
    print(f"wrote {OUT} ({OUT.stat().st_size:,} bytes)")
