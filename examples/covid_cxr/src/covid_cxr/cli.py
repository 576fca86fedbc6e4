"""The ``covid-cxr`` command: ``quick`` (the synthetic study), ``study`` (real data), and its stages.

Every stage is resumable and a stage run twice does nothing the second time; a later stage runs
the earlier ones first (free when they are done).
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import json
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

# Set before torch loads (the commands import it): OpenMP threads waiting for work sleep instead of spinning.
# On a machine busy with other work, spinning threads burnt several times the CPU time of the work itself.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import xai_bench  # after the OpenMP setting: it imports torch


class InputError(ValueError):
    """A bad argument, or data that cannot be read as the study's, found before the study starts."""


@contextlib.contextmanager
def _reading_inputs() -> Iterator[None]:
    # The loaders raise ValueError for what they cannot read (unknown labels, a split file that is no
    # split): there it is the user's input at fault. Later, a ValueError is a bug and keeps its traceback.
    try:
        yield
    except ValueError as exc:
        raise InputError(str(exc)) from exc


def _quick(args: argparse.Namespace) -> int:
    from .models import ARCHITECTURES
    from .quick import QuickConfig, quick

    _fits(args.size, ARCHITECTURES)
    config = QuickConfig(images=args.images, size=args.size, folds=args.folds, epochs=args.epochs,
                         explain_images=args.explain_images, seed=args.seed, methods=args.methods)  # fmt: skip
    wall, cpu = time.perf_counter(), time.process_time()
    report = quick(args.out, config)
    print(f"report: {report} ({time.perf_counter() - wall:.0f} s, {time.process_time() - cpu:.0f} CPU s)")
    return 0


def _fits(size: int, models: Sequence[str]) -> None:
    from .models import MIN_SIZE

    small = [m for m in models if size < MIN_SIZE[m]]
    if small:
        need = max(MIN_SIZE[m] for m in small)
        them = "it" if len(small) == 1 else "them"
        raise InputError(
            f"--size {size} is below the smallest input of {', '.join(small)} ({need} px); give --size {need} or "
            f"more, or leave {them} out of --models."
        )


def _json(path: str, option: str):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"{option} {path} is not JSON: {exc}") from exc


def _records(args: argparse.Namespace):
    from .datasets import cohen_collection, csv_folder, kermany, study_sample
    from .labels import Hierarchy

    if not (args.cohen or args.kermany or args.csv):
        raise InputError("give --cohen, --kermany and/or --csv FOLDER TABLE: the study needs images.")
    hierarchy = Hierarchy.load()
    if args.labels:
        hierarchy = hierarchy.with_labels(_json(args.labels, "--labels"), args.labels)
    if args.authors_metadata:
        return _authors_records(args, hierarchy)
    records = []
    if args.cohen:
        records += cohen_collection(args.cohen, hierarchy)
    if args.kermany:
        ker = kermany(args.kermany)
        records += study_sample(ker, healthy=args.healthy, viral=args.viral, bacterial=args.bacterial, seed=args.seed)
    if args.csv:
        folder, table = args.csv
        records += csv_folder(folder, table, hierarchy)
    if not records:
        raise InputError("the data given holds no image to study (the loaders' warnings say what they left out).")
    return records, []


def _authors_records(args: argparse.Namespace, hierarchy):
    """The study authors' own images (``--authors-metadata``) found in --cohen and --kermany, and the line
    that says what those copies lack."""
    from .authors import select_authors_images

    if args.csv:
        raise InputError("--authors-metadata takes the study authors' images from --cohen and --kermany; leave out "
                         "--csv (or --authors-metadata).")  # fmt: skip
    selection = select_authors_images(args.authors_metadata, cohen=args.cohen, kermany_root=args.kermany,
                                      hierarchy=hierarchy)  # fmt: skip
    if not selection.records:
        raise InputError(f"none of the images of --authors-metadata is in --cohen or --kermany. {selection.summary()}")
    return selection.records, [selection.summary()]


