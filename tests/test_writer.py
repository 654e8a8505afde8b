"""jobs.tiles and jobs.writer: chunk-aligned tiles, the cube template, region writes, the ledger, resume, finalize."""

import json
import pickle
import uuid
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import get_args

import fsspec
import numpy as np
import pytest
import xarray as xr
import zarr

from jobs import grid, static
from jobs.outputs import DAILY, MEMBERS, OUTPUTS, VARIABLES
from jobs.tiles import Tile, plan_tiles
from jobs.writer import CubeSpec, create_cube
from tamrl import __version__
from tamrl.errors import ConfigError, DataError
from tamrl.predict import MODES, NEE_RULES

BBOX = (10.27, 45.33, 11.12, 46.18)  # edges off the 0.5 deg chunk boundaries of chunks of 10 cells
CHUNK = 10
DAYS = 5


def make_spec(**changes) -> CubeSpec:
    request = dict(
        checkpoint="tamrl-demo", bbox=BBOX, start="2020-01-01", end="2020-01-05", members=3, support_years=[2018, 2019]
    )
    request |= {k: changes.pop(k) for k in list(changes) if k in request}
    fields = dict(
        chunk_time=DAYS, chunk_lat=CHUNK, chunk_lon=CHUNK, tile_chunks=2, checkpoint_sha256="ab" * 32,
        feature_set="met", nee_rule="balance", inference_mode="stateful", synthetic=True,
    )
    return CubeSpec(request=request, **(fields | changes))


def test_a_spec_written_by_tamrl_0x_is_read():
    flat = {
        "bbox": list(BBOX), "start": "2020-01-01", "end": "2020-01-05", "chunk_time": DAYS, "chunk_lat": CHUNK,
        "chunk_lon": CHUNK, "tile_chunks": 2, "checkpoint": "tamrl-demo", "checkpoint_sha256": "ab" * 32,
        "feature_set": "met", "ensemble_size": 3, "precision": "float32", "support_years": [2018, 2019],
        "nee_rule": "balance", "inference_mode": "stateful", "synthetic": True, "tamrl_version": __version__,
    }  # fmt: skip
    assert CubeSpec.model_validate_json(json.dumps(flat)) == make_spec()


@pytest.fixture(scope="module")
def igbp() -> xr.DataArray:
    extent, _ = plan_tiles(BBOX, CHUNK, CHUNK)
    return static.igbp(extent.bbox)


@pytest.fixture(scope="module")
def land(igbp) -> np.ndarray:
    mask = static.land_mask(igbp).values
    assert mask.any() and not mask.all()  # the bbox holds lakes (Garda, Iseo), so NaN off land is tested
    return mask


SIZES = make_spec().sizes  # of the outputs' dims other than lat and lon: 5 days, 1 month, 3 members


def tile_values(tile: Tile, seed: int, land: np.ndarray) -> dict[str, np.ndarray]:
    """Random values on the tile's land cells, NaN elsewhere, as the engine writes them."""
    rng = np.random.default_rng(seed)
    on_land = land[tile.cube_rows, tile.cube_cols]
    return {
        name: np.where(on_land, rng.normal(size=o.shape(SIZES, tile.shape)), np.nan).astype(np.float32)
        for name, o in OUTPUTS.items()
    }


def read(url: str) -> xr.Dataset:
    return xr.open_zarr(url, consolidated=False)


def test_extent_expands_the_bbox_to_whole_global_chunks():
    extent, tiles = plan_tiles(BBOX, CHUNK, CHUNK, tile_chunks=2)
    rows, cols = grid.bbox_slices(BBOX)
    assert (extent.rows, extent.cols) == (slice(870, 900), slice(3800, 3830))
    assert extent.rows.start <= rows.start and rows.stop <= extent.rows.stop
    assert extent.cols.start <= cols.start and cols.stop <= extent.cols.stop
    np.testing.assert_array_equal(extent.lat, grid.lat_coords()[870:900])
    np.testing.assert_array_equal(extent.lon, grid.lon_coords()[3800:3830])
    assert grid.bbox_slices(extent.bbox) == (extent.rows, extent.cols)
    # 3 x 3 chunks in blocks of 2 x 2: four tiles, row-major, the south and east ones smaller
    assert [t.id for t in tiles] == ["r0087_c0380", "r0087_c0382", "r0089_c0380", "r0089_c0382"]
    assert [t.shape for t in tiles] == [(20, 20), (20, 10), (10, 20), (10, 10)]
    assert tiles[3].rows == slice(890, 900) and tiles[3].cube_rows == slice(20, 30)
    assert tiles[3].cols == slice(3820, 3830) and tiles[3].cube_cols == slice(20, 30)


