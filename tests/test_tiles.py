"""Map tiles, their TileJSON and legend, and the web conventions (CORS, Cache-Control, ETag) on the tiny real cube
around Lake Garda (conftest's checkpoint and synthetic drivers), served from a folder."""

import io

import morecantile
import numpy as np
import pytest
import xarray as xr
from conftest import GARDA, served_cubes, upscale_job
from fastapi.testclient import TestClient
from matplotlib import colormaps
from PIL import Image

from jobs import grid
from service.api import create_app
from service.settings import Settings
from service.styles import STYLES

START, END = "2020-03-01", "2020-03-10"
DAY = "2020-03-05"
TMS = morecantile.tms.get("WebMercatorQuad")
TILE = morecantile.Tile(135, 91, 8)  # holds the whole Garda cube; a pixel is about a ninth of a cell
LAND = (45.625, 10.925)  # a computed cell's centre, east of the lake
WATER = (45.625, 10.675)  # Lake Garda
OUTSIDE = (45.625, 11.225)  # east of the cube's bbox
URL = f"/tiles/{TILE.z}/{TILE.x}/{TILE.y}.png"
pytestmark = pytest.mark.filterwarnings("ignore:Consolidated metadata is currently not part:UserWarning")


@pytest.fixture(scope="module")
def cubes(checkpoint, drivers, tmp_path_factory):
    return served_cubes(tmp_path_factory.mktemp("cubes"), checkpoint, drivers, START, END)


@pytest.fixture(scope="module")
def client(cubes):
    with TestClient(create_app(Settings(cubes=str(cubes), workers=0))) as c:
        yield c


@pytest.fixture(scope="module")
def garda(cubes) -> xr.Dataset:
    return xr.open_zarr(cubes / "garda.zarr").load()


def rgba(response) -> np.ndarray:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(response.content))
    assert image.mode == "RGBA" and image.size == (256, 256)
    return np.asarray(image)


def pixel(image: np.ndarray, lat: float, lon: float, tile: morecantile.Tile = TILE) -> np.ndarray:
    """The pixel of ``image`` (tile ``tile``) holding the point."""
    left, bottom, right, top = TMS.xy_bounds(tile)
    x, y = TMS.xy(lon, lat)
    return image[int((top - y) / (top - bottom) * 256), int((x - left) / (right - left) * 256)]


def value(ds: xr.DataArray, lat: float, lon: float) -> xr.DataArray:
    row, col = grid.cell_index(lat, lon)
    r0, c0 = grid.cell_index(float(ds.lat[0]), float(ds.lon[0]))
    return ds.isel(lat=row - r0, lon=col - c0)


def expected(v: float, colormap: str, lo: float, hi: float) -> np.ndarray:
    return np.asarray(colormaps[colormap](np.clip((v - lo) / (hi - lo), 0, 1))) * 255


def test_a_day_tile_colours_land_by_the_legend_and_leaves_water_and_outside_transparent(client, garda):
    style = {"variable": "GPP", "rescale": "0,40"}  # the tiny checkpoint's GPP is high
    image = rgba(client.get(URL, params={**style, "date": DAY}))
    gpp = float(value(garda.GPP.sel(time=DAY), *LAND))
    assert 5 < gpp < 35
    land = pixel(image, *LAND)
    assert land[3] == 255
    np.testing.assert_allclose(land, expected(gpp, "YlGn", 0, 40), atol=3)
    stops = client.get("/tiles/legend.json", params=style).json()["stops"]
    from_legend = [np.interp(gpp, [s["value"] for s in stops], [int(s["color"][k:k + 2], 16) for s in stops])
                   for k in (1, 3, 5)]  # fmt: skip
    np.testing.assert_allclose(land[:3], from_legend, atol=10)  # the legend's stops interpolated
    assert pixel(image, *WATER)[3] == 0 and np.isnan(float(value(garda.GPP.sel(time=DAY), *WATER)))
    assert pixel(image, *OUTSIDE)[3] == 0
    assert image[0, 0, 3] == 0  # north-west of the cube
    assert 0.05 < (image[..., 3] == 255).mean() < 0.5  # the cube is a part of the tile


def test_a_period_tile_shows_the_mean_of_the_days(client, garda):
    period = {"start": "2020-03-04", "end": "2020-03-06"}
    image = rgba(client.get(URL, params={"variable": "GPP", "rescale": "0,40", **period}))
    days = value(garda.GPP.sel(time=slice(period["start"], period["end"])), *LAND).values
    assert np.abs(days - days.mean()).min() > 1  # the mean is no single day's value
    np.testing.assert_allclose(pixel(image, *LAND), expected(float(days.mean()), "YlGn", 0, 40), atol=3)
    nee = rgba(client.get(URL, params={"variable": "NEE", **period}))
    mean = float(value(garda.NEE.sel(time=slice(period["start"], period["end"])), *LAND).mean())
    np.testing.assert_allclose(pixel(nee, *LAND), expected(mean, "RdBu_r", -6, 6), atol=3)