def _study(args: argparse.Namespace) -> int:
    from .splits import load_split, overlap_line
    from .study import Study, StudyConfig

    config = StudyConfig(size=args.size, folds=len(args.split_files) if args.split_files else args.folds,
                         epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, schedule=args.schedule,
                         seed=args.seed, pretrained=args.pretrained, device=args.device, models=args.models,
                         threshold=args.threshold,
                         explain_images=args.explain_images, ig_steps=args.ig_steps, methods=args.methods,
                         occlusion_windows=args.occlusion_windows, occlusion_window=args.occlusion_window,
                         occlusion_stride=args.occlusion_stride, occlusion_fill=args.occlusion_fill,
                         memory_budget=args.memory_budget, explain_batch_size=args.explain_batch_size,
                         outputs=args.outputs, explain_fold=args.explain_fold,
                         deepliftshap=args.deepliftshap, explained_output=args.explained_output)  # fmt: skip
    stage = "report" if args.command == "study" else args.command
    if stage != "data":
        _fits(args.size, args.models)
    if isinstance(args.explain_fold, int) and args.explain_fold >= config.folds:
        raise InputError(f"--explain-fold {args.explain_fold}: the study has {config.folds} folds, 0 to "
                         f"{config.folds - 1}; or give 'best'.")  # fmt: skip
    window = args.occlusion_window or args.size // args.occlusion_windows
    if args.occlusion_window and args.occlusion_window > args.size:
        raise InputError(f"--occlusion-window {args.occlusion_window} is larger than --size {args.size}.")
    if args.occlusion_stride and args.occlusion_stride > max(4, window):
        raise InputError(
            f"--occlusion-stride {args.occlusion_stride} is larger than the window ({max(4, window)} "
            "px): pixels between windows would be left out; give a stride no larger than the window."
        )
    if args.occlusion_windows > args.size:
        raise InputError(f"--occlusion-windows {args.occlusion_windows} is more than --size {args.size}: the "
                         "occlusion window (size / windows) would be under a pixel.")  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        with _reading_inputs():
            records, notes = _records(args)
            for path in args.split_files or ():  # load_split's own errors would not name the file
                if not isinstance(_json(path, "--split-files"), dict):
                    raise InputError(f"--split-files {path}: expected one JSON object (seed, train, test, val).")
            # Kept as published: the study authors' folds name a few patients on both sides (warned, counted).
            splits = [load_split(path, keep_overlap=True) for path in args.split_files] if args.split_files else None
        notes += [overlap_line(splits)] if splits else []
        for note in notes:  # what the data lacks and the folds leak, before the stages' own output
            print(note)
        study = Study(records, args.out, config, splits=splits, notes=notes)
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
        print(f"profiles of {', '.join(done)}: {out / 'profiles'}")
    elif stage == "figures":
        print(f"{len(done)} figures: {out / 'figures'}")
    else:
        print(f"report: {done}")
    return 0


def _number(kind: Callable[[str], float], low: float, what: str, *, above: bool = False) -> Callable[[str], float]:
    """An argparse type: a finite number of ``kind`` at least ``low`` (above it with ``above``)."""

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or value < low or (above and value == low):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


positive = _number(int, 1, "a whole number of at least 1")
count = _number(int, 0, "a whole number of at least 0")
positive_float = _number(float, 0, "a number above 0", above=True)


def share(text: str) -> float:
    """An argparse type: a number strictly between 0 and 1."""
    value = _number(float, 0, "a number between 0 and 1", above=True)(text)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}")
    return value


def unit(text: str) -> float:
    """An argparse type: a number from 0 to 1."""
    value = _number(float, 0, "a number from 0 to 1")(text)
    if value > 1:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text!r}")
    return value


