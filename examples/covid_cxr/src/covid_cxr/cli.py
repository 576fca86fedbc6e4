"""The ``covid-cxr`` command: ``quick`` (the synthetic study), ``study`` (real data), and its stages.

Every stage is resumable and a stage run twice does nothing the second time; a later stage runs
the earlier ones first (free when they are done).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path


def _quick(args: argparse.Namespace) -> int:
    from .quick import QuickConfig, quick

    config = QuickConfig(images=args.images, size=args.size, folds=args.folds, epochs=args.epochs,
                         explain_images=args.explain_images, seed=args.seed)  # fmt: skip
    report = quick(args.out, config)
    print(f"report: {report}")
    return 0


def _records(args: argparse.Namespace):
    from .datasets import cohen_collection, csv_folder, kermany, study_sample

    records = []
    if args.cohen:
        records += cohen_collection(args.cohen)
    if args.kermany:
        ker = kermany(args.kermany)
        records += study_sample(ker, healthy=args.healthy, viral=args.viral, bacterial=args.bacterial, seed=args.seed)
    if args.csv:
        folder, table = args.csv
        records += csv_folder(folder, table)
    if not records:
        raise SystemExit("covid-cxr: error: give --cohen, --kermany and/or --csv FOLDER TABLE")
    return records


def _study(args: argparse.Namespace) -> int:
    from .splits import load_split
    from .study import Study, StudyConfig

    config = StudyConfig(size=args.size, folds=len(args.split_files) if args.split_files else args.folds,
                         epochs=args.epochs, batch_size=args.batch_size, seed=args.seed, pretrained=args.pretrained,
                         device=args.device, models=tuple(args.models.split(",")), threshold=args.threshold,
                         explain_images=args.explain_images, ig_steps=args.ig_steps,
                         occlusion_windows=args.occlusion_windows, memory_budget=args.memory_budget,
                         explain_batch_size=_batch_size(args.explain_batch_size))  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        records = _records(args)
        splits = [load_split(path) for path in args.split_files] if args.split_files else None
        study = Study(records, args.out, config, splits=splits)
        stage = "report" if args.command == "study" else args.command
        done = study.until(stage)
    out = Path(args.out)
    if stage == "data":
        print(f"{len(records)} images prepared at {config.size} px; {len(done[1])} folds: {out / 'splits.json'}")
    elif stage == "train":
        print(f"{len(done)} models trained: {out / 'checkpoints'}")
    elif stage == "evaluate":
        print((out / "table2.md").read_text())
    elif stage == "explain":
        print(f"{len(done.rows)} test images explained: {out / 'maps'}, {out / 'padding.csv'}")
    elif stage == "profile":
        print(f"profiles of {', '.join(done) or 'no model (the study profiles ResNets and DenseNets)'}: "
              f"{out / 'profiles'}")  # fmt: skip
    elif stage == "figures":
        print(f"{len(done)} figures: {out / 'figures'}")
    else:
        print(f"report: {done}")
    return 0


def _batch_size(text: str) -> int | str:
    return text if text == "auto" else int(text)


def build_parser() -> argparse.ArgumentParser:
    from importlib.metadata import version

    from .models import ARCHITECTURES

    parser = argparse.ArgumentParser(prog="covid-cxr", description="The COVID-19 chest X-ray study on xai_bench.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {version('covid-cxr')}")
    sub = parser.add_subparsers(dest="command", required=True)
    q = sub.add_parser("quick", help="the whole study on synthetic phantoms, on a CPU (minutes)")
    q.add_argument("--out", default="covid_cxr_quick")
    q.add_argument("--images", type=int, default=400)
    q.add_argument("--size", type=int, default=80)
    q.add_argument("--folds", type=int, default=2)
    q.add_argument("--epochs", type=int, default=6)
    q.add_argument("--explain-images", type=int, default=16)
    q.add_argument("--seed", type=int, default=0)
    q.set_defaults(func=_quick)
    stages = (
        ("study", "the whole study on real data (every stage below, then the report)"),
        ("data", "prepare images and folds"),
        ("train", "train every model on every fold"),
        ("evaluate", "test scores and Table 2"),
        ("explain", "six methods for every true and predicted label of the test images; the padding table"),
        ("profile", "NAPs and dead feature maps (ResNets, DenseNets)"),
        ("figures", "the paper's figures"),
        ("report", "report.md with every table and figure"),
    )
    for name, text in stages:
        p = sub.add_parser(name, help=text)
        p.add_argument("--out", default="covid_cxr_study")
        p.add_argument("--cohen", help="the COVID-19 image data collection (metadata.csv + images/)")
        p.add_argument("--kermany", help="Kermany's chest_xray folder ({train,test}/{NORMAL,PNEUMONIA})")
        p.add_argument("--csv", nargs=2, metavar=("FOLDER", "TABLE"), help="your own images and labels CSV")
        p.add_argument("--healthy", type=int, default=500)
        p.add_argument("--viral", type=int, default=250)
        p.add_argument("--bacterial", type=int, default=250)
        p.add_argument("--size", type=int, default=512)
        p.add_argument("--folds", type=int, default=5)
        p.add_argument("--epochs", type=int, default=20)
        p.add_argument("--batch-size", type=int, default=16)
        p.add_argument("--models", default=",".join(ARCHITECTURES))
        p.add_argument("--pretrained", action="store_true", help="start from ImageNet weights (you must have them)")
        p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--threshold", type=float, default=0.5, help="sigmoid threshold of a positive label")
        p.add_argument("--split-files", nargs="+", metavar="JSON",
                       help="the study authors' split files (one fold each) instead of drawing folds")  # fmt: skip
        p.add_argument("--explain-images", type=int, help="explain this many test images (default: all)")
        p.add_argument("--ig-steps", type=int, default=32)
        p.add_argument("--occlusion-windows", type=int, default=16,
                       help="occlusion window = size / this, stride half the window (16: 32 px at 512)")  # fmt: skip
        p.add_argument("--memory-budget", help="e.g. 20GiB: the explaining engine's budget (default: what is free)")
        p.add_argument("--explain-batch-size", default="auto")
        p.set_defaults(func=_study)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
