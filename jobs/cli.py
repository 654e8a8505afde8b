"""The engine's commands, ``upscale`` and ``demo``, added to the ``tamrl`` command by `service.cli`.

Heavy modules (torch, xarray, dask) are imported only when a command runs, so ``tamrl --help`` stays quick.
"""

import argparse
import json
import shutil
import warnings
from datetime import date, timedelta
from pathlib import Path

from tamrl import cli as core_cli
from tamrl.errors import ConfigError

# Central Europe and the Alps: temperate deciduous, mixed and needleleaf forests (Vosges, Black Forest, Bohemian
# Forest, Alps), croplands (Po valley, Bavaria, Upper Rhine), grasslands and alpine meadows, Mediterranean woody
# savannas and evergreen broadleaf forest on the Ligurian coast, cities, and the Adriatic and Ligurian seas as
# water. Its edges lie on the default 2.5 deg chunk boundaries, so the cube holds no padding.
DEMO_BBOX = (5.0, 42.5, 15.0, 52.5)
DEMO_YEAR = 2019
DEMO_SEED = 0
DEMO_BAND = 2.5  # deg of latitude generated and written at a time, to keep the demo's memory small
DEMO_PRECISION = "bfloat16"  # all 10 members in float32 would take about 6 minutes on 2 cores, bfloat16 about 3
TOTALS_LIMIT = 2_000_000_000  # values a CLI totals run may read (cells x days x 2 per variable): about 8 GB read
DEMO_TILE_CHUNKS = 1  # 16 tiles of 2.5 x 2.5 deg rather than 4: a finer progress bar and an even load on 2 workers


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Add ``upscale`` and ``demo`` to the ``tamrl`` command's subparsers."""
    p = subparsers.add_parser(
        "upscale", help="daily GPP/RECO/NEE cubes on the 0.05 deg grid from a checkpoint and gridded drivers",
        description="Run a checkpoint over a bbox and period into a Zarr cube (one Dask task per tile). Running "
        "the same command again resumes an interrupted job.",
    )  # fmt: skip
    p.add_argument("--checkpoint", default="default", help="checkpoint file or shipped name (default: %(default)s)")
    p.add_argument(
        "--drivers",
        nargs="+",
        required=True,
        metavar="URL",
        help="ERA5/ERA5-Land NetCDF or Zarr (hourly or daily t2m, d2m, ssrd), and/or stores of canonical "
        "daily variables (TA, SW_IN, VPD, B01..B07, CLEAR); local paths or fsspec URLs",
    )
    p.add_argument("--bbox", required=True, metavar="W,S,E,N",
                   help="region in degrees (west and south negative), e.g. 5,42.5,15,52.5")
    p.add_argument("--start", required=True, help="first day, e.g. 2019-01-01")
    p.add_argument("--end", required=True, help="last day, inclusive")
    p.add_argument("--out", help="output Zarr store (path or fsspec URL); required unless --dry-run")
    p.add_argument("--workers", type=int, help="LocalCluster worker processes (default: one per core; 0: no Dask)")
    p.add_argument("--scheduler", metavar="ADDRESS", help="use an existing Dask cluster, e.g. tcp://10.0.0.5:8786")
    p.add_argument("--overwrite", action="store_true", help="replace an output cube made with other parameters")
    p.add_argument(
        "--support-years",
        metavar="Y1,Y2,...",
        help="years whose drivers form each pixel's support set (default: up to 3 whole years of the "
        "driver record, evenly spread)",
    )
    p.add_argument("--members", type=int, help="use only the first N ensemble members (default: all)")
    core_cli.add_precision(p)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"],
                   help="where workers run the model; auto takes a GPU where a worker has one (default: %(default)s)")
    p.add_argument("--chunks", metavar="TIME,LAT,LON",
                   help="the cube's chunks in days and cells (default: 46,50,50); a tile is 2 x 2 chunks in space")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--dry-run", action="store_true",
                   help="check the job and print its tiles, land pixels, bytes to read and write, and an estimated "
                   "wall time for --workers workers (calibrated on a sample of its pixels here); write nothing")
    p.set_defaults(func=cmd_upscale)

    p = subparsers.add_parser(
        "demo", help="upscale the shipped checkpoint over central Europe for one year of synthetic drivers",
        description=f"Make synthetic daily drivers (jobs.synthetic: invented weather and reflectance, labelled "
        f"synthetic) for {DEMO_YEAR} plus the spin-up over central Europe and the Alps {DEMO_BBOX} (W, S, E, N): "
        "forests, croplands, grasslands, alpine meadows, Mediterranean savannas, cities and two seas in 10 x 10 deg. "
        f"Then upscale the shipped default checkpoint (all 10 ensemble members, {DEMO_PRECISION} mixed precision), "
        f"with the support set drawn from {DEMO_YEAR}, and write the cube and a quick-look PNG under --out. On a "
        "2-core machine this takes about 3 minutes.",
    )  # fmt: skip
    p.add_argument("--out", type=Path, default=Path("tamrl_demo"), help="folder to write into (default: %(default)s)")
    p.add_argument("--workers", type=int, help="LocalCluster worker processes (default: one per core; 0: no Dask)")
    p.add_argument("--members", type=int, help="use only the first N ensemble members (default: all 10)")
    core_cli.add_precision(p, DEMO_PRECISION)
    p.set_defaults(func=cmd_demo)

    p = subparsers.add_parser(
        "ingest", help="MODIS files as delivered (MOD09GA/MOD09CMG .hdf, AppEEARS GeoTIFFs) into a drivers store",
        description="Turn MODIS surface reflectance files, as LP DAAC, earthaccess or AppEEARS deliver them, into "
        "the canonical daily drivers store (B01..B07 and CLEAR on the 0.05 deg cells of --bbox) that `tamrl upscale "
        "--drivers` reads. See docs/DRIVERS.md.",
    )  # fmt: skip
    p.add_argument("files", nargs="+", metavar="FILE", help="MOD09GA or MOD09CMG files, or folders holding them")
    p.add_argument("--bbox", required=True, metavar="W,S,E,N", help="cells to write, in degrees, e.g. 5,42.5,15,52.5")
    p.add_argument("--out", required=True, type=Path, help="the new Zarr store to write (a local path)")
    p.add_argument("--options", metavar="JSON", help='adapter options, e.g. \'{"mod09ga": {"qc_500m": false}}\'')
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_ingest)

    p = subparsers.add_parser(
        "totals", help="carbon totals (Tg C) over GeoJSON polygons, by period, with the ensemble's uncertainty",
        description="Total a cube's GPP, RECO and NEE over each polygon of a GeoJSON file (cells weighted by the "
        "covered fraction and their area on the sphere), for the whole period or per year, month or day, with the "
        "ensemble members' spread and, for a calibrated checkpoint, the calibrated 90%% range. Writes CSV or JSON "
        "by the --out suffix. See docs/ACCOUNTING.md.",
    )  # fmt: skip
    p.add_argument("--cube", required=True, metavar="URL", help="the cube (a path or fsspec URL)")
    p.add_argument("--regions", required=True, type=Path,
                   help="GeoJSON FeatureCollection, Feature or (Multi)Polygon in WGS84 degrees")
    p.add_argument("--start", help="first day (default: the cube's first)")
    p.add_argument("--end", help="last day, inclusive (default: the cube's last)")
    p.add_argument("--freq", default="all", choices=["all", "year", "month", "day"],
                   help="one row for the whole period, or one per year, month or day (default: %(default)s)")
    p.add_argument("--variables", default="GPP,RECO,NEE", help="comma-separated fluxes (default: %(default)s)")
    p.add_argument("--out", required=True, type=Path, help="the answer: FILE.csv or FILE.json")
    p.set_defaults(func=cmd_totals)


