"""A PNG quick-look of a finished cube: its mean daily GPP over the period, for a first look without xarray.

The map is written beside a local cube (``<cube>.png``) or, for a cube at a URL (``s3://...``), inside it
(``<cube>/quicklook.png``). Cells that were not computed (water, ice, outside the bbox) stay blank. The title names
the period and the checkpoint; a cube made from synthetic drivers says so on the map.
"""

import json
import warnings

import fsspec
import numpy as np
import xarray as xr
from fsspec.implementations.local import LocalFileSystem
from matplotlib import colormaps
from matplotlib.figure import Figure

from tamrl.features import TARGET_UNITS

QUICKLOOK_NAME = "quicklook.png"  # inside a cube at a URL
DPI = 110


def quicklook_path(url: str) -> str:
    """Where the quick-look of the cube at ``url`` goes: ``<url>.png`` for a local path, else inside the cube."""
    fs, root = fsspec.core.url_to_fs(url)
    return f"{root.rstrip('/')}.png" if isinstance(fs, LocalFileSystem) else f"{url.rstrip('/')}/{QUICKLOOK_NAME}"


def write_quicklook(url: str) -> str:
    """Draw the mean GPP of the cube at ``url`` over its period and write it as PNG; returns where it went."""
    ds = xr.open_zarr(url)
    spec = json.loads(ds.attrs["tamrl_spec"])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Mean of empty slice", category=RuntimeWarning)
        gpp = ds.GPP.mean("time").values  # NaN where never computed
    lat_edges, lon_edges = ds.lat_bnds.values, ds.lon_bnds.values

    fig = Figure(figsize=(8, 6.5), dpi=DPI)
    ax = fig.add_subplot()
    cmap = colormaps["YlGn"].copy()
    cmap.set_bad(alpha=0)  # NaN cells stay blank
    image = ax.imshow(
        np.ma.masked_invalid(gpp), cmap=cmap, interpolation="nearest", origin="upper",
        extent=(lon_edges[0, 0], lon_edges[-1, 1], lat_edges[-1, 1], lat_edges[0, 0]), vmin=0,
    )  # fmt: skip
    ax.set_aspect(1 / np.cos(np.radians(float(ds.lat.mean()))))
    ax.set_xlabel("longitude [deg E]")
    ax.set_ylabel("latitude [deg N]")
    fig.colorbar(image, ax=ax, shrink=0.8, label=f"mean GPP [{TARGET_UNITS} of carbon]")
    ax.set_title(
        f"TAM-RL mean daily GPP, {spec['start']} to {spec['end']}\n"
        f"checkpoint {spec['checkpoint']} (sha256 {spec['checkpoint_sha256'][:12]}), "
        f"{spec['ensemble_size']} members",
        fontsize=10,
    )
    if spec["synthetic"]:
        ax.text(
            0.5,
            0.02,
            "synthetic drivers: not real fluxes",
            transform=ax.transAxes,
            ha="center",
            va="bottom",
            color="darkred",
            fontsize=12,
            fontweight="bold",
            bbox={"facecolor": "white", "alpha": 0.8},
        )
    target = quicklook_path(url)
    with fsspec.open(target, "wb") as f:
        fig.savefig(f, format="png", bbox_inches="tight")
    return target
