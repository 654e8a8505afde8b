"""Job errors never carry server paths: the places a job reads and writes get their public names, and any other path
or URL is hidden; a real failed job's stored error shows the reason without them."""

from pathlib import Path

from conftest import DATA

from jobs.records import JobState, JobStore
from jobs.redact import SERVER_PATH, public_message
from jobs.request import JobRequest
from jobs.runner import JobRunner, RunnerConfig


def test_known_places_get_their_public_names_and_other_paths_are_hidden():
    places = {"/srv/tamrl/cubes": "<cubes>", "/srv/tamrl/cubes/west.zarr": "west.zarr",
              "s3://bucket/drivers.zarr": "<drivers>", "tcp://10.0.0.5:8786": "<scheduler>"}  # fmt: skip
    message = (
        "cannot write the cube at /srv/tamrl/cubes/west.zarr (OSError: [Errno 28] No space left on device: "
        "'/srv/tamrl/cubes/west.zarr/GPP/c/0/0/0'); lock /srv/tamrl/cubes/west.zarr.lock; drivers "
        "s3://bucket/drivers.zarr and bucket/drivers.zarr/t2m; scheduler tcp://10.0.0.5:8786; other "
        "/home/ops/secret.nc, file:///etc/tamrl.toml, <cubes>/x; 1/8 tiles, g C m-2 d-1, 2020-04-01"
    )
    assert public_message(message, places) == (
        "cannot write the cube at west.zarr (OSError: [Errno 28] No space left on device: 'west.zarr/GPP/c/0/0/0'); "
        "lock west.zarr.lock; drivers <drivers> and <drivers>/t2m; scheduler <scheduler>; other "
        f"{SERVER_PATH}, {SERVER_PATH}, <cubes>/x; 1/8 tiles, g C m-2 d-1, 2020-04-01"
    )


def test_a_relative_place_is_hidden_also_where_a_message_made_it_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    message = f"cannot open {tmp_path}/data/drivers/era5.nc nor data/drivers/era5.nc: the drivers' TA"
    assert public_message(message, {"data/drivers": "<drivers>"}) == (
        "cannot open <drivers>/era5.nc nor <drivers>/era5.nc: the drivers' TA"
    )


def test_a_failed_job_s_stored_error_names_no_server_path(checkpoint, tmp_path):
    source = DATA / "era5" / "era5_t2m_uk_2019-03_hourly_0p25deg_52.75-51N_1W-0.75E.nc"
    broken = tmp_path / "drivers" / "truncated.nc"
    broken.parent.mkdir()
    broken.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    store = JobStore(tmp_path / "jobs.sqlite")
    config = RunnerConfig(drivers=(str(broken),), cubes=str(tmp_path / "cubes"), checkpoints={"tiny": str(checkpoint)},
                          workers=0)  # fmt: skip
    request = JobRequest(checkpoint="tiny", bbox=(10.4, 45.4, 10.8, 45.8), start="2020-04-01", end="2020-04-10")
    record = store.submit(request, "west")[0]
    JobRunner(store, config).submit(record).result()
    failed = store.get(record.id)
    assert failed.state == JobState.failed
    assert failed.error.startswith("cannot open driver file <drivers> (") and "Give a NetCDF file" in failed.error
    assert str(tmp_path) not in failed.error and str(Path.home()) not in failed.error and "/" not in failed.error
