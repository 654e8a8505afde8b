"""Where a cube's numbers come from, in one dict that every answer carries: cube, checkpoint, synthetic flag,
references and the FLUXNET2015 attribution (CC-BY-4.0 asks that it travel with derived products)."""

from typing import Any

from jobs.writer import CubeSpec
from tamrl.attribution import FLUXNET_ATTRIBUTION

SYNTHETIC_WARNING = (
    "SYNTHETIC: this cube's drivers were invented by jobs.synthetic for testing and demonstration; its values are "
    "not estimates of real carbon fluxes"
)


def provenance(name: str, spec: CubeSpec, attrs: dict[str, Any]) -> dict[str, Any]:
    """The provenance of cube ``name`` (its spec and global attributes)."""
    out = {
        "cube": name,
        "checkpoint": spec.request.checkpoint,
        "checkpoint_sha256": spec.checkpoint_sha256,
        "ensemble_size": spec.request.members,
        "synthetic": spec.synthetic,
        "source": attrs.get("source", ""),
        "references": attrs.get("references", ""),
        "attribution": FLUXNET_ATTRIBUTION,
    }
    if spec.synthetic:
        out["warning"] = SYNTHETIC_WARNING
    return out


def header_lines(fields: dict[str, Any]) -> str:
    """``fields`` as ``# key: value`` lines, the header of a CSV answer (``pandas.read_csv(comment="#")`` skips it)."""
    return "".join(f"# {key}: {value}\n" for key, value in fields.items())
