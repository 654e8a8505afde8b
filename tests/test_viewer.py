"""The viewer page (``GET /``) in a real headless chromium over a real ``tamrl serve`` of the tiny Garda cube: the map
is drawn in the legend's colours, a click charts a pixel's series, an uploaded polygon shows its totals, the
synthetic cube is flagged, and the page loads nothing from anywhere but the service.

The browser is Debian's chromium (``apt-get install -y chromium chromium-driver``), driven by selenium at explicit
paths so that nothing downloads a browser or a script at test time. (The issue asks for the demo cube; the tiny real
Garda cube of the service tests checks the same page in seconds, and docs/viewer.png shows the demo cube.)
"""

import io
import itertools
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import served_cubes
from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.actions.action_builder import ActionBuilder
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
INSTALL = "chromium is missing: install it with `apt-get install -y chromium chromium-driver` (Debian/Ubuntu, as root)"
START, END = "2020-03-01", "2020-04-29"
LAND = (45.62, 10.92)  # lat, lon: land east of Lake Garda
REGION = {"type": "Polygon", "coordinates": [[[10.8, 45.5], [11.0, 45.5], [11.0, 45.7], [10.8, 45.7], [10.8, 45.5]]]}
WAIT_S = 30  # the longest any step in the page may take on a loaded 2-core machine; they take well under a second
START_S = 120  # the server's start: its imports take 7 s of CPU, minutes of wall time on a busy machine
pytestmark = pytest.mark.filterwarnings("ignore:Consolidated metadata is currently not part:UserWarning")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def base(checkpoint, drivers, tmp_path_factory) -> str:
    """The URL of a real ``tamrl serve`` over the tiny Garda cube (the server starts while the cube is made: the
    catalog serves a cube once it is complete)."""
    folder = tmp_path_factory.mktemp("viewer")
    port = free_port()
    command = [sys.executable, "-m", "service.cli", "serve", "--port", str(port), "--cubes", str(folder),
               "--workers", "0"]  # fmt: skip
    server = subprocess.Popen(command, env=os.environ.copy(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        served_cubes(folder, checkpoint, drivers, START, END)
        deadline = time.monotonic() + START_S
        while True:
            try:
                if httpx.get(f"{url}/cubes", timeout=1).json():
                    break
            except httpx.TransportError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                output = server.stdout.read() if server.poll() is not None else f"no cube served in {START_S} s"
                pytest.fail(f"tamrl serve did not start: {output}")
            time.sleep(0.1)
        yield url
    finally:
        server.terminate()
        server.wait(10)


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM.is_file() and CHROMEDRIVER.is_file()):
        pytest.fail(INSTALL, pytrace=False)
    options = Options()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,800",
                "--force-device-scale-factor=1", "--no-first-run", "--disable-extensions"):  # fmt: skip
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def page(browser, base):
    """The viewer loaded, its map's tiles loaded."""
    browser.get(f"{base}/")
    until(browser, "return document.body.dataset.tiles === 'loaded'")
    # Leaflet fades new tiles in over 0.2 s: a screenshot taken before the end blends them with the layer below
    tiles = "[...document.querySelectorAll('.leaflet-tile')]"
    until(browser, f"return {tiles}.every(t => getComputedStyle(t).opacity === '1')")
    return browser


def until(driver, script: str, *args):
    """Wait for ``script`` (JS returning a value) to return something truthy; that value."""
    return WebDriverWait(driver, WAIT_S, poll_frequency=0.05).until(lambda d: d.execute_script(script, *args))


def screen_point(driver, lat: float, lon: float) -> tuple[int, int]:
    """Where (lat, lon) is in the window, in CSS pixels (= screenshot pixels at scale factor 1)."""
    return tuple(driver.execute_script(
        "const p = tamrl.map.latLngToContainerPoint([arguments[0], arguments[1]]);"
        "const r = tamrl.map.getContainer().getBoundingClientRect();"
        "return [Math.round(r.left + p.x), Math.round(r.top + p.y)];", lat, lon))  # fmt: skip


def gradient(stops: list[dict]) -> np.ndarray:
    """The legend's colours, interpolated between its stops (RGB, 0-255)."""
    rgb = np.array([[int(s["color"][k : k + 2], 16) for k in (1, 3, 5)] for s in stops], float)
    t = np.linspace(0, 1, 50)[:, None]
    return np.concatenate([(1 - t) * a + t * b for a, b in itertools.pairwise(rgb)])