def test_spreads_bounds_colormap_and_rescale(client, garda):
    cell = value(garda.sel(time=DAY), *LAND)
    image = rgba(client.get(URL, params={"variable": "RECO_std", "date": DAY, "colormap": "greys",
                                         "rescale": "0,0.5"}))  # fmt: skip
    np.testing.assert_allclose(pixel(image, *LAND), expected(float(cell.RECO_std), "Greys", 0, 0.5), atol=3)
    from tamrl.calibration import cube_bounds

    p95 = float(value(cube_bounds(garda.sel(time=DAY), "GPP")[1], *LAND))
    image = rgba(client.get(URL, params={"variable": "GPP_p95", "date": DAY, "rescale": "0,40"}))
    np.testing.assert_allclose(pixel(image, *LAND), expected(p95, "YlGn", 0, 40), atol=3)


def test_the_land_mask_is_a_fixed_grey_without_a_date(client):
    image = rgba(client.get(URL, params={"variable": "land_mask"}))
    assert pixel(image, *LAND).tolist() == pixel(image, 45.425, 10.425).tolist()
    np.testing.assert_allclose(pixel(image, *LAND), expected(1, "Greys", 0, 2), atol=1)
    assert pixel(image, *WATER)[3] == 0 and pixel(image, *OUTSIDE)[3] == 0


def test_tilejson_describes_the_layer_and_its_template_round_trips(client):
    params = {"variable": "NEE", "date": DAY, "rescale": "-3,3"}
    response = client.get("/tiles/tilejson.json", params=params)
    body = response.json()
    assert body["tilejson"] == "3.0.0" and body["scheme"] == "xyz"
    assert body["bounds"] == list(GARDA) and body["minzoom"] == 0 and body["maxzoom"] == 9
    assert body["center"] == [10.8, 45.6, 8]
    assert "FLUXNET2015" in body["attribution"] and "CC-BY-4.0" in body["attribution"]
    assert "SYNTHETIC drivers" in body["attribution"] and body["name"] == "garda NEE"
    (template,) = body["tiles"]
    assert template == "http://testserver/tiles/{z}/{x}/{y}.png?variable=NEE&date=2020-03-05&rescale=-3%2C3"
    url = template.format(z=TILE.z, x=TILE.x, y=TILE.y)
    direct = client.get(URL, params=params)
    assert client.get(url).content == direct.content
    assert rgba(direct)[..., 3].max() == 255


def test_legends_of_every_default_style(client):
    for variable, style in STYLES.items():
        body = client.get("/tiles/legend.json", params={"variable": variable}).json()
        lo, hi = style.rescale
        assert body["variable"] == variable and body["colormap"] == style.colormap
        assert body["rescale"] == [lo, hi] and len(body["stops"]) == 11
        assert [s["value"] for s in body["stops"]] == pytest.approx(np.linspace(lo, hi, 11).tolist())
        assert body["units"] == ("1" if variable == "land_mask" else "g C m-2 d-1")
    gpp = client.get("/tiles/legend.json", params={"variable": "GPP"}).json()
    assert gpp["rescale"] == [0, 15] and gpp["colormap"] == "ylgn"
    assert gpp["stops"][0] == {"value": 0, "color": "#ffffe5"} and gpp["stops"][-1]["color"] == "#004529"
    nee = client.get("/tiles/legend.json", params={"variable": "NEE", "colormap": "viridis", "rescale": "-1,1"})
    assert nee.json()["stops"][5] == {"value": 0, "color": "#21918c"}


