"""The ``xai-bench`` command."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.errors import InvalidInputError, InvalidParameterError, StoreDamagedError, XaiBenchError

if TYPE_CHECKING:
    from ..api.passes import Passes

#: The seconds ``run --scheduler`` waits for the scheduler to answer (dask's own default is 30).
CONNECT_TIMEOUT = 10.0


def _methods(args: argparse.Namespace) -> int:
    from ..api.explaining import list_methods

    for method_id, info in list_methods().items():
        flags = [k for k in ("needs_baseline", "needs_surgery", "multiplies_by_inputs", "has_delta") if info[k]]
        _print_entry(method_id, info, " ".join(flags) or "-")
    return 0


def _print_entry(entry_id: str, info: dict, flags: str) -> None:
    """Three plain-text lines: id, provider and flags; the summary; the parameters."""
    print(f"{entry_id:<24} {info['provider']:<32} {flags}")
    print(f"{'':<24} {info['summary'].replace('``', '')}")
    if info["parameters"]:
        print(f"{'':<24} parameters: {', '.join(f'{k}={v!r}' for k, v in info['parameters'].items())}")


def _metrics(args: argparse.Namespace) -> int:
    from ..api.evaluating import list_metrics

    for metric_id, info in list_metrics().items():
        needs = [k.removeprefix("needs_") for k in ("needs_masks", "needs_model") if info[k]]
        better = "higher is better" if info["higher_is_better"] else "lower is better"
        _print_entry(metric_id, info, better + ("; needs " + ", ".join(needs) if needs else ""))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    import numpy as np

    from ..api.evaluating import evaluate, list_metrics
    from ..scale.factories import FactoryWithCheckpoint, load_factory
    from ..storage.zarr_io import open_maps

    _sound(args.store)  # refuse damaged chunks before any work, not halfway through the metrics
    model = None
    if args.model:
        load_factory(args.model)
        model = FactoryWithCheckpoint(args.model, args.checkpoint)()
    masks = None
    if args.masks:
        try:
            masks = np.load(args.masks)
        except (OSError, ValueError) as exc:
            raise InvalidParameterError(f"cannot read masks {args.masks!r} (a .npy array): {exc}") from exc
    chosen = _methods_arg(args.metrics)
    methods = _methods_arg(args.methods) if args.methods else None
    listing = list_metrics()
    calling = [
        m for m in (chosen if isinstance(chosen, list) else list(chosen)) if listing.get(m, {}).get("needs_model")
    ]
    if calling and model is None:
        raise InvalidParameterError(f"{', '.join(calling)} call the model: give it with --model module:function.")
    result = evaluate(
        open_maps(args.store), metrics=chosen, model=model, masks=masks, methods=methods, passes=_passes(args),
        into=args.out or args.store, overwrite=args.overwrite,
    )  # fmt: skip
    names = sorted(result.data_vars)
    listed = ", ".join(names[:8]) + (" ..." if len(names) > 8 else "")
    print(f"{len(names)} metric variables written to {args.out or args.store}: {listed}")
    skipped = json.loads(result.attrs.get("skipped", "{}"))
    for name, why in skipped.items():
        print(f"  skipped {name}: {why}")
    return 0


def _plugins(args: argparse.Namespace) -> int:
    from ..plugins.manager import list_plugins

    for info in list_plugins():
        origin = "built-in" if info.builtin else f"{info.distribution} {info.version}"
        print(f"{info.name:<36} {origin}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    _writable(args.out, "--out")
    result = run_demo(args.out, steps=args.steps)
    print(f"test accuracy of the demo CNN: {result.accuracy:.1%}")
    print("share of |attribution| inside the object (higher is better; objects cover about 4% of the pixels):")
    for method, share in result.inside_share.items():
        print(f"  {method:<22} {share:.1%}")
    for method, delta in result.max_delta.items():
        print(f"max |completeness delta| of {method}: {delta:.2e}")
    print(f"maps: {result.store}\nfigure: {result.figure}")
    return 0


def _sound(store: str) -> None:
    """Refuse a store with damaged samples in one line that says how to find and mend them."""
    from ..storage.zarr_io import verify_store

    damaged = list(verify_store(store, checksums=True).damaged)
    if damaged:
        shown = ", ".join(repr(s) for s in damaged[:3]) + (f" and {len(damaged) - 3} more" if len(damaged) > 3 else "")
        raise StoreDamagedError(
            f"{store} has {len(damaged)} damaged samples ({shown}); `xai-bench verify {store}` lists their arrays, "
            "and the same `xai-bench run` again recomputes them."
        )


def _writable(path: str, option: str) -> None:
    """Refuse, before any work, an output path whose nearest existing folder is a file or read-only."""
    folder = Path(path).absolute()
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise NotADirectoryError(f"{option} {path}: {folder} is a file, not a folder; choose another path.")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f"{option} {path}: the folder {folder} is read-only; choose a folder you can write.")


def _client(address: str, timeout: float):
    from dask.distributed import Client

    try:
        return Client(address, timeout=timeout)
    except ValueError as exc:  # distributed's parse of the address: no port, unknown protocol
        raise InvalidParameterError(f"--scheduler {address!r} is no dask scheduler address: {exc}") from exc
    except OSError as exc:  # distributed raises OSError (a TimeoutError) when nothing answers
        raise ConnectionError(
            f"no dask scheduler answered at {address!r} within {timeout:g} s; start one (`dask scheduler`), check "
            "the address, or wait longer with --connect-timeout."
        ) from exc


def _positive(kind: type, text: str, what: str) -> int | float:
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    return _positive(int, text, "a whole number of at least 1")


def positive_float(text: str) -> float:
    """An argparse type: a finite number above 0."""
    return _positive(float, text, "a number above 0")


def _targets(text: str):
    if text in ("predicted", "all"):
        return text
    parts = [p.strip() for p in text.split(",") if p.strip()]
    return [int(p) if p.lstrip("-").isdigit() else p for p in parts]


def _passes(args: argparse.Namespace) -> Passes:
    """The passes the command line asks for: --batch-size, --memory-budget, --device; a bar on a terminal."""
    from ..api.passes import Passes

    return Passes(batch_size=args.batch_size, memory_budget=args.memory_budget, device=args.device, progress=_bars())


class _OldSpelling(argparse.Action):
    """An option's spelling of 0.2: it still works, with a note on stderr that names the new one."""

    def __init__(self, *args: Any, new: str, **kwargs: Any) -> None:
        self.new = new
        super().__init__(*args, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(f"xai-bench: note: {option_string} is deprecated; use {self.new}.", file=sys.stderr)
        setattr(namespace, self.dest, self.const if self.nargs == 0 else values)


def _batch_size(text: str) -> int | str:
    if text == "auto":
        return text
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number of images or 'auto', got {text!r}")
    return int(text)


def _methods_arg(items: list[str]):
    if len(items) == 1 and items[0].lstrip().startswith("{"):
        try:
            return json.loads(items[0])
        except json.JSONDecodeError as exc:
            raise InvalidParameterError(f"--methods is not valid JSON ({exc}): {items[0]!r}") from exc
    return [m for item in items for m in item.split(",") if m]


def _run(args: argparse.Namespace) -> int:
    from ..api.targets import Targets
    from ..scale.dataset_run import run
    from ..scale.factories import FactoryWithCheckpoint, load_factory
    from ..scale.image_folder import ImageFolder

    load_factory(args.model)  # fail early, with one line, on a bad 'module:function'
    factory = FactoryWithCheckpoint(args.model, args.checkpoint)
    if args.dataset:
        if args.normalize:
            raise InvalidParameterError(
                "--normalize applies to --images; a --dataset factory normalises its own images (give its data set "
                "an input_normalization attribute, e.g. 'imagenet', to have it recorded)."
            )
        try:
            make_dataset = load_factory(args.dataset)
        except InvalidParameterError as exc:  # its message speaks of model factories
            raise InvalidParameterError(f"--dataset: {str(exc).replace('model factory', 'factory')}") from exc
        try:
            dataset = make_dataset()
        except Exception as exc:  # the user's code: said in one line, as the model factory's
            raise InvalidParameterError(f"--dataset {args.dataset!r} raised {type(exc).__name__}: {exc}") from exc
        _check_dataset(dataset, args.dataset)
    else:
        dataset = ImageFolder(args.images, size=args.size, channels=args.channels, normalize=args.normalize)
    _writable(args.store, "--store")
    client = _client(args.scheduler, args.connect_timeout) if args.scheduler else None
    try:
        summary = run(
            factory if client is not None else factory(),
            dataset,
            methods=_methods_arg(args.methods),
            store=args.store,
            targets=Targets(
                _targets(args.targets),
                class_names=args.class_names.split(",") if args.class_names else None,
                task=args.task,
                output=args.output,
            ),
            passes=_passes(args),
            client=client,
            checksums=not args.no_checksums,
            store_inputs=args.store_inputs,
        )
    finally:
        if client is not None:
            client.close()
    print(f"{summary.computed} samples explained, {summary.skipped} already done: {summary.store}")
    return 0


def _check_dataset(dataset: object, name: str) -> None:
    import torch

    if isinstance(dataset, torch.utils.data.DataLoader):
        dataset = dataset.dataset  # run() explains a loader's data set
    if isinstance(dataset, (str, bytes)) or not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
        raise InvalidInputError(
            f"--dataset {name!r} returned {type(dataset).__name__!r}, not a data set; it must return a map-style "
            "data set (len() and indexing) of image tensors, (image, id) pairs or dicts with 'image' and 'id'."
        )


def _show(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    from ..storage.datasets import targets_of
    from ..storage.zarr_io import open_maps
    from .viz import plot_maps

    ds = open_maps(args.store)
    ids = [str(v) for v in ds["sample"].values]
    if args.sample not in ids:
        from ..core.errors import did_you_mean
        from ..storage.datasets import listing

        print(
            f"xai-bench: error: no sample {args.sample!r} in {args.store}; samples: {listing(ids)}."
            f"{did_you_mean(args.sample, ids)}",
            file=sys.stderr,
        )
        return 2
    sample = ds["sample"].values[ids.index(args.sample)]
    target = None
    if args.target is not None:
        present = targets_of(ds, sample)
        targets = [str(t) for t in present]
        if args.target not in targets:
            from ..storage.datasets import listing

            print(f"xai-bench: error: no target {args.target!r}; targets: {listing(targets)}", file=sys.stderr)
            return 2
        target = present[targets.index(args.target)]
    from ..storage.datasets import method_ids

    methods = _methods_arg(args.methods) if args.methods else None
    if methods is not None:
        if not isinstance(methods, list):
            raise InvalidParameterError("show --methods takes method ids (saliency,deeplift), not parameters.")
        have = method_ids(ds)
        missing = [m for m in methods if m not in have]
        if missing:
            from ..core.errors import did_you_mean

            raise InvalidParameterError(
                f"{args.store} has no method {missing[0]!r}; it has {', '.join(have)}.{did_you_mean(missing[0], have)}"
            )
    try:
        row = ds.sel(sample=[sample]).load()
    except Exception as exc:  # zarr raises several kinds for chunks that fail their checksum or codec
        raise StoreDamagedError(
            f"cannot read sample {args.sample!r} of {args.store} ({type(exc).__name__}: {exc}); "
            f"`xai-bench verify {args.store}` lists the damaged samples."
        ) from exc
    if "input" not in row:
        print(f"{args.store} keeps no inputs (run with --store-inputs to have them): drawing the maps alone.")
    fig = plot_maps(row, target=target, methods=methods, scale=args.scale)
    out = args.out or f"{Path(args.sample).stem}.png"
    fig.savefig(out, dpi=120)
    print(f"picture written to {Path(out).resolve()}")
    return 0


def _report(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    from .report import report

    for store in args.stores:
        _sound(store)
    _writable(args.out, "--out")
    page = report(args.stores, args.out, title=args.title, per_page=args.per_page, progress=_bars())
    print(page)
    return 0


def _verify(args: argparse.Namespace) -> int:
    from ..storage.zarr_io import verify_store

    report = verify_store(args.store, checksums=not args.quick)
    print(report.summary())
    return 0 if report.ok else 1


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line on stderr (exit 2), pointing at ``--help``."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}; `{self.prog} --help` lists the options.\n")


def build_parser() -> argparse.ArgumentParser:
    from importlib.metadata import version

    parser = OneLineParser(prog="xai-bench", description="Interpretability for PyTorch image classifiers.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {version('xai-bench')}")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("methods", help="list attribution methods").set_defaults(func=_methods)
    sub.add_parser("plugins", help="list loaded plugins").set_defaults(func=_plugins)
    demo = sub.add_parser("demo", help="explain a tiny CNN on generated shapes with every method")
    demo.add_argument("--out", default="demo_out", help="folder for maps.zarr and maps.png (default: demo_out)")
    demo.add_argument("--steps", type=positive_int, default=300, help="training steps of the demo CNN (default: 300)")
    demo.set_defaults(func=_demo)

    runp = sub.add_parser("run", help="explain every image of a folder into a zarr store (resumable)")
    runp.add_argument("--model", required=True, help="model factory as 'package.module:function' (required)")
    runp.add_argument(
        "--checkpoint", help="state dict to load (torch.load with weights_only=True; default: the factory's weights)"
    )
    source = runp.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", help="folder of images, searched recursively (this or --dataset)")
    source.add_argument(
        "--dataset", help="dataset factory as 'package.module:function', a map-style dataset (this or --images)"
    )
    runp.add_argument(
        "--size", type=positive_int, default=224, help="images are resized to size x size pixels (default: 224)"
    )
    runp.add_argument(
        "--channels", type=int, default=3, choices=(1, 3), help="1: grayscale; 3: RGB, grey repeated (default: 3)"
    )
    runp.add_argument(
        "--normalize",
        help="normalise the images: 'imagenet', or the means then the standard deviations as one comma list "
        "(recorded in the store, undone in pictures; default: none)",
    )
    runp.add_argument(
        "--store-inputs", action="store_true", help="keep the images in the store, for show/report (default: off)"
    )
    runp.add_argument(
        "--methods",
        nargs="+",
        required=True,
        help="comma-separated method ids (saliency,deeplift), or a JSON object of ids and parameters "
        '(\'{"integrated_gradients": {"n_steps": 32}}\'; required)',
    )
    runp.add_argument(
        "--targets",
        default="predicted",
        help="'predicted', 'all' or a comma list of indices/labels (default: predicted)",
    )
    runp.add_argument(
        "--class-names", help="comma-separated names of the classes, one per model output (default: the indices)"
    )
    runp.add_argument("--labels", dest="class_names", action=_OldSpelling, new="--class-names", help=argparse.SUPPRESS)
    runp.add_argument(
        "--task",
        default="multiclass",
        choices=("multiclass", "multilabel"),
        help="what 'predicted' means: the top class, or every output above 0.5 (default: multiclass)",
    )
    runp.add_argument(
        "--output",
        default="logit",
        choices=("logit", "sigmoid", "softmax"),
        help="what the maps explain: the model's logits, or their sigmoid or softmax (default: logit)",
    )
    runp.add_argument("--store", required=True, help="zarr store to write or resume (required)")
    _memory_budget(runp)
    runp.add_argument(
        "--batch-size", default="auto", type=_batch_size, help="images per pass, or 'auto' (default: auto)"
    )
    runp.add_argument("--device", help="e.g. cuda:0 (default: where the model is)")
    runp.add_argument(
        "--scheduler", help="dask scheduler address, to spread the work over a cluster (default: this process)"
    )
    runp.add_argument(
        "--connect-timeout",
        type=positive_float,
        default=CONNECT_TIMEOUT,
        help=f"seconds to wait for the --scheduler to answer (default: {CONNECT_TIMEOUT:g})",
    )
    runp.add_argument(
        "--no-checksums",
        action="store_true",
        help="on a resume, skip reading the store's checksums and the done samples' images (missing chunks "
        "are still found; default: read them)",
    )
    runp.add_argument("--no-verify", dest="no_checksums", action=_OldSpelling, new="--no-checksums", nargs=0,
                      const=True, help=argparse.SUPPRESS)  # fmt: skip
    runp.set_defaults(func=_run)

    show = sub.add_parser("show", help="draw the maps of one sample of a store to PNG")
    show.add_argument("store", help="zarr store of run/explain")
    show.add_argument("--sample", required=True, help="sample id (required)")
    show.add_argument("--target", help="target label or index (default: the highest-scoring)")
    show.add_argument("--methods", nargs="+", help="method ids to draw, comma-separated (default: all)")
    show.add_argument(
        "--scale",
        default="map",
        choices=("map", "sample", "method"),
        help="which maps share colour limits: each map its own (map), the sample's methods (sample), or a method's "
        "samples (method) (default: map)",
    )
    show.add_argument("--out", help="PNG path (default: <sample>.png)")
    show.set_defaults(func=_show)

    sub.add_parser("metrics", help="list metrics that score maps").set_defaults(func=_metrics)
    scoring = sub.add_parser("evaluate", help="score a store's maps with metrics, into the same store or --out")
    scoring.add_argument("store", help="zarr store of run/explain; the scores are written into it unless --out")
    scoring.add_argument(
        "--metrics",
        nargs="+",
        required=True,
        help="comma-separated metric ids (deletion,insertion), or a JSON object of ids and parameters (required)",
    )
    scoring.add_argument(
        "--model", help="model factory as 'package.module:function', for metrics that call it (default: none)"
    )
    scoring.add_argument(
        "--checkpoint", help="state dict to load (torch.load with weights_only=True; default: the factory's weights)"
    )
    scoring.add_argument(
        "--masks", help="ground-truth masks, a .npy array (N, 1, H, W) or (N, T, H, W) (default: none)"
    )
    scoring.add_argument("--methods", nargs="+", help="method ids to score, comma-separated (default: all)")
    _memory_budget(scoring)
    scoring.add_argument(
        "--batch-size", default="auto", type=_batch_size, help="images per pass, or 'auto' (default: auto)"
    )
    scoring.add_argument("--device", help="e.g. cuda:0 (default: cpu)")
    scoring.add_argument(
        "--overwrite", action="store_true", help="replace metric variables the store has (default: refuse)"
    )
    scoring.add_argument("--out", help="store to write the scores to (default: STORE; a new path is created)")
    scoring.set_defaults(func=_evaluate)

    page = sub.add_parser("report", help="an HTML report of stores of maps and profiles (offline, paged)")
    page.add_argument("stores", nargs="+", help="zarr stores of run/explain (side by side) and of profile")
    page.add_argument("--out", default="report", help="folder for index.html and its images (default: report)")
    page.add_argument("--title", default="xai_bench report", help="the page's title (default: xai_bench report)")
    page.add_argument("--per-page", type=positive_int, default=20, help="samples per page (default: 20)")
    page.set_defaults(func=_report)

    check = sub.add_parser("verify", help="check every done sample's chunks (checksums); exit 1 if any is damaged")
    check.add_argument("store", help="zarr store of run/explain")
    check.add_argument(
        "--quick", action="store_true", help="only check that every chunk exists, read none (default: read all)"
    )
    check.set_defaults(func=_verify)
    return parser


def _bars() -> bool:
    """Progress bars on a terminal only: in a log, a bar's line would share the line of a later error."""
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


def _memory_budget(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--memory-budget", help="memory budget, e.g. 4GiB (default: half the free memory)")
    parser.add_argument("--budget", dest="memory_budget", action=_OldSpelling, new="--memory-budget",
                        help=argparse.SUPPRESS)  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    # Model and data set factories are named 'module:function'; like `python -m`, look for the
    # module in the current folder first.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    # The project's errors, and the system's about files, folders and connections (a read-only folder,
    # a full disk, no scheduler), are the user's to fix: one line each. Anything else is a bug: a traceback.
    except (XaiBenchError, OSError, json.JSONDecodeError) as exc:
        print(f"xai-bench: error: {one_line(exc)}", file=sys.stderr)
        return 2


def one_line(exc: BaseException) -> str:
    """The error's message on one line; an OSError of the system as its reason and the path it names."""
    if isinstance(exc, OSError) and exc.strerror and exc.filename:
        text = f"{exc.strerror}: {exc.filename}"
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


if __name__ == "__main__":
    sys.exit(main())
