"""What handlers take from the app, as FastAPI dependencies: the settings, cube catalog, job store, job runner and
admission control that `service.api.create_app` keeps on ``app.state``, and the bearer-token check of the job
endpoints.

A handler declares what it needs as a parameter (``catalog: CatalogDep``), so a router module needs no closure over
the app. The getters are ``async def``: FastAPI runs a plain ``def`` dependency in its thread pool, and the point
query answers cached requests on the event loop without a thread hop.
"""

import secrets
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param

from jobs.records import JobStore
from jobs.runner import JobRunner
from service.admission import Admission
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


async def get_admission(request: Request) -> Admission:
    return request.app.state.admission


SettingsDep = Annotated[Settings, Depends(get_settings)]
CatalogDep = Annotated[Catalog, Depends(get_catalog)]
StoreDep = Annotated[JobStore, Depends(get_store)]
RunnerDep = Annotated[JobRunner, Depends(get_runner)]
AdmissionDep = Annotated[Admission, Depends(get_admission)]


def authorised(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)], settings: SettingsDep
) -> None:
    """Require ``Authorization: Bearer <token>`` when the service has a token (every job endpoint)."""
    check_token(settings, None if credentials is None else f"Bearer {credentials.credentials}")


def check_token(settings: Settings, authorization: str | None) -> None:
    """AuthError unless the ``Authorization`` header ``authorization`` holds the service's token (if it has one);
    compared in constant time."""
    if settings.token is None:
        return
    scheme, given = get_authorization_scheme_param(authorization)
    expected = settings.token.get_secret_value().encode()
    if scheme.lower() != "bearer" or not secrets.compare_digest(given.encode(), expected):
        raise AuthError("the job endpoints (submitting, listing, reading and deleting jobs) need the header "
                        "'Authorization: Bearer <token>'")  # fmt: skip