def test_the_map_is_drawn_in_the_legends_colours(page, base):
    legend = httpx.get(f"{base}/tiles/legend.json", params={"variable": "GPP"}).json()
    x, y = screen_point(page, *LAND)
    shot = np.asarray(Image.open(io.BytesIO(page.get_screenshot_as_png())).convert("RGB"), float)
    patch = shot[y - 1 : y + 2, x - 1 : x + 2].reshape(-1, 3)
    background = np.array([0xDF, 0xE6, 0xEC])
    assert np.abs(patch - background).sum(axis=1).min() > 30, f"the map is blank at the land cell: {patch[4]}"
    distance = np.abs(patch[:, None, :] - gradient(legend["stops"])[None]).sum(axis=2).min(axis=1)
    assert (distance < 24).all(), f"colours {patch.tolist()} are not the legend's"
    assert "g C m-2 d-1" in page.find_element(By.ID, "legend").text


def test_a_click_on_a_land_pixel_charts_its_series(page, base):
    x, y = screen_point(page, *LAND)
    click = ActionBuilder(page)
    click.pointer_action.move_to_location(x, y).click()
    click.perform()
    series = until(page, "return tamrl.chart && document.querySelector('#chart canvas') && tamrl.series")
    expected = httpx.get(f"{base}/flux", params={"lat": series["cell_lat"], "lon": series["cell_lon"],
                                                 "cube": "garda"}).json()  # fmt: skip
    values = expected["variables"]["GPP"]["values"]
    assert abs(series["cell_lat"] - LAND[0]) < 0.05 and abs(series["cell_lon"] - LAND[1]) < 0.05
    assert len(values) == 60 and all(v is not None for v in values)
    assert page.execute_script("return tamrl.chart.data[3]") == values  # the mean line holds the fetched series
    upper = [v + s for v, s in zip(values, expected["variables"]["GPP"]["std"], strict=True)]
    assert page.execute_script("return tamrl.chart.data[1]") == pytest.approx(upper)  # the band's upper edge
    if "p05" in expected["variables"]["GPP"]:  # a calibrated cube's point answer (wt-gis): the dashed interval
        assert page.execute_script("return tamrl.chart.data.slice(4)") == [expected["variables"]["GPP"][k]
                                                                          for k in ("p95", "p05")]  # fmt: skip
    chart = np.asarray(Image.open(io.BytesIO(page.find_element(By.ID, "chart").screenshot_as_png)).convert("RGB"))
    line = (np.abs(chart.astype(int) - [0x1F, 0x77, 0xB4]).sum(axis=2) < 40).sum()
    assert line > 100, "the chart's mean line is not drawn"
    assert "g C m-2 d-1" in page.find_element(By.ID, "point-info").text


def test_an_uploaded_polygon_shows_its_totals(page, base, tmp_path):
    path = tmp_path / "region.geojson"
    path.write_text(json.dumps(REGION))
    page.find_element(By.ID, "regions-file").send_keys(str(path))
    shown = until(page, "const td = document.querySelector('#totals td.total[data-variable=GPP]');"
                        "return td && td.textContent")  # fmt: skip
    params = {"cube": "garda", "variables": "GPP,RECO,NEE"}
    geojson = {"content-type": "application/geo+json"}
    answer = httpx.post(f"{base}/flux/region", params=params, content=json.dumps(REGION), headers=geojson).json()
    total = answer["features"][0]["rows"][0]["GPP"]["total"]
    assert "Tg C" in shown
    assert float(re.match(r"\s*([-+0-9.e]+)", shown)[1]) == float(f"{total:.4g}")
    assert answer["units"]["total"] == "Tg C" and total > 0
    if answer["features"][0]["rows"][0]["GPP"].get("total_cal_p05") is not None:
        assert "calibrated 90%" in page.find_element(By.ID, "totals").text


def test_the_synthetic_cube_is_flagged(page):
    banner = page.find_element(By.ID, "banner")
    assert banner.is_displayed() and "not real fluxes" in banner.text


def test_the_page_loads_nothing_from_elsewhere_and_logs_no_error(page, base):
    resources = page.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert resources and all(r.startswith(f"{base}/") for r in resources), resources
    assert any("/static/vendor/leaflet/leaflet.js" in r for r in resources)
    errors = [entry for entry in page.get_log("browser") if entry["level"] == "SEVERE"]
    assert not errors, errors