def _batch_size(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return positive(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected a positive number of images or 'auto', got {text!r}") from None


def _methods(text: str) -> tuple[str, ...]:
    """An argparse type: comma-separated ids of installed xai_bench methods."""
    from xai_bench import list_methods

    installed = list(list_methods())
    names = tuple(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    for name in names:
        if name not in installed:
            close = difflib.get_close_matches(name, installed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise argparse.ArgumentTypeError(f"unknown method {name!r}{hint}; `xai-bench methods` lists them")
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated method ids, got {text!r}")
    return names


def _models(text: str) -> tuple[str, ...]:
    from .models import ARCHITECTURES

    names = tuple(name.strip() for name in text.split(",") if name.strip())
    for name in names:
        if name not in ARCHITECTURES:
            close = difflib.get_close_matches(name, ARCHITECTURES, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise argparse.ArgumentTypeError(
                f"unknown architecture {name!r}{hint}; the study's are {', '.join(ARCHITECTURES)}"
            )
    if not names:
        raise argparse.ArgumentTypeError(f"expected comma-separated architectures, got {text!r}")
    return names


def _outputs(text: str) -> str | tuple[str, ...]:
    """An output set's name, or labels of the hierarchy separated by commas."""
    from .labels import Hierarchy

    hierarchy = Hierarchy.load()
    # One word that is no label names a set (and is refused as one); anything else lists labels.
    one_set = "," not in text and text.strip() not in hierarchy.parents
    chosen = text.strip() if one_set else tuple(name.strip() for name in text.split(",") if name.strip())
    try:
        hierarchy.with_outputs(chosen)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).rstrip(".")) from None
    return chosen


def _fold(text: str) -> int | str:
    if text == "best":
        return text
    try:
        return count(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected 'best' or a fold number from 0, got {text!r}") from None


def _device(text: str) -> str:
    import torch

    try:
        device = torch.device(text)
    except RuntimeError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} is no device ({exc})") from None
    if device.type == "cuda":
        have = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (device.index or 0) >= have:
            raise argparse.ArgumentTypeError(
                f"{text!r}: this machine has {have or 'no'} CUDA device{'s' if have > 1 else ''}; use --device cpu"
                + (f" or cuda:0 to cuda:{have - 1}" if have else "")
            )
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise argparse.ArgumentTypeError(f"{text!r}: this machine has no MPS device; use --device cpu")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise argparse.ArgumentTypeError(f"{text!r}: the study runs on cpu, cuda or mps")
    return text


def _budget(text: str) -> str:
    try:
        xai_bench.Passes(memory_budget=text)
    except xai_bench.InvalidParameterError as exc:
        raise argparse.ArgumentTypeError(str(exc).rstrip(".")) from None
    return text


def _path(kind: str) -> Callable[[str], str]:
    """An argparse type: a path that exists, and is a folder (``kind="folder"``) or a file (``"file"``)."""

    def parse(text: str) -> str:
        path = Path(text)
        if not path.exists():
            raise argparse.ArgumentTypeError(f"no {kind} at {text}")
        if (kind == "folder" and not path.is_dir()) or (kind == "file" and not path.is_file()):
            raise argparse.ArgumentTypeError(f"{text} is no {kind}")
        return text

    return parse


def _out(text: str) -> str:
    """An argparse type: an output folder that exists or can be made and written (not under a file)."""
    folder = Path(text).absolute()
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise argparse.ArgumentTypeError(f"{folder} is a file, not a folder; choose another path")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise argparse.ArgumentTypeError(f"the folder {folder} is read-only; choose a folder you can write")
    return text


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line on stderr (exit 2), pointing at ``--help``."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}; `{self.prog} --help` lists the options.\n")


def build_parser() -> argparse.ArgumentParser:
    from importlib.metadata import version

    from .interpret import STUDY_METHODS
    from .models import ARCHITECTURES
    from .quick import QuickConfig

    parser = OneLineParser(prog="covid-cxr", description="The COVID-19 chest X-ray study on xai_bench.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {version('covid-cxr')}")
    sub = parser.add_subparsers(dest="command", required=True)
    q = sub.add_parser("quick", help="the whole study on synthetic phantoms, on a CPU (minutes)")
    q.add_argument("--out", type=_out, default="covid_cxr_quick", help="output folder (default: covid_cxr_quick)")
    defaults = QuickConfig()
    q.add_argument("--images", type=positive, default=defaults.images,
                   help=f"phantoms to draw (default: {defaults.images})")  # fmt: skip
    q.add_argument("--size", type=positive, default=defaults.size,
                   help=f"image size in pixels, at least 75 (default: {defaults.size})")  # fmt: skip
    q.add_argument("--folds", type=positive, default=defaults.folds,
                   help=f"subject-wise folds (default: {defaults.folds})")  # fmt: skip
    q.add_argument("--epochs", type=positive, default=defaults.epochs,
                   help=f"training epochs, warm-up and cosine decay (default: {defaults.epochs})")  # fmt: skip
    q.add_argument("--explain-images", type=positive, default=defaults.explain_images,
                   help=f"test images to explain (default: {defaults.explain_images})")  # fmt: skip
    q.add_argument("--seed", type=int, default=0, help="seed of the phantoms, folds and training (default: 0)")
    q.add_argument("--methods", type=_methods, default=STUDY_METHODS, metavar="IDS",
                   help=f"comma-separated xai_bench methods to explain with, e.g. grad_cam,lime (default: the "
                   f"study's six, {','.join(STUDY_METHODS)})")  # fmt: skip
    q.set_defaults(func=_quick)
    stages = (
        ("study", "the whole study on real data (every stage below, then the report)"),
        ("data", "prepare images and folds"),
        ("train", "train every model on every fold"),
        ("evaluate", "test scores and Table 2"),
        (
            "explain",
            "the six methods (or --methods) for every true and predicted label of the test images; the padding table",
        ),
        ("profile", "NAPs and dead feature maps of every model"),
        ("figures", "the paper's figures"),
        ("report", "report.md with every table and figure"),
    )
    for name, text in stages:
        p = sub.add_parser(name, help=text)
        p.add_argument("--out", type=_out, default="covid_cxr_study", help="output folder (default: covid_cxr_study)")
        p.add_argument("--cohen", type=_path("folder"),
                       help="the COVID-19 image data collection, metadata.csv + images/ (default: none)")  # fmt: skip
        p.add_argument("--kermany", type=_path("folder"),
                       help="Kermany's chest_xray folder, {train,test}/{NORMAL,PNEUMONIA} (default: none)")  # fmt: skip
        p.add_argument("--csv", nargs=2, type=_path("file or folder"), metavar=("FOLDER", "TABLE"),
                       help="your own images and their labels CSV: file, labels (';'-separated), optional "
                       "patient_id and view columns (default: none)")  # fmt: skip
        p.add_argument("--labels", type=_path("file"), metavar="JSON",
                       help='your labels in the study\'s: a JSON object such as {"covid pneumonia": "COVID-19", '
                       '"ards + covid": ["ARDS", "COVID-19"]} (default: the study\'s names and aliases)')  # fmt: skip
        p.add_argument("--healthy", type=count, default=500, help="healthy Kermany images drawn (default: 500)")
        p.add_argument("--viral", type=count, default=250, help="viral Kermany images drawn (default: 250)")
        p.add_argument("--bacterial", type=count, default=250, help="bacterial Kermany images drawn (default: 250)")
        p.add_argument("--size", type=positive, default=512, help="image size in pixels (default: 512)")
        p.add_argument("--folds", type=positive, default=5,
                       help="subject-wise folds, unless --split-files are given (default: 5)")  # fmt: skip
        p.add_argument("--epochs", type=positive, default=20, help="training epochs (default: 20)")
        p.add_argument("--batch-size", type=positive, default=16, help="training batch size (default: 16)")
        p.add_argument("--lr", type=positive_float, default=1e-3, help="Adam's learning rate (default: 1e-3)")
        p.add_argument("--schedule", choices=("constant", "cosine"), default="constant",
                       help="the learning rate over training: constant, or one epoch of warm-up then cosine decay "
                       "to zero (default: constant)")  # fmt: skip
        p.add_argument("--models", type=_models, default=ARCHITECTURES,
                       help=f"comma-separated architectures (default: {','.join(ARCHITECTURES)})")  # fmt: skip
        p.add_argument("--pretrained", action="store_true",
                       help="start from ImageNet weights, which you must have (default: random weights)")  # fmt: skip
        p.add_argument("--device", type=_device, default="cpu", help="cpu, cuda, cuda:1, ... (default: cpu)")
        p.add_argument("--seed", type=int, default=0, help="seed of the draws, folds and training (default: 0)")
        p.add_argument("--threshold", type=share, default=0.5,
                       help="sigmoid threshold of a positive label (default: 0.5)")  # fmt: skip
        p.add_argument("--split-files", nargs="+", type=_path("file"), metavar="JSON",
                       help="the study authors' split files (one fold each) instead of drawing folds; subjects "
                       "named on two sides are kept, counted per fold (default: draw --folds)")  # fmt: skip
        p.add_argument("--authors-metadata", type=_path("file"), metavar="CSV",
                       help="the study authors' image list (their metadataV2.csv): study exactly its frontal X-rays "
                       "found in --cohen and --kermany, under their patient ids, instead of drawing from Kermany's "
                       "(default: none)")  # fmt: skip
        p.add_argument(
            "--outputs",
            type=_outputs,
            default="paper",
            help="the models' outputs: an output set of labels.json (paper: COVID-19, pneumonia, viral, "
            "bacterial, healthy, as the paper's Fig. 3; three: COVID-19, pneumonia, healthy; "
            "authors-code: the 14 of the authors' code) or labels separated by commas (default: paper)",
        )
        p.add_argument("--explain-fold", type=_fold, default="best",
                       help="the fold whose test images are explained and profiled, or 'best': the fold with the "
                       "best micro F1 of the majority-vote ensemble (default: best)")  # fmt: skip
        p.add_argument("--explain-images", type=positive, help="explain this many test images (default: all)")
        p.add_argument("--ig-steps", type=positive, default=32, help="integrated gradients' steps (default: 32)")
        p.add_argument("--methods", type=_methods, default=STUDY_METHODS, metavar="IDS",
                       help="comma-separated xai_bench methods to explain with (`xai-bench methods` lists them; "
                       f"default: the study's six, {','.join(STUDY_METHODS)})")  # fmt: skip
        p.add_argument("--occlusion-windows", type=positive, default=16,
                       help="occlusion window = size / this, unless --occlusion-window is given (default: 16: "
                       "32 px at 512 px, 31 x 31 = 961 forward passes per image and model)")  # fmt: skip
        p.add_argument(
            "--occlusion-window",
            type=positive,
            metavar="PX",
            help="occlusion window in pixels, e.g. 50 (default: size / --occlusion-windows)",
        )
        p.add_argument(
            "--occlusion-stride",
            type=positive,
            metavar="PX",
            help="occlusion stride in pixels, e.g. 4: ((size - window) / stride + 1)^2 forward passes "
            "per image and model, 117 x 117 = 13,689 for 50 and 4 at 512 px (default: half the window)",
        )
        p.add_argument("--occlusion-fill", type=unit, default=0.0,
                       help="the value inside the occlusion window, in image units [0, 1]: 0 black like the "
                       "padding, 0.5 a grey square (default: 0)")  # fmt: skip
        p.add_argument("--deepliftshap", action="store_true",
                       help="also DeepLIFT averaged over 10 references drawn from N(0, 0.001^2), as the authors' "
                       "code's DeepLiftShap, into maps_deepliftshap/ (default: off)")  # fmt: skip
        p.add_argument("--explained-output", choices=("logit", "sigmoid"), default="logit",
                       help="what the maps explain: each output's logit, or its sigmoid (the model "
                       "wrapped in a sigmoid; default: logit: where a sigmoid is confident, it is flat)")  # fmt: skip
        p.add_argument("--memory-budget", type=_budget,
                       help="e.g. 20GiB: the explaining engine's budget (default: half of what is free)")  # fmt: skip
        p.add_argument("--explain-batch-size", type=_batch_size, default="auto",
                       help="images per explaining pass, or 'auto' (default: auto)")  # fmt: skip
        p.set_defaults(func=_study)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    # Bad inputs, the library's refusals and the system's errors about files: one line each. Anything
    # else is a bug: a traceback.
    except (InputError, xai_bench.XaiBenchError, OSError) as exc:
        print(f"covid-cxr: error: {_one_line(exc)}", file=sys.stderr)
        return 2


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror and exc.filename:
        text = f"{exc.strerror}: {exc.filename}"
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


if __name__ == "__main__":
    sys.exit(main())