def test_overlapping_bboxes_share_chunk_boundaries():
    _, a = plan_tiles(BBOX, CHUNK, CHUNK)
    _, b = plan_tiles((10.8, 45.9, 11.6, 46.7), CHUNK, CHUNK)
    shared = {t.id for t in a} & {t.id for t in b}
    assert shared
    for tile in a + b:
        assert tile.rows.start % CHUNK == 0 and tile.cols.start % CHUNK == 0
        assert tile.shape == (CHUNK, CHUNK)
    slices = [{t.id: (t.rows, t.cols) for t in tiles if t.id in shared} for tiles in (a, b)]
    assert slices[0] == slices[1]


def test_extent_is_clipped_at_the_globe_edge():
    extent, tiles = plan_tiles((179.9, 89.9, 180, 90), 7, 7, tile_chunks=3)  # 7 divides neither 3600 nor 7200
    assert extent.rows == slice(0, 7) and extent.cols == slice(7196, 7200)
    assert [(t.id, t.shape) for t in tiles] == [("r0000_c1028", (7, 4))]
    with pytest.raises(ValueError, match="tile_chunks 0"):
        plan_tiles(BBOX, CHUNK, CHUNK, tile_chunks=0)


def test_spec_defaults_and_checks():
    assert make_spec(chunk_time=None).chunk_time == DAYS  # a short period is one time chunk
    assert make_spec(chunk_time=None, end="2020-12-31").chunk_time == 46
    assert CubeSpec.model_fields["chunk_lat"].default == CubeSpec.model_fields["chunk_lon"].default == 50
    assert get_args(CubeSpec.model_fields["nee_rule"].annotation) == NEE_RULES
    assert get_args(CubeSpec.model_fields["inference_mode"].annotation) == MODES
    for bad in ({"end": "2019-12-31"}, {"feature_set": "nope"}, {"checkpoint_sha256": "xyz"}, {"colour": "red"}):
        with pytest.raises(ValueError):
            make_spec(**bad)


def test_template_is_cf_described_and_empty(tmp_path, igbp):
    url = str(tmp_path / "cube.zarr")
    cube = create_cube(url, make_spec(), igbp=igbp, extra_attrs={"institution": "test"})
    ds = read(url)
    assert SIZES == {"time": DAYS, "month": 1, "member": 3}
    for name in VARIABLES:
        assert ds[name].dtype == np.float32 and np.isnan(ds[name].values).all()
        assert ds[name].attrs["units"] == "g m-2 d-1" and ds[name].attrs["long_name"]
    for name in DAILY:
        assert ds[name].dims == ("time", "lat", "lon") and ds[name].encoding["chunks"] == (DAYS, CHUNK, CHUNK)
    for name in MEMBERS:  # a chunk holds every month and member, so a tile writes whole chunks
        assert ds[name].dims == ("month", "member", "lat", "lon")
        assert ds[name].encoding["chunks"] == (1, 3, CHUNK, CHUNK)
        assert ds[name].attrs["cell_methods"] == "month: mean" and "per ensemble member" in ds[name].attrs["long_name"]
        assert "partial month" in ds[name].attrs["comment"] and "totals" in ds[name].attrs["comment"]
    assert ds.GPP_members.shape == (1, 3, 30, 30) and ds.member.values.tolist() == [0, 1, 2]
    assert ds.member.dtype == np.int32 and ds.member.attrs["long_name"] == "ensemble member (checkpoint member index)"
    assert ds.GPP.attrs["standard_name"] == "gross_primary_productivity_of_biomass_expressed_as_carbon"
    assert "standard_name" not in ds.NEE.attrs and "source to the atmosphere" in ds.NEE.attrs["long_name"]
    assert "ensemble standard deviation" in ds.NEE_std.attrs["long_name"]
    assert (np.diff(ds.lat) < 0).all() and (-180 <= ds.lon).all() and (ds.lon <= 180).all()
    np.testing.assert_array_equal(ds.lat, cube.extent.lat)
    np.testing.assert_array_equal(ds.lat_bnds, grid.lat_bounds()[870:900])
    np.testing.assert_array_equal(ds.lon_bnds, grid.lon_bounds()[3800:3830])
    assert ds.lat.attrs["bounds"] == "lat_bnds" and ds.lon.attrs["bounds"] == "lon_bnds"
    assert list(ds.time.values.astype("datetime64[D]").astype(str)) == [f"2020-01-0{d}" for d in range(1, 6)]
    assert zarr.open_group(url)["time"].attrs["units"] == "days since 2020-01-01"
    assert ds.igbp.dtype == np.uint8
    np.testing.assert_array_equal(ds.igbp, igbp)
    np.testing.assert_array_equal(ds.land_mask.astype(bool), static.land_mask(igbp))
    assert ds.land_mask.attrs["flag_meanings"] == "not_computed computed"
    attrs = ds.attrs
    assert attrs["Conventions"] == "CF-1.8" and attrs["title"] and attrs["institution"] == "test"
    assert "tamrl-demo" in attrs["source"] and "ab" * 32 in attrs["source"]
    assert "arXiv 2603.09974" in attrs["references"] and "FLUXNET2015" in attrs["references"]
    assert "created" in attrs["history"] and f"tamrl {__version__}" in attrs["history"]
    assert (attrs["time_coverage_start"], attrs["time_coverage_end"]) == ("2020-01-01", "2020-01-05")
    assert (attrs["ensemble_size"], attrs["support_years"], attrs["feature_set"]) == (3, [2018, 2019], "met")
    assert (attrs["synthetic"], attrs["nee_rule"], attrs["tamrl_complete"]) == (1, "balance", 0)
    assert "synthetic" in attrs["comment"].lower()
    assert CubeSpec.model_validate_json(attrs["tamrl_spec"]) == make_spec()
    create_cube(url, make_spec(synthetic=False), igbp=igbp, overwrite=True)
    assert read(url).attrs["synthetic"] == 0 and "comment" not in read(url).attrs


