"""What handlers take from the app, as FastAPI dependencies: the settings, cube catalog, job store and job runner
that `service.api.create_app` keeps on ``app.state``, and the bearer-token check of the job endpoints.

A handler declares what it needs as a parameter (``catalog: CatalogDep``), so a router module needs no closure over
the app. The getters are ``async def``: FastAPI runs a plain ``def`` dependency in its thread pool, and the point
query answers cached requests on the event loop without a thread hop.
"""

import secrets
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from jobs.records import JobStore
from jobs.runner import JobRunner
from service.catalog import Catalog
from service.settings import Settings
from tamrl.errors import AuthError

bearer = HTTPBearer(auto_error=False)


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_catalog(request: Request) -> Catalog:
    return request.app.state.catalog


async def get_store(request: Request) -> JobStore:
    return request.app.state.store


async def get_runner(request: Request) -> JobRunner:
    return request.app.state.runner


SettingsDep = Annotated[Settings, Depends(get_settings)]
CatalogDep = Annotated[Catalog, Depends(get_catalog)]
StoreDep = Annotated[JobStore, Depends(get_store)]
RunnerDep = Annotated[JobRunner, Depends(get_runner)]


def authorised(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)], settings: SettingsDep
) -> None:
    """Require ``Authorization: Bearer <token>`` when the service has a token (submitting and deleting jobs)."""
    if settings.token is None:
        return
    expected = settings.token.get_secret_value().encode()
    if credentials is None or not secrets.compare_digest(credentials.credentials.encode(), expected):
        raise AuthError("submitting and deleting jobs needs the header 'Authorization: Bearer <token>'")
