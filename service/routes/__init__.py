"""The API's endpoints, one `fastapi.APIRouter` per family, each in its own module: `cubes`, `flux`, `regions`,
`tiles` and `jobs`.

`service.api.create_app` includes every router; a new family (polygon totals, map tiles, a viewer page) is one new
module here with its ``router``, added to `service.api.ROUTERS`. Handlers take the app's parts through
`service.dependencies` and raise domain errors, which `service.api` maps to status codes.
"""

from service.schemas import Problem

PROBLEMS = {status: {"model": Problem} for status in (400, 401, 404, 408, 409, 413, 422, 429, 503)}  # error bodies
