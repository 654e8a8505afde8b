"""Shared test fixtures: the small real subset under tests/data (five FLUXNET2015 sites with MODIS)."""

from pathlib import Path

import pytest

from tamrl.data import Site, load_fluxnet

DATA = Path(__file__).parent / "data"
FLUXNET = DATA / "fluxnet2015"
MODIS = DATA / "modis"


@pytest.fixture(scope="session")
def sites() -> list[Site]:
    """The five real test sites with tower meteorology and MOD09GA reflectance."""
    return load_fluxnet(FLUXNET, modis=MODIS)
