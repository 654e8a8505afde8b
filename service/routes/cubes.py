"""The cubes being served: ``GET /cubes`` and ``GET /cubes/{name}``."""

from fastapi import APIRouter

from service.dependencies import CatalogDep
from service.routes import PROBLEMS
from service.schemas import CubeInfo

router = APIRouter(tags=["cubes"])


@router.get("/cubes", response_model=list[CubeInfo])
def list_cubes(catalog: CatalogDep) -> list[dict]:
    """The complete cubes being served."""
    return [cube.description for cube in catalog.cubes()]


@router.get("/cubes/{name}", response_model=CubeInfo, responses=PROBLEMS)
def get_cube(catalog: CatalogDep, name: str) -> dict:
    """One cube's extent, period, variables and provenance."""
    return catalog.get(name).description
