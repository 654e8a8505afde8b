"""Shared test fixtures: the small real subset under tests/data (five FLUXNET2015 sites with MODIS), and for the
engine and the service a tiny checkpoint and synthetic drivers around Lake Garda."""

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import fsspec
import pytest
import torch

from jobs.synthetic import synthetic_drivers
from tamrl.checkpoint import load_bundle, resolve, save_bundle
from tamrl.config import TrainConfig
from tamrl.data import Site, load_fluxnet
from tamrl.features import climatology_channels, feature_set
from tamrl.predict import build_network

DATA = Path(__file__).parent / "data"
FLUXNET = DATA / "fluxnet2015"
MODIS = DATA / "modis"
GARDA = (10.4, 45.4, 11.2, 45.8)  # 16 x 8 cells around Lake Garda (water, forests, crops, towns)
GARDA_RECORD = ("2019-01-01", "2020-04-30")  # synthetic drivers; 2019 is the only whole year: the default support year


@pytest.fixture(scope="session")
def sites() -> list[Site]:
    """The five real test sites with tower meteorology and MOD09GA reflectance."""
    return load_fluxnet(FLUXNET, modis=MODIS)


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    """The shipped checkpoint's feature set, scalers and inference settings with small random networks (hidden 16,
    3 members, every weight perturbed so the support set matters): an upscaling job takes about a second."""
    bundle = load_bundle(resolve("default"))
    cfg = TrainConfig(**{**bundle["config"], "hidden": 16, "embedding": 8, "seeds": 3})
    n_dyn, n_stat = len(bundle["features"]["dynamic"]), len(bundle["features"]["static"])
    n_clim = 12 * len(climatology_channels(feature_set(bundle["feature_set"])))
    torch.manual_seed(0)
    members = []
    for _ in range(cfg.seeds):
        net = build_network(cfg, n_dyn, n_stat, n_clim)
        with torch.no_grad():
            for p in net.parameters():
                p.add_(0.3 * torch.randn_like(p))  # the FiLM generator starts at zero: make z matter
        members.append(net.state_dict())
    tiny = {k: v for k, v in bundle.items() if k not in ("path", "sha256")}
    tiny.update(config=cfg.model_dump(mode="json"), members=members)
    return save_bundle(tiny, tmp_path_factory.mktemp("ckpt") / "tiny.pt")


@pytest.fixture(scope="session")
def drivers(tmp_path_factory) -> str:
    """Synthetic drivers (jobs.synthetic) over GARDA for GARDA_RECORD, as a Zarr store."""
    path = tmp_path_factory.mktemp("drivers") / "synthetic.zarr"
    synthetic_drivers(GARDA, *GARDA_RECORD, seed=1).to_zarr(path, zarr_format=3, consolidated=True)
    return str(path)


REQUEST_FIELDS = ("support_years", "members", "precision")
RESOURCE_FIELDS = ("chunks", "tile_chunks", "device")


def upscale_job(checkpoint, drivers, bbox, start, end, out, **options):
    """`jobs.engine.upscale` of a job given the way a CLI user gives it: ``options`` holds the request's and the
    resources' optional fields (``chunk`` for chunks) and the engine's runtime keywords."""
    from jobs.engine import upscale
    from jobs.request import JobRequest, Resources

    options = {("chunks" if k == "chunk" else k): v for k, v in options.items()}
    request = JobRequest(
        checkpoint=str(checkpoint), bbox=bbox, start=start, end=end,
        **{k: options.pop(k) for k in REQUEST_FIELDS if k in options},
    )  # fmt: skip
    drivers = (drivers,) if isinstance(drivers, str | Path) else drivers
    resources = Resources(
        drivers=tuple(map(str, drivers)), out=str(out), **{k: options.pop(k) for k in RESOURCE_FIELDS if k in options}
    )
    return upscale(request, resources, **options)


def leftover(url: str, owner: str, host: str, pid: int, expires_in: float) -> None:
    """The lock that a job that died left beside the cube at ``url`` (a path or fsspec URL): its lease ends
    ``expires_in`` seconds from now."""
    now = datetime.now(UTC)
    holder = {"owner": owner, "token": "a-dead-job", "host": host, "pid": pid, "since": (now - timedelta(minutes=5))
              .isoformat(), "expires": (now + timedelta(seconds=expires_in)).isoformat()}  # fmt: skip
    with fsspec.open(f"{url}.lock", "w", auto_mkdir=True) as f:
        f.write(json.dumps(holder))


def race(url: str) -> list[str]:
    """Eight jobs take the lock of the cube at ``url`` at once; the owners that got it."""
    from jobs.lock import Lease
    from tamrl.errors import ConflictError

    def take(i: int) -> str | None:
        lease = Lease(url, f"job-{i}")
        try:
            lease.acquire()
        except ConflictError:
            return None
        return lease.me.owner

    with ThreadPoolExecutor(8) as pool:
        return [owner for owner in pool.map(take, range(8)) if owner]


def served_cubes(folder: Path, checkpoint, drivers, start: str, end: str) -> Path:
    """``folder`` holding ``garda.zarr``: the tiny checkpoint over GARDA from ``start`` to ``end``, in chunks of 4 x 4
    cells, as the service tests serve it."""
    upscale_job(checkpoint, drivers, GARDA, start, end, folder / "garda.zarr", workers=0, chunk=(None, 4, 4),
                progress=False)  # fmt: skip
    return folder


def job_outcome(get: Callable[[str], object], location: str, timeout: float = 60) -> dict:
    """Poll a job (``get(location)`` returns an HTTP response) until it is no longer accepted or running."""
    deadline = time.monotonic() + timeout
    while True:
        record = get(location).json()
        if record["state"] not in ("accepted", "running") or time.monotonic() > deadline:
            return record
        time.sleep(0.05)