def test_months_are_the_calendar_months_the_days_touch_with_the_first_cube_day_as_value(tmp_path, igbp):
    url = str(tmp_path / "cube.zarr")
    create_cube(url, make_spec(start="2020-01-30", end="2020-02-03"), igbp=igbp)  # 5 days over two months
    ds = read(url)
    expected = np.array(["2020-01-30", "2020-02-01"], "datetime64[ns]")
    np.testing.assert_array_equal(ds.month.values, expected)
    assert ds.month.attrs == {"long_name": "month", "bounds": "month_bnds"}
    # bounds: the first cube day in the month and the day after the last one (end exclusive)
    bounds = np.array([["2020-01-30", "2020-02-01"], ["2020-02-01", "2020-02-04"]], "datetime64[ns]")
    np.testing.assert_array_equal(ds.month_bnds.values, bounds)
    assert ds.NEE_members.shape == (2, 3, 30, 30) and ds.NEE_members.encoding["chunks"] == (2, 3, CHUNK, CHUNK)
    group = zarr.open_group(url)
    assert group["month"].attrs["units"] == group["time"].attrs["units"] == "days since 2020-01-30"
    assert group["month"].dtype == group["month_bnds"].dtype == np.int32
    assert group["month"][:].tolist() == [0, 2] and group["month_bnds"][:].tolist() == [[0, 2], [2, 5]]


def test_tiles_write_resume_and_finalize(tmp_path, igbp, land):
    url = str(tmp_path / "cube.zarr")
    cube = create_cube(url, make_spec(), igbp=igbp)
    first, _, third, last = cube.tiles
    cube.write_tile(first, tile_values(first, 1, land))
    cube.write_tile(last, tile_values(last, 2, land))
    assert cube.finished() == {first.id, last.id}

    resumed = create_cube(url, make_spec(), igbp=igbp)  # same spec: the ledger and the values are kept
    assert resumed.finished() == {first.id, last.id}
    ds = read(url)
    for tile, seed in ((first, 1), (last, 2)):
        for name, values in tile_values(tile, seed, land).items():
            np.testing.assert_array_equal(ds[name].isel(lat=tile.cube_rows, lon=tile.cube_cols), values)
    assert np.isnan(ds.GPP.isel(lat=third.cube_rows, lon=third.cube_cols)).all()

    with pytest.raises(DataError, match="lacks 2 of 4 tiles"):
        resumed.finalize()
    shipped = pickle.loads(pickle.dumps(resumed))  # as a Dask task receives it
    with ThreadPoolExecutor(2) as pool:  # concurrent writers of disjoint tiles
        list(pool.map(lambda tile: shipped.write_tile(tile, tile_values(tile, 3, land)), cube.tiles[1:3]))
    resumed.finalize()
    assert zarr.open_group(url).metadata.consolidated_metadata is not None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a finished cube opens without warnings, the ledger notwithstanding
        done = xr.open_zarr(url, consolidated=True)
    assert done.attrs["tamrl_complete"] == 1
    written = done.NEE.isel(lat=third.cube_rows, lon=third.cube_cols)
    np.testing.assert_array_equal(written, tile_values(third, 3, land)["NEE"])