def cmd_upscale(args: argparse.Namespace) -> None:
    from jobs.cluster import cores
    from jobs.engine import upscale
    from jobs.plan import plan_job
    from jobs.request import JobRequest, Resources, build

    request = build(
        JobRequest, checkpoint=args.checkpoint, bbox=_numbers(args.bbox, "--bbox", float, 4), start=args.start,
        end=args.end, members=args.members, precision=args.precision,
        support_years=_numbers(args.support_years, "--support-years", int) if args.support_years else None,
    )  # fmt: skip
    chunks = _numbers(args.chunks, "--chunks", int, 3) if args.chunks else None
    resources = build(Resources, drivers=tuple(args.drivers), out=args.out or "", chunks=chunks, device=args.device)
    if args.dry_run:
        print(plan_job(request, resources, workers=args.workers or cores()))
        return
    if not args.out:
        raise ConfigError("give --out, the output Zarr store (or --dry-run to only plan the job)")
    print(upscale(request, resources, workers=args.workers, scheduler=args.scheduler, overwrite=args.overwrite,
                  progress=not args.quiet))  # fmt: skip


def cmd_demo(args: argparse.Namespace) -> None:
    from jobs.compute import SPINUP_DAYS
    from jobs.engine import upscale
    from jobs.request import JobRequest, Resources, build

    args.out.mkdir(parents=True, exist_ok=True)
    first, last = date(DEMO_YEAR, 1, 1), date(DEMO_YEAR, 12, 31)
    drivers = demo_drivers(args.out / "drivers.zarr", str(first - timedelta(days=SPINUP_DAYS)), str(last))
    cube = args.out.resolve() / "demo.zarr"
    request = build(JobRequest, bbox=DEMO_BBOX, start=first, end=last, members=args.members, precision=args.precision)
    resources = Resources(drivers=(str(drivers),), out=str(cube), tile_chunks=DEMO_TILE_CHUNKS)
    print(upscale(request, resources, workers=args.workers))
    print(f"open it with:\n  python -c \"import xarray as xr; print(xr.open_zarr('{cube}'))\"")


