"""The catalog tells a cube being written (skipped quietly) from storage it cannot read (logged, and 503)."""

import logging
import shutil
import warnings

import pytest
import zarr
from conftest import GARDA, upscale_job
from fastapi.testclient import TestClient

from jobs.outputs import DAILY, MEMBERS
from service.api import create_app
from service.catalog import Catalog
from service.settings import Settings
from tamrl.errors import UnavailableError

pytestmark = pytest.mark.filterwarnings("ignore:Consolidated metadata is currently not part:UserWarning")
POINT = {"lat": 45.62, "lon": 10.92}


@pytest.fixture
def root(checkpoint, drivers, tmp_path):
    """A cubes folder with one complete cube, ``garda``."""
    root = tmp_path / "cubes"
    upscale_job(checkpoint, drivers, GARDA, "2020-03-01", "2020-03-05", root / "garda.zarr", workers=0,
                chunk=(None, 4, 4), progress=False)  # fmt: skip
    return root


def app(root, tmp_path):
    return TestClient(create_app(Settings(cubes=str(root), workers=0, database=tmp_path / "jobs.sqlite")))


def catalog_log(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == "service.catalog"]


def test_cubes_being_written_are_skipped_quietly(root, caplog):
    (root / "new.zarr").mkdir()  # created, no root metadata yet
    (root / "half.zarr").mkdir()
    (root / "half.zarr" / "zarr.json").write_text('{"zarr_format": 3, "attri')  # being written
    (root / "notes.zarr").write_text("a file, not a store")
    with caplog.at_level(logging.DEBUG):
        assert [cube.name for cube in Catalog(root).cubes()] == ["garda"]
    assert catalog_log(caplog) == []


def test_an_unreadable_cubes_folder_is_logged_and_answered_503(root, tmp_path, caplog):
    client = app(root, tmp_path)
    assert client.get("/cubes").json()[0]["name"] == "garda"
    shutil.rmtree(root)
    with caplog.at_level(logging.ERROR):
        for response in (client.get("/cubes"), client.get("/cubes/garda"), client.get("/flux", params=POINT)):
            assert response.status_code == 503, response.text
            assert response.json() == {  # the client is told what to check, not the folder's path; the log is
                "status": 503, "error": "UnavailableError",
                "detail": "the cubes folder cannot be read (FileNotFoundError); the service's operator should check "
                "that it exists and that the service may read it (the service log names the cause)",
            }  # fmt: skip
    assert catalog_log(caplog) == [f"cannot read the cubes folder at {root}: FileNotFoundError: [Errno 2] No such "
                                   f"file or directory: '{root}'"] * 3  # fmt: skip


def test_a_cube_whose_metadata_cannot_be_read_is_named_in_a_503(root, tmp_path, caplog):
    (root / "odd.zarr" / "zarr.json").mkdir(parents=True)  # metadata that no read can succeed on
    with caplog.at_level(logging.ERROR), pytest.raises(UnavailableError, match=r"^cube 'odd' cannot be read "
                                                                                r"\(IsADirectoryError\)"):  # fmt: skip
        Catalog(root).cubes()
    (message,) = catalog_log(caplog)
    assert message.startswith(f"cannot read cube 'odd' at {root / 'odd.zarr'}: IsADirectoryError")
    assert app(root, tmp_path).get("/cubes/garda").status_code == 503


def test_a_cube_written_before_the_members_monthly_means_is_still_served(root, tmp_path):
    assert Catalog(root).get("garda").description["members_monthly"] is True
    for name in MEMBERS:  # as a cube of tamrl before them
        shutil.rmtree(root / "garda.zarr" / name)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Object at r\d+_c\d+ is not recognized", category=UserWarning)
        zarr.consolidate_metadata(str(root / "garda.zarr"))
    old = Catalog(root).get("garda")
    assert old.description["members_monthly"] is False and old.variables == list(DAILY)
    response = app(root, tmp_path).get("/flux", params=POINT)
    assert response.status_code == 200 and len(response.json()["variables"]["GPP"]["values"]) == 5