def test_another_spec_is_refused_unless_overwritten(tmp_path, igbp, land):
    url = str(tmp_path / "cube.zarr")
    cube = create_cube(url, make_spec(), igbp=igbp)
    tile = cube.tiles[0]
    cube.write_tile(tile, tile_values(tile, 1, land))
    with pytest.raises(ConfigError, match=r"request.members: 3 -> 5.*--overwrite"):
        create_cube(url, make_spec(members=5), igbp=igbp)
    fresh = create_cube(url, make_spec(members=5), igbp=igbp, overwrite=True)
    assert fresh.finished() == set()
    assert np.isnan(read(url).GPP.values).all()
    assert json.loads(read(url).attrs["tamrl_spec"])["request"]["members"] == 5
    zarr.open_group(tmp_path / "plain.zarr", mode="w")  # a Zarr store, but no tamrl cube
    with pytest.raises(ConfigError, match=r"holds no tamrl cube.*--overwrite"):
        create_cube(str(tmp_path / "plain.zarr"), make_spec(), igbp=igbp)


def test_unaligned_or_malformed_writes_are_refused(tmp_path, igbp, land):
    url = str(tmp_path / "cube.zarr")
    cube = create_cube(url, make_spec(), igbp=igbp)
    tile = cube.tiles[0]
    shifted = Tile("r0087_c0380", slice(875, 895), tile.cols, slice(5, 25), tile.cube_cols)
    with pytest.raises(ValueError, match="lat 5:25 does not start on a chunk of 10"):
        cube.write_tile(shifted, tile_values(shifted, 1, land))
    short = Tile("r0087_c0380", slice(870, 885), tile.cols, slice(0, 15), tile.cube_cols)
    with pytest.raises(ValueError, match="ends inside a chunk"):
        cube.write_tile(short, tile_values(short, 1, land))
    with pytest.raises(ValueError, match="needs exactly"):
        cube.write_tile(tile, {"GPP": tile_values(tile, 1, land)["GPP"]})
    with pytest.raises(ValueError, match="shape"):
        cube.write_tile(tile, {name: np.zeros((DAYS, 3, 3)) for name in VARIABLES})
    wet = tile_values(tile, 1, land) | {"RECO_members": np.ones(OUTPUTS["RECO_members"].shape(SIZES, tile.shape))}
    with pytest.raises(ValueError, match="RECO_members hold values off land"):
        cube.write_tile(tile, wet)
    assert cube.finished() == set()
    with pytest.raises(ConfigError, match="extra_attrs may not set title"):
        create_cube(str(tmp_path / "other.zarr"), make_spec(), igbp=igbp, extra_attrs={"title": "mine"})
    with pytest.raises(DataError, match="does not cover"):
        create_cube(str(tmp_path / "other.zarr"), make_spec(), igbp=igbp.isel(lat=slice(1, None)))


def test_memory_url(igbp, land):
    root = f"memory://tamrl-test-{uuid.uuid4().hex}"
    url = f"{root}/cube.zarr"
    cube = create_cube(url, make_spec(), igbp=igbp)
    for seed, tile in enumerate(cube.tiles):
        cube.write_tile(tile, tile_values(tile, seed, land))
    assert create_cube(url, make_spec(), igbp=igbp).finished() == {t.id for t in cube.tiles}
    cube.finalize()
    ds = xr.open_zarr(url, consolidated=True)
    last = cube.tiles[-1]
    written = ds.RECO.isel(lat=last.cube_rows, lon=last.cube_cols)
    np.testing.assert_array_equal(written, tile_values(last, 3, land)["RECO"])
    assert ds.attrs["tamrl_complete"] == 1
    fsspec.filesystem("memory").rm(root, recursive=True)
