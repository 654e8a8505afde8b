"""The ``tamrl`` command: train, predict, evaluate. Errors print as one line and exit with status 2."""

import argparse
import logging
import sys
from pathlib import Path
from typing import get_args

from tamrl.config import ModelName
from tamrl.errors import TamrlError
from tamrl.features import FEATURE_SETS

log = logging.getLogger("tamrl")
DEFAULT_DATA = Path("../shared/data/fluxnet2015")
DEFAULT_MODIS = Path("../shared/data/modis")


def _site_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, default=DEFAULT_DATA,
                   help="FLUXNET2015-style folder (sites.csv + daily/) or CarbonBench folder (*.parquet)")
    p.add_argument("--modis", type=Path, default=None,
                   help=f"MOD09GA tower reflectance (file or folder), needed by modis_met; e.g. {DEFAULT_MODIS}")
    p.add_argument("--sites-file", type=Path, help="use only these sites (one id a line)")
    p.add_argument("--exclude-sites-file", type=Path, help="leave these sites out (one id a line)")


def _load_sites(args: argparse.Namespace, feature_set: str):
    from tamrl.data import load_carbonbench, load_fluxnet, read_sites_table, select_sites

    if (args.data / "target_fluxes.parquet").is_file():
        sites = load_carbonbench(args.data)
        ids = select_sites([s.site_id for s in sites], args.sites_file, args.exclude_sites_file)
        return [s for s in sites if s.site_id in ids]
    ids = select_sites(list(read_sites_table(args.data).index), args.sites_file, args.exclude_sites_file)
    modis = args.modis
    if modis is None and FEATURE_SETS[feature_set].reflectance and DEFAULT_MODIS.exists():
        modis = DEFAULT_MODIS
    return load_fluxnet(args.data, ids, modis if FEATURE_SETS[feature_set].reflectance else None)


def cmd_train(args: argparse.Namespace) -> None:
    from tamrl.config import load_config
    from tamrl.train import train

    cfg = load_config(args.config, model=args.model, feature_set=args.feature_set, seeds=args.seeds,
                      epochs=args.epochs, epochs_stage2=args.epochs_stage2, hidden=args.hidden,
                      device=args.device, max_steps_per_epoch=args.max_steps_per_epoch,
                      val_fraction=args.val_fraction, zero_embedding=args.zero_embedding or None)
    sites = _load_sites(args, cfg.feature_set)
    bundle = train(cfg, sites, args.out, progress=not args.quiet)
    print(f"checkpoint {args.out}: {cfg.model}, {len(bundle['members'])} member(s), "
          f"{len(bundle['training_sites'])} training sites, {bundle['metrics']['train_seconds']:.0f} s")


def add_precision(p: argparse.ArgumentParser, default: str = "float32") -> None:
    """The ``--precision`` option shared by the commands that run a checkpoint."""
    p.add_argument(
        "--precision", default=default, choices=["float32", "bfloat16", "float16"],
        help="float32, or mixed precision through torch.autocast (within 0.05 g C m-2 d-1 of float32 on held-out "
        "sites; float16 only on a GPU) (default: %(default)s)",
    )  # fmt: skip


def cmd_predict(args: argparse.Namespace) -> None:
    from tamrl.predict import Predictor, read_drivers

    predictor = Predictor.load(args.checkpoint, args.device, args.precision)
    frame = read_drivers(args.drivers)
    support = read_drivers(args.support_drivers) if args.support_drivers else None
    out = predictor.predict_frame(frame, args.lat, args.lon, args.igbp, args.koppen, support)
    if args.out:
        out.to_csv(args.out, float_format="%.4f")
        bounds = ", calibrated 90% interval *_p05/*_p95" if predictor.calibrated else ""
        print(f"wrote {len(out)} days of GPP, RECO, NEE (g C m-2 d-1, ensemble mean, spread *_std{bounds}) "
              f"to {args.out}")
    else:
        out.to_csv(sys.stdout, float_format="%.4f")