def cmd_ingest(args: argparse.Namespace) -> None:
    from jobs.ingest import ingest

    try:
        options = json.loads(args.options) if args.options else None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--options {args.options!r} is not JSON ({exc.msg}); e.g. '{{\"mod09ga\": {{}}}}'") from exc
    print(ingest(args.files, args.out, _numbers(args.bbox, "--bbox", float, 4), options, progress=not args.quiet))


def cmd_totals(args: argparse.Namespace) -> None:
    from pydantic import ValidationError

    from jobs.regions import cell_weights, parse_regions
    from jobs.reports import FORMATS, report
    from jobs.totals import CubeSource, TotalsQuery, totals
    from tamrl.errors import validation_message

    kind = args.out.suffix.lstrip(".").lower()
    if kind not in FORMATS:
        raise ConfigError(f"--out {args.out} must end in {' or '.join('.' + k for k in FORMATS)}")
    try:
        query = TotalsQuery(start=args.start, end=args.end, freq=args.freq,
                            variables=tuple(v.strip() for v in args.variables.split(",") if v.strip()))  # fmt: skip
    except ValidationError as exc:
        raise ConfigError(f"invalid options: {validation_message(exc.errors(), 'options')}") from exc
    try:
        regions = parse_regions(args.regions.read_bytes())
    except OSError as exc:
        raise ConfigError(f"cannot read --regions {args.regions}: {exc.strerror or exc}") from exc
    source = CubeSource.open(args.cube)
    results = totals(source, regions, [cell_weights(r) for r in regions], query, limit=TOTALS_LIMIT)
    args.out.write_bytes(FORMATS[kind].render(report(source, query, results)))
    rows = len(results[0].rows) if results else 0
    print(f"wrote {len(results)} feature(s) x {rows} row(s) x {len(query.variables)} variable(s) to {args.out}")


def demo_drivers(path: Path, start: str, end: str) -> Path:
    """Synthetic daily drivers over DEMO_BBOX as a Zarr store at ``path`` (kept if already complete).

    Written band by band of DEMO_BAND degrees, chunked (time, 50, 50) like the cube's tiles, into a temporary
    store renamed at the end, so an interrupted demo never leaves a partial store behind.
    """
    from jobs.synthetic import synthetic_drivers

    if path.exists():
        return path
    partial = path.with_name(path.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    west, south, east, north = DEMO_BBOX
    top = north
    while top > south:
        band = synthetic_drivers((west, max(south, top - DEMO_BAND), east, top), start, end, DEMO_SEED)
        first = top == north
        encoding = {name: {"chunks": (band.sizes["time"], 50, 50)} for name in band.data_vars} if first else None
        with warnings.catch_warnings():  # consolidated metadata is not in the Zarr v3 spec yet; xarray reads it
            warnings.filterwarnings("ignore", message="Consolidated metadata is currently not", category=UserWarning)
            band.to_zarr(partial, mode="w" if first else "a", append_dim=None if first else "lat", encoding=encoding,
                         zarr_format=3, consolidated=True)  # fmt: skip
        top -= DEMO_BAND
    partial.rename(path)
    return path


def _numbers(text: str, option: str, kind: type, count: int | None = None) -> tuple:
    """Comma-separated numbers of ``kind``, or ConfigError saying what ``option`` expects."""
    try:
        values = tuple(kind(part) for part in text.split(","))
    except ValueError as exc:
        raise ConfigError(f"{option} {text!r} must be comma-separated numbers") from exc
    if count is not None and len(values) != count:
        raise ConfigError(f"{option} {text!r} must be {count} comma-separated numbers")
    return values
