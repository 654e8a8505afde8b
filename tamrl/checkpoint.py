"""The checkpoint bundle: one file that holds everything needed to predict, loadable with weights_only=True.

Contents: every ensemble member's weights, the run config, the feature set and its feature names, the scalers,
the training (and monitoring) site ids, class weights, the inference settings, the calibration of the 90%
intervals, metrics (cross-validation scores of the recipe), the code version, the data attribution and a schema
version. Version 1 bundles (before fixed budgets and calibration) are upgraded on load: they have no calibration.
"""

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tamrl import __version__
from tamrl.errors import CheckpointError

SCHEMA_VERSION = 2
REQUIRED = (
    "schema_version", "model", "config", "feature_set", "features", "scalers", "members",
    "training_sites", "inference", "calibration", "metrics", "code_version",
)  # fmt: skip
V1_TRAINING_ONLY = ("patience", "lr_halve_every", "inference_support_windows")  # v1 config keys v2 dropped
BUILTIN = Path(__file__).parent / "checkpoints"
DEFAULT = "modis_met_context"  # the shipped recipe chosen by cross-validation (docs/VALIDATION.md)


def save_bundle(bundle: dict[str, Any], path: str | Path) -> Path:
    """Write a bundle (adding schema and code versions) atomically: a crash never leaves half a file."""
    missing = [k for k in REQUIRED if k not in bundle and k not in ("schema_version", "code_version")]
    if missing:
        raise CheckpointError(f"refusing to save an incomplete checkpoint: missing {', '.join(missing)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({**bundle, "schema_version": SCHEMA_VERSION, "code_version": __version__}, tmp)
    tmp.replace(path)
    return path


def resolve(name_or_path: str | Path) -> Path:
    """A checkpoint path, or the name of a shipped one (``default``, ``modis_met``, ``met``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    builtin = BUILTIN / f"{DEFAULT if str(name_or_path) == 'default' else name_or_path}.pt"
    if builtin.is_file():
        return builtin
    shipped = ", ".join(shipped_names())
    raise CheckpointError(f"checkpoint {name_or_path} not found: give a file path or a shipped name ({shipped})")


def shipped_names() -> list[str]:
    """Names of the checkpoints inside the package, ``default`` first."""
    return ["default", *sorted(p.stem for p in BUILTIN.glob("*.pt"))]


@dataclass(frozen=True)
class CheckpointMetadata:
    """What a bundle says about itself, read without its weights: enough to check a job against it or describe it."""

    path: str
    sha256: str
    schema_version: int
    code_version: str
    model: str
    feature_set: str
    features: dict[str, list[str]]  # dynamic and static feature names, in input order
    members: int  # ensemble size
    config: dict[str, Any]
    inference: dict[str, Any]


def load_bundle(name_or_path: str | Path) -> dict[str, Any]:
    """Load and check a bundle with ``weights_only=True`` (no code from the file is ever run)."""
    path = resolve(name_or_path)
    bundle = _read(path, mmap=False)
    bundle["path"] = str(path)
    bundle["sha256"] = file_hash(path)
    return bundle


def read_metadata(name_or_path: str | Path) -> CheckpointMetadata:
    """A bundle's metadata, checked as `load_bundle` checks it, without reading its weights.

    The tensors are memory-mapped and never touched, so no member weights are read into memory: the service asks
    this of every job request.
    """
    path = resolve(name_or_path)
    bundle = _read(path, mmap=True)
    return CheckpointMetadata(
        path=str(path), sha256=file_hash(path), schema_version=bundle["schema_version"],
        code_version=bundle["code_version"], model=bundle["model"], feature_set=bundle["feature_set"],
        features=bundle["features"], members=len(bundle["members"]), config=bundle["config"],
        inference=bundle["inference"],
    )  # fmt: skip


def _read(path: Path, mmap: bool) -> dict[str, Any]:
    """The checked bundle at ``path`` (upgraded from version 1); with ``mmap`` its tensors are memory-mapped."""
    try:
        bundle = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as exc:
        raise CheckpointError(f"{path} is not a readable tamrl checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(bundle, dict) or "schema_version" not in bundle:
        raise CheckpointError(f"{path} is not a tamrl checkpoint bundle (no schema_version)")
    if bundle["schema_version"] == 1:
        bundle = upgrade_v1(bundle)
    if bundle["schema_version"] != SCHEMA_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint schema version {bundle['schema_version']}, but this tamrl ({__version__}) "
            f"reads version {SCHEMA_VERSION}: retrain it or use a matching tamrl release"
        )
    missing = [k for k in REQUIRED if k not in bundle]
    if missing:
        raise CheckpointError(f"{path} is incomplete: missing {', '.join(missing)}")
    return bundle


def upgrade_v1(bundle: dict[str, Any]) -> dict[str, Any]:
    """A version 1 bundle as version 2: training-only config keys dropped, no climatology, no calibration."""
    config = {k: v for k, v in bundle["config"].items() if k not in V1_TRAINING_ONLY}
    config.setdefault("climatology", False)  # version 1 encoders read no climatology
    return {**bundle, "config": config, "calibration": None, "schema_version": 2, "upgraded_from": 1}


def file_hash(path: str | Path) -> str:
    """SHA-256 of a file, the checkpoint's identity in provenance records."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
