"""Checkpoint metadata read without the weights agrees with the whole bundle, and is checked the same way."""

import pytest
import torch

from tamrl.checkpoint import SCHEMA_VERSION, load_bundle, read_metadata
from tamrl.errors import CheckpointError


@pytest.mark.parametrize("name", ["default", "modis_met", "met"])  # met is a version 1 bundle, upgraded on reading
def test_metadata_is_what_the_whole_bundle_says(name):
    bundle, metadata = load_bundle(name), read_metadata(name)
    assert metadata.members == len(bundle["members"]) and metadata.feature_set == bundle["feature_set"]
    assert metadata.features == bundle["features"] and metadata.config == bundle["config"]
    assert metadata.inference == bundle["inference"] and metadata.model == bundle["model"]
    assert (metadata.path, metadata.sha256) == (bundle["path"], bundle["sha256"])
    assert metadata.schema_version == bundle["schema_version"] == SCHEMA_VERSION


def test_default_metadata_values():
    metadata = read_metadata("default")
    assert (metadata.members, metadata.feature_set, metadata.model) == (10, "modis_met_context", "tamrl")


def test_metadata_refuses_what_load_bundle_refuses(tmp_path):
    bundle = torch.load(read_metadata("met").path, weights_only=True)
    future = tmp_path / "future.pt"
    torch.save({**bundle, "schema_version": SCHEMA_VERSION + 1}, future)
    with pytest.raises(CheckpointError, match="schema version"):
        read_metadata(future)
    partial = tmp_path / "partial.pt"
    torch.save({k: v for k, v in bundle.items() if k != "members"}, partial)
    with pytest.raises(CheckpointError, match="missing members"):
        read_metadata(partial)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable"):
        read_metadata(junk)
