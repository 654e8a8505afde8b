"""PNG maps of cubes: the quick-look of a finished cube (its mean daily GPP, for a first look without xarray),
and the maps the service draws for a bbox and period (`render_map`).

The map is written beside a local cube (``<cube>.png``) or, for a cube at a URL (``s3://...``), inside it
(``<cube>/quicklook.png``). Cells that were not computed (water, ice, outside the bbox) stay blank. The title names
the period and the checkpoint; a cube made from synthetic drivers says so on the map.
"""

import io
import warnings

import fsspec
import numpy as np
import xarray as xr
from fsspec.implementations.local import LocalFileSystem
from matplotlib import colormaps
from matplotlib.figure import Figure

from jobs.writer import CubeSpec
from tamrl.features import TARGET_UNITS

QUICKLOOK_NAME = "quicklook.png"  # inside a cube at a URL
DPI = 110


def quicklook_path(url: str) -> str:
    """Where the quick-look of the cube at ``url`` goes: ``<url>.png`` for a local path, else inside the cube."""
    fs, root = fsspec.core.url_to_fs(url)
    return f"{root.rstrip('/')}.png" if isinstance(fs, LocalFileSystem) else f"{url.rstrip('/')}/{QUICKLOOK_NAME}"


def write_quicklook(url: str) -> str:
    """Draw the mean GPP of the cube at ``url`` over its period and write it as PNG; returns where it went."""
    png = render_map(xr.open_zarr(url), "GPP")
    target = quicklook_path(url)
    with fsspec.open(target, "wb") as f:
        f.write(png)
    return target


def render_map(ds: xr.Dataset, variable: str) -> bytes:
    """PNG of the mean of ``variable`` over the days of ``ds`` (a cube or a subset of one, with its attributes)."""
    spec = CubeSpec.model_validate_json(ds.attrs["tamrl_spec"])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Mean of empty slice", category=RuntimeWarning)
        values = ds[variable].mean("time").values  # NaN where never computed
    lat_edges, lon_edges = ds.lat_bnds.values, ds.lon_bnds.values
    first, last = (f"{t:%Y-%m-%d}" for t in ds.indexes["time"][[0, -1]])

    fig = Figure(figsize=(8, 6.5), dpi=DPI)
    ax = fig.add_subplot()
    cmap = colormaps["YlGn" if variable.startswith(("GPP", "RECO")) else "RdBu_r"].copy()
    cmap.set_bad(alpha=0)  # NaN cells stay blank
    image = ax.imshow(
        np.ma.masked_invalid(values), cmap=cmap, interpolation="nearest", origin="upper",
        extent=(lon_edges[0, 0], lon_edges[-1, 1], lat_edges[-1, 1], lat_edges[0, 0]),
        **_colour_range(variable, values),
    )  # fmt: skip
    ax.set_aspect(1 / np.cos(np.radians(float(ds.lat.mean()))))
    ax.set_xlabel("longitude [deg E]")
    ax.set_ylabel("latitude [deg N]")
    fig.colorbar(image, ax=ax, shrink=0.8, label=f"mean {variable} [{TARGET_UNITS}]")
    ax.set_title(
        f"TAM-RL mean daily {variable}, {first} to {last}\n"
        f"checkpoint {spec.request.checkpoint} (sha256 {spec.checkpoint_sha256[:12]}), "
        f"{spec.request.members} members",
        fontsize=10,
    )
    if spec.synthetic:
        ax.text(
            0.5, 0.02, "synthetic drivers: not real fluxes", transform=ax.transAxes, ha="center", va="bottom",
            color="darkred", fontsize=12, fontweight="bold", bbox={"facecolor": "white", "alpha": 0.8},
        )  # fmt: skip
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    return buffer.getvalue()


def _colour_range(variable: str, values: np.ndarray) -> dict[str, float]:
    """GPP, RECO and spreads start at zero; NEE is centred on zero (sink blue, source red)."""
    if variable != "NEE":
        return {"vmin": 0}
    finite = values[np.isfinite(values)]
    bound = float(np.abs(finite).max()) if finite.size else 1.0
    return {"vmin": -bound, "vmax": bound}
