"""The ``tamrl`` command (the console entry point): the science core's and the engine's commands, plus ``serve``.

Heavy modules (torch, xarray, dask, FastAPI) are imported only when a command runs, so ``tamrl --help`` stays quick.
"""

import argparse
import re
import sys
from collections.abc import Sequence

from jobs import cli as jobs_cli
from tamrl import cli as core_cli
from tamrl.errors import ConfigError, validation_message

NEGATIVE_VALUE = re.compile(r"-\.?\d")  # a value that starts like a negative number: -180,-60,180,80 or -33.5 or -.5


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``serve`` to the ``tamrl`` command's subparsers."""
    p = subparsers.add_parser(
        "serve", help="the HTTP API: point, bbox and map queries on cubes, and upscaling jobs",
        description="Serve the complete cubes in --cubes over HTTP and run upscaling jobs into that folder. The "
        "options but --host and --port can also be set by environment variables TAMRL_<OPTION> (TAMRL_CUBES, "
        "TAMRL_DRIVERS as a JSON list, ...), as can the limits and TAMRL_TOKEN, the bearer token that every job "
        "endpoint then needs (see docs/API.md). The API is documented at /docs.",
    )  # fmt: skip
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    p.add_argument("--port", type=int, default=8000, help="port (default: %(default)s)")
    p.add_argument("--cubes", help="folder or URL (s3://...) of served cubes, where jobs write too (default: cubes)")
    p.add_argument("--drivers", nargs="+", metavar="URL", help="driver URLs that upscaling jobs read")
    p.add_argument("--scheduler", metavar="ADDRESS", help="run jobs on an existing Dask cluster")
    p.add_argument("--workers", type=int, help="LocalCluster processes for jobs (default: one per core; 0: none)")
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> None:
    from pydantic import ValidationError

    from service.api import create_app
    from service.server import serve
    from service.settings import Settings

    options = {"cubes": args.cubes, "drivers": args.drivers, "scheduler": args.scheduler, "workers": args.workers}
    try:
        settings = Settings(**{key: value for key, value in options.items() if value is not None})
    except ValidationError as exc:
        problems = validation_message(exc.errors(), "settings")
        raise ConfigError(f"invalid settings (options or TAMRL_* variables): {problems}") from exc
    print(f"serving {settings.cubes} on http://{args.host}:{args.port} (API documentation: /docs)")
    serve(create_app(settings), settings, args.host, args.port)


def attach_negative_values(argv: Sequence[str]) -> list[str]:
    """``argv`` with a negative value attached to the option before it: ``--bbox -10,-5,-9,-4`` becomes
    ``--bbox=-10,-5,-9,-4``.

    argparse takes an argument that starts with '-' for an option unless it is a single plain number, so the west
    and south coordinates of a bbox failed with "expected one argument". Attached with '=', it is the option's value
    whatever it looks like; a flag given such a value is still refused by argparse.
    """
    out: list[str] = []
    for arg in argv:
        option = out[-1] if out else ""
        if option.startswith("--") and len(option) > 2 and "=" not in option and NEGATIVE_VALUE.match(arg):
            out[-1] = f"{option}={arg}"
        else:
            out.append(arg)
    return out


def main(argv: list[str] | None = None) -> int:
    """``tamrl``: train, predict, evaluate (tamrl.cli), upscale, demo (jobs.cli) and serve (here)."""
    parser, sub = core_cli.build_parser()
    jobs_cli.add_commands(sub)
    add_commands(sub)
    return core_cli.main(attach_negative_values(sys.argv[1:] if argv is None else argv), parser)


if __name__ == "__main__":
    raise SystemExit(main())
