"""Make docs/viewer.png: the viewer page over a served demo cube, with a clicked pixel's chart and a polygon's totals.

    tamrl demo --out tamrl_demo && tamrl serve --cubes tamrl_demo &
    python tests/make_viewer_screenshot.py --url http://127.0.0.1:8000 --out docs/viewer.png

Drives Debian's chromium headless (``apt-get install -y chromium chromium-driver``) as tests/test_viewer.py does.
"""

import argparse
import io
import json
import tempfile
from pathlib import Path

from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.actions.action_builder import ActionBuilder
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

REGION = {"type": "Polygon", "coordinates": [[[11.2, 47.9], [11.9, 47.85], [12.1, 48.2], [11.3, 48.4], [11.2, 47.9]]]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--out", type=Path, default=Path("docs/viewer.png"))
    p.add_argument("--date", default="2019-07-15", help="the day mapped")
    p.add_argument("--point", default="48.6,10.4", help="lat,lon of the clicked pixel")
    p.add_argument("--region", type=Path, help="a GeoJSON file to total (default: a polygon around Munich)")
    args = p.parse_args()
    options = Options()
    options.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,800",
                "--force-device-scale-factor=1"):  # fmt: skip
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=options)
    wait = WebDriverWait(driver, 120, poll_frequency=0.1)
    try:
        extra = driver.execute_script("return [outerWidth - innerWidth, outerHeight - innerHeight]")
        driver.set_window_size(1280 + extra[0], 800 + extra[1])  # a page of 1280 x 800
        driver.get(f"{args.url}/")
        wait.until(lambda d: d.execute_script("return document.body.dataset.tiles === 'loaded'"))
        driver.execute_script(
            "const day = document.getElementById('day'); day.value = tamrl.days.indexOf(arguments[0]);"
            "day.dispatchEvent(new Event('input')); day.dispatchEvent(new Event('change'));",
            args.date,
        )
        wait.until(lambda d: d.execute_script("return document.body.dataset.tiles === 'loaded'"))
        lat, lon = map(float, args.point.split(","))
        x, y = driver.execute_script(
            "const p = tamrl.map.latLngToContainerPoint([arguments[0], arguments[1]]);"
            "const r = tamrl.map.getContainer().getBoundingClientRect();"
            "return [Math.round(r.left + p.x), Math.round(r.top + p.y)];",
            lat,
            lon,
        )
        click = ActionBuilder(driver)
        click.pointer_action.move_to_location(x, y).click()
        click.perform()
        wait.until(lambda d: d.execute_script("return tamrl.chart"))
        with tempfile.TemporaryDirectory() as folder:
            region = args.region or Path(folder) / "region.geojson"
            if not args.region:
                region.write_text(json.dumps(REGION))
            driver.find_element(By.ID, "regions-file").send_keys(str(region))
            wait.until(lambda d: d.execute_script("return document.querySelector('#totals td.total, #totals .error')"))
        png = driver.get_screenshot_as_png()
    finally:
        driver.quit()
    image = Image.open(io.BytesIO(png)).convert("RGB").quantize(256)  # a palette PNG: a third of the size
    image.save(args.out, optimize=True)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