def cmd_evaluate(args: argparse.Namespace) -> None:
    import pandas as pd

    from tamrl.evaluate import site_predictions, write_report
    from tamrl.predict import Predictor

    predictors = [Predictor.load(c, args.device) for c in args.checkpoint]
    labels = args.label or [p.bundle["model"] for p in predictors]
    if len(labels) != len(predictors):
        raise TamrlError(f"give one --label per --checkpoint ({len(predictors)}), or none")
    frames, site_table = [], None
    for predictor, label in zip(predictors, labels, strict=True):
        sites = _load_sites(args, predictor.fs.name)
        used = set(predictor.bundle["training_sites"]) | set(predictor.bundle.get("validation_sites", []))
        seen = used & {s.site_id for s in sites}
        if seen and not args.allow_training_sites:
            raise TamrlError(f"{len(seen)} evaluation site(s) were used to train or validate {label} "
                             f"(e.g. {sorted(seen)[0]}): "
                             "zero-shot scores need held-out sites (use --exclude-sites-file, or "
                             "--allow-training-sites to score them anyway)")
        frames.append(site_predictions(predictor, sites, label))
        site_table = pd.DataFrame({"site": [s.site_id for s in sites], "igbp": [s.igbp for s in sites],
                                   "koppen": [s.koppen for s in sites]})
    reference = args.reference if args.reference in labels else labels[0]
    paths = write_report(pd.concat(frames, ignore_index=True), site_table, args.out, reference=reference)
    print(f"evaluated {', '.join(labels)} on {len(site_table)} sites; report: {paths['report']}, "
          f"daily predictions: {paths['predictions']}")


def build_parser() -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    """The science-core commands; outer layers (``jobs``) add theirs to the returned subparsers."""
    parser = argparse.ArgumentParser(prog="tamrl", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model (tamrl, tamlstm, ctlstm, xgboost) into a checkpoint")
    p.add_argument("--model", choices=get_args(ModelName))
    p.add_argument("--feature-set", choices=list(FEATURE_SETS))
    p.add_argument("--seeds", type=int, help="ensemble members (default 10)")
    p.add_argument("--epochs", type=int, help="epochs of stage 1 (a fixed budget)")
    p.add_argument("--epochs-stage2", type=int, help="epochs of TAM-RL's joint stage (a fixed budget)")
    p.add_argument("--val-fraction", type=float,
                   help="share of sites held out to monitor training (XGBoost chooses its rounds on them)")
    p.add_argument("--zero-embedding", action="store_true", help="the z-off control: a joint stage with z = 0")
    p.add_argument("--hidden", type=int)
    p.add_argument("--max-steps-per-epoch", type=int)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"])
    p.add_argument("--config", type=Path, help="TOML run config; command-line options override it")
    p.add_argument("--out", type=Path, required=True, help="checkpoint file to write")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    _site_options(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("predict", help="daily GPP/RECO/NEE for one location from its drivers alone")
    p.add_argument("--checkpoint", default="default", help="checkpoint file or shipped name (default, met)")
    p.add_argument("--drivers", type=Path, required=True, help="daily drivers (CSV/Parquet with a date column)")
    p.add_argument("--support-drivers", type=Path,
                   help="drivers of other periods for the support set (default: the --drivers record itself)")
    p.add_argument("--lat", type=float, required=True)
    p.add_argument("--lon", type=float, required=True)
    p.add_argument("--igbp", required=True, help="IGBP class of the location, e.g. ENF")
    p.add_argument("--koppen", required=True, help="Koppen major group of the location, A-E")
    p.add_argument("--out", type=Path, help="CSV to write (default: standard output)")
    p.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    add_precision(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("evaluate", help="zero-shot scores of checkpoints on held-out sites, with plots")
    p.add_argument("--checkpoint", action="append", required=True, help="repeat to compare models")
    p.add_argument("--label", action="append", help="a name per checkpoint (default: its model name)")
    p.add_argument("--reference", default="xgboost", help="label the others are compared with")
    p.add_argument("--out", type=Path, required=True, help="report folder")
    p.add_argument("--allow-training-sites", action="store_true")
    p.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    _site_options(p)
    p.set_defaults(func=cmd_evaluate)
    return parser, sub


def main(argv: list[str] | None = None, parser: argparse.ArgumentParser | None = None) -> int:
    """Run a command; domain errors print as one line and exit with status 2, Ctrl-C as one line with 130."""
    args = (parser or build_parser()[0]).parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        args.func(args)
    except TamrlError as exc:
        print(f"tamrl {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tamrl {args.command}: interrupted; finished tiles are kept (run it again to resume)", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
