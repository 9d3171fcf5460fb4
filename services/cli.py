"""`facegate` command line: run the embedded stack, calibrate a model, measure accuracy levers, train a head.

Heavy modules (TensorFlow, database drivers) are imported only by the subcommand that needs them.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="facegate")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="start Postgres, Redis and the services on this machine")
    run.add_argument("--data-dir", default="data", help="where the embedded Postgres and Redis keep their data")
    run.add_argument("--verbose", action="store_true", help="show the libraries' own start-up banners and warnings")

    cal = sub.add_parser(
        "calibrate", help="fit each model's calibration on part of a labelled face set, measure it on the rest"
    )
    cal.add_argument("--faces", default="../shared/faces/calib", help="folder of <identity>/*.jpg")
    cal.add_argument(
        "--model", default=None, help="model id, or several comma-separated ids (default: the configured one)"
    )
    cal.add_argument("--plot-dir", default="bench/out", help="where to write det-<model>.png")
    cal.add_argument("--json", default=None, help="also write the report as JSON here")
    cal.add_argument("--write", action="store_true", help="store the calibration in services/contracts/calibrations/")
    cal.add_argument("--cache-dir", default="data/calib-cache", help="embeddings are cached here")

    lev = sub.add_parser(
        "levers", help="measure fusion, flips, templates and a trained head on the held-back identities"
    )
    lev.add_argument("--faces", default="../shared/faces/calib", help="folder of <identity>/*.jpg")
    lev.add_argument(
        "--cache-dir", action="append", default=None,
        help="embedding caches to read, in order; the last also receives new ones (default: data/calib-cache)",
    )  # fmt: skip
    lev.add_argument("--json", default=None, help="also write the report as JSON here")
    lev.add_argument(
        "--head", action="append", default=[], help="a `facegate train` artefact to measure as one more lever"
    )
    lev.add_argument("--no-cost", action="store_true", help="skip the CPU cost measurement (loads both models)")
    lev.add_argument("--no-flip", action="store_true", help="skip flip TTA (needs the mirrored chips embedded)")

    tr = sub.add_parser("train", help="fit a triplet-loss adaptation head on a frozen model's embeddings")
    tr.add_argument("--faces", default="../shared/faces/calib", help="folder of <identity>/*.jpg")
    tr.add_argument("--model", default=None, help="model id (default: the configured one)")
    tr.add_argument("--out", default=None, help="artefact path (default: data/heads/<model>.npz)")
    tr.add_argument("--epochs", type=int, default=20)
    tr.add_argument("--cache-dir", action="append", default=None, help="embedding caches, as for `levers`")

    args = parser.parse_args(argv)
    if args.command == "run":
        import os

        if args.verbose:
            os.environ["FACEGATE_VERBOSE"] = "1"  # the services inherit it (services/embedder/__init__.py)
        else:
            import warnings

            # pgserver's platformdirs warns on machines without a login session; the data dir is explicit here
            warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
        from services.stack import run_stack

        return run_stack(data_dir=args.data_dir)
    if args.command == "calibrate":
        from services.tools.calibrate import run_calibration

        return run_calibration(
            faces=args.faces,
            model_id=args.model,
            plot_dir=args.plot_dir,
            json_path=args.json,
            write=args.write,
            cache_dir=args.cache_dir,
        )
    if args.command == "levers":
        from services.tools.levers import run_levers

        return run_levers(
            faces=args.faces,
            cache_dirs=args.cache_dir or ["data/calib-cache"],
            json_path=args.json,
            heads=args.head,
            cost=not args.no_cost,
            flips=not args.no_flip,
        )
    if args.command == "train":
        from services.embedder.settings import EmbedderSettings
        from services.tools.train import run_train

        return run_train(
            faces=args.faces,
            model_id=args.model or EmbedderSettings().model_id,
            out=args.out,
            epochs=args.epochs,
            cache_dirs=args.cache_dir or ["data/calib-cache"],
        )
    return 2


if __name__ == "__main__":
    sys.exit(main())
