"""The ``tamrl`` command (the console entry point): the science core's and the engine's commands, plus ``serve``.

Heavy modules (torch, xarray, dask, FastAPI) are imported only when a command runs, so ``tamrl --help`` stays quick.
"""

import argparse
from pathlib import Path

from jobs import cli as jobs_cli
from tamrl import cli as core_cli


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``serve`` to the ``tamrl`` command's subparsers."""
    p = subparsers.add_parser(
        "serve", help="the HTTP API: point, bbox and map queries on cubes, and upscaling jobs",
        description="Serve the complete cubes in --cubes over HTTP and run upscaling jobs into that folder. Every "
        "option can also be set by an environment variable TAMRL_<OPTION> (e.g. TAMRL_TOKEN, TAMRL_DRIVERS as a "
        "JSON list); the job token is read from TAMRL_TOKEN only. The API is documented at /docs.",
    )  # fmt: skip
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    p.add_argument("--port", type=int, default=8000, help="port (default: %(default)s)")
    p.add_argument("--cubes", type=Path, help="folder of served cubes, where jobs write too (default: cubes)")
    p.add_argument("--drivers", nargs="+", metavar="URL", help="driver URLs that upscaling jobs read")
    p.add_argument("--scheduler", metavar="ADDRESS", help="run jobs on an existing Dask cluster")
    p.add_argument("--workers", type=int, help="LocalCluster processes for jobs (default: one per core; 0: none)")
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> None:
    import uvicorn

    from service.api import create_app
    from service.settings import Settings

    options = {"cubes": args.cubes, "drivers": args.drivers, "scheduler": args.scheduler, "workers": args.workers}
    settings = Settings(**{key: value for key, value in options.items() if value is not None})
    print(f"serving {settings.cubes.resolve()} on http://{args.host}:{args.port} (API documentation: /docs)")
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level="warning")


def main(argv: list[str] | None = None) -> int:
    """``tamrl``: train, predict, evaluate (tamrl.cli), upscale, demo (jobs.cli) and serve (here)."""
    parser, sub = core_cli.build_parser()
    jobs_cli.add_commands(sub)
    add_commands(sub)
    return core_cli.main(argv, parser)


if __name__ == "__main__":
    raise SystemExit(main())