@pytest.mark.parametrize(
    ("url", "params", "status", "words"),
    [
        ("/tiles/8/256/91.png", {"date": DAY}, 422, "x and y run 0..255"),
        ("/tiles/8/135/-1.png", {"date": DAY}, 422, "does not exist"),
        ("/tiles/25/0/0.png", {"date": DAY}, 422, "zoom 25"),
        (URL, {"date": DAY, "variable": "FOO"}, 422, "variable"),
        (URL, {"date": DAY, "colormap": "jet"}, 422, "colormap"),
        (URL, {"date": DAY, "rescale": "5"}, 422, "min,max"),
        (URL, {"date": DAY, "rescale": "5,1"}, 422, "min < max"),
        (URL, {"date": DAY, "rescale": "nan,1"}, 422, "finite"),
        (URL, {"date": "2021-01-01"}, 404, "covers 2021-01-01"),
        (URL, {"date": DAY, "start": START, "end": END}, 422, "not both"),
        (URL, {"start": START}, 422, "both start= and end="),
        (URL, {}, 422, "need date="),
        (URL, {"date": DAY, "cube": "nope"}, 404, "no complete cube"),
        ("/tiles/8/0/0.png", {"date": DAY}, 404, "no cube overlaps tile 8/0/0"),
        ("/tiles/legend.json", {"variable": "GPP", "rescale": "a,b"}, 422, "min,max"),
        ("/tiles/tilejson.json", {"colormap": "jet"}, 422, "colormap"),
    ],
)
def test_bad_tile_requests_get_a_4xx_that_says_what_is_wrong(client, url, params, status, words):
    response = client.get(url, params=params)
    assert response.status_code == status, response.text
    assert words in response.json()["detail"]
    assert response.headers["cache-control"] == "no-store"


def test_cors_and_cache_control_on_reads_and_no_store_on_jobs(client):
    origin = {"Origin": "https://viewer.example"}
    for url, params in [(URL, {"date": DAY}), ("/tiles/tilejson.json", {"date": DAY}), ("/cubes", {}),
                        ("/flux", {"lat": LAND[0], "lon": LAND[1]}), ("/flux/bbox", {"bbox": "10.8,45.5,10.9,45.6"}),
                        ("/flux/map.png", {"bbox": "10.8,45.5,10.9,45.6"})]:  # fmt: skip
        response = client.get(url, params=params, headers=origin)
        assert response.status_code == 200, (url, response.text)
        assert response.headers["access-control-allow-origin"] == "*"
        assert response.headers["cache-control"] == "public, max-age=60"
        assert response.headers["etag"].startswith('"')
    region = {"type": "Polygon", "coordinates": [[[10.8, 45.5], [10.9, 45.5], [10.9, 45.6], [10.8, 45.5]]]}
    posted = client.post("/flux/region", json=region, headers=origin)
    assert posted.status_code == 200 and posted.headers["access-control-allow-origin"] == "*"
    assert posted.headers["cache-control"] == "no-store"
    jobs = client.get("/jobs", headers=origin)
    assert jobs.headers["cache-control"] == "no-store" and "etag" not in jobs.headers
    preflight = client.options(URL, headers={**origin, "Access-Control-Request-Method": "GET"})
    assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == "*"


def test_cors_origins_are_configurable(cubes):
    with TestClient(create_app(Settings(cubes=str(cubes), workers=0, cors_origins=["https://a.example"]))) as c:
        allowed = c.get("/cubes", headers={"Origin": "https://a.example"})
        assert allowed.headers["access-control-allow-origin"] == "https://a.example"
        assert "access-control-allow-origin" not in c.get("/cubes", headers={"Origin": "https://b.example"}).headers


def test_a_matching_etag_gets_304_and_another_query_another_etag(client):
    first = client.get(URL, params={"date": DAY})
    etag = first.headers["etag"]
    again = client.get(URL, params={"date": DAY}, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
    assert client.get(URL, params={"date": DAY}, headers={"If-None-Match": f'W/{etag}, "x"'}).status_code == 304
    other = client.get(URL, params={"date": "2020-03-06"}, headers={"If-None-Match": etag})
    assert other.status_code == 200 and other.headers["etag"] != etag


def test_a_rewritten_cube_never_serves_a_stale_tile(checkpoint, drivers, tmp_path):
    out = tmp_path / "cubes" / "garda.zarr"
    run = dict(workers=0, chunk=(None, 4, 4), progress=False)
    upscale_job(checkpoint, drivers, GARDA, START, END, out, members=3, **run)
    with TestClient(create_app(Settings(cubes=str(out.parent), workers=0))) as c:
        params = {"variable": "NEE", "date": DAY}
        first = c.get(URL, params=params)
        assert c.get(URL, params=params, headers={"If-None-Match": first.headers["etag"]}).status_code == 304
        upscale_job(checkpoint, drivers, GARDA, START, END, out, members=2, overwrite=True, **run)
        second = c.get(URL, params=params, headers={"If-None-Match": first.headers["etag"]})
        assert second.status_code == 200 and second.headers["etag"] != first.headers["etag"]
        assert second.content != first.content
        rewritten = xr.open_zarr(out)
        assert rewritten.attrs["ensemble_size"] == 2
        nee = float(value(rewritten.NEE.sel(time=DAY), *LAND))
        np.testing.assert_allclose(pixel(rgba(second), *LAND), expected(nee, "RdBu_r", -6, 6), atol=3)
