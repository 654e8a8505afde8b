"""The viewer page: ``GET /`` and its files under ``/static`` (`service/static`: plain HTML, CSS and one app.js, with
Leaflet, Leaflet-Geoman and uPlot vendored from npm in ``static/vendor``; see its VENDORED.md).

The page needs no internet: everything it loads comes from this service (the cubes, the map tiles, the legend, the
point series and the region totals), unless the user types a basemap URL of their own.
"""

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).parent.parent / "static"

router = APIRouter(tags=["viewer"])
router.mount("/static", StaticFiles(directory=STATIC), name="static")


@router.get("/", response_class=FileResponse, include_in_schema=False)
def viewer() -> FileResponse:
    """The viewer page: maps of the cubes, a pixel's daily series, a polygon's totals."""
    return FileResponse(STATIC / "index.html", media_type="text/html")
