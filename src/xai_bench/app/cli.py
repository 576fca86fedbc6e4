"""The ``xai-bench`` command."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from ..core.errors import InvalidParameterError, StoreDamagedError, XaiBenchError


def _methods(args: argparse.Namespace) -> int:
    from ..api.explaining import methods

    for method_id, info in methods().items():
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
        model, None, open_maps(args.store), metrics=chosen, masks=masks, methods=methods,
        batch_size=args.batch_size, memory_budget=args.budget, device=args.device, store=args.out or args.store,
        overwrite=args.overwrite, progress=True,
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

    result = run_demo(args.out, steps=args.steps)
    print(f"test accuracy of the demo CNN: {result.accuracy:.1%}")
    print("share of |attribution| inside the object (higher is better; objects cover about 4% of the pixels):")
    for method, share in result.inside_share.items():
        print(f"  {method:<22} {share:.1%}")
    for method, delta in result.max_delta.items():
        print(f"max |completeness delta| of {method}: {delta:.2e}")
    print(f"maps: {result.store}\nfigure: {result.figure}")
    return 0


def _targets(text: str):
    if text in ("predicted", "all"):
        return text
    parts = [p.strip() for p in text.split(",") if p.strip()]
    return [int(p) if p.lstrip("-").isdigit() else p for p in parts]


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
        dataset = load_factory(args.dataset)()
    else:
        dataset = ImageFolder(args.images, size=args.size, channels=args.channels, normalize=args.normalize)
    client = None
    if args.scheduler:
        from dask.distributed import Client

        client = Client(args.scheduler)
    summary = run(
        factory if client is not None else factory(),
        dataset,
        methods=_methods_arg(args.methods),
        store=args.store,
        targets=_targets(args.targets),
        labels=args.labels.split(",") if args.labels else None,
        task=args.task,
        batch_size=args.batch_size,
        memory_budget=args.budget,
        device=args.device,
        client=client,
        verify=not args.no_verify,
        progress=True,
        store_inputs=args.store_inputs,
    )
    print(f"{summary.computed} samples explained, {summary.skipped} already done: {summary.store}")
    return 0


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

    page = report(args.stores, args.out, title=args.title, per_page=args.per_page, progress=True)
    print(page)
    return 0


def _verify(args: argparse.Namespace) -> int:
    from ..storage.zarr_io import verify_store

    report = verify_store(args.store, read=not args.quick)
    print(report.summary())
    return 0 if report.ok else 1


def build_parser() -> argparse.ArgumentParser:
    from importlib.metadata import version

    parser = argparse.ArgumentParser(prog="xai-bench", description="Interpretability for PyTorch image classifiers.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {version('xai-bench')}")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("methods", help="list attribution methods").set_defaults(func=_methods)
    sub.add_parser("plugins", help="list loaded plugins").set_defaults(func=_plugins)
    demo = sub.add_parser("demo", help="explain a tiny CNN on generated shapes with every method")
    demo.add_argument("--out", default="demo_out", help="folder for maps.zarr and maps.png")
    demo.add_argument("--steps", type=int, default=300, help="training steps of the demo CNN")
    demo.set_defaults(func=_demo)

    runp = sub.add_parser("run", help="explain every image of a folder into a zarr store (resumable)")
    runp.add_argument("--model", required=True, help="model factory as 'package.module:function'")
    runp.add_argument("--checkpoint", help="state dict to load (torch.load with weights_only=True)")
    source = runp.add_mutually_exclusive_group(required=True)
    source.add_argument("--images", help="folder of images (searched recursively)")
    source.add_argument("--dataset", help="dataset factory as 'package.module:function' (a map-style dataset)")
    runp.add_argument("--size", type=int, default=224, help="images are resized to size x size")
    runp.add_argument("--channels", type=int, default=3, choices=(1, 3), help="1: grayscale; 3: RGB (grey repeated)")
    runp.add_argument(
        "--normalize",
        help="normalise the images: 'imagenet', or the means then the standard deviations as one comma list "
        "(recorded in the store, undone in pictures)",
    )
    runp.add_argument("--store-inputs", action="store_true", help="keep the images in the store (for show/report)")
    runp.add_argument(
        "--methods",
        nargs="+",
        required=True,
        help="comma-separated method ids (saliency,deeplift), or a JSON object of ids and parameters "
        '(\'{"integrated_gradients": {"n_steps": 32}}\')',
    )
    runp.add_argument("--targets", default="predicted", help="'predicted', 'all' or a comma list of indices/labels")
    runp.add_argument("--labels", help="comma-separated label names, one per model output")
    runp.add_argument("--task", default="multiclass", choices=("multiclass", "multilabel"))
    runp.add_argument("--store", required=True, help="zarr store to write (or resume)")
    runp.add_argument("--budget", help="memory budget, e.g. 4GiB (default: half the free memory)")
    runp.add_argument("--batch-size", default="auto", type=_batch_size, help="images per pass, or 'auto'")
    runp.add_argument("--device", help="e.g. cuda:0 (default: where the model is)")
    runp.add_argument("--scheduler", help="dask scheduler address, to spread the work over a cluster")
    runp.add_argument(
        "--no-verify",
        action="store_true",
        help="on a resume, skip reading the store's checksums and the done samples' images (missing chunks "
        "are still found)",
    )
    runp.set_defaults(func=_run)

    show = sub.add_parser("show", help="draw the maps of one sample of a store to PNG")
    show.add_argument("store")
    show.add_argument("--sample", required=True, help="sample id")
    show.add_argument("--target", help="target label or index (default: the highest-scoring)")
    show.add_argument("--methods", nargs="+", help="method ids to draw, comma-separated (default: all)")
    show.add_argument(
        "--scale",
        default="map",
        choices=("map", "sample", "method"),
        help="which maps share colour limits: each map its own (map), the sample's methods (sample), or a method's "
        "samples (method)",
    )
    show.add_argument("--out", help="PNG path (default: <sample>.png)")
    show.set_defaults(func=_show)

    sub.add_parser("metrics", help="list metrics that score maps").set_defaults(func=_metrics)
    scoring = sub.add_parser("evaluate", help="score a store's maps with metrics, into the same store or --out")
    scoring.add_argument("store")
    scoring.add_argument(
        "--metrics",
        nargs="+",
        required=True,
        help="comma-separated metric ids (deletion,insertion), or a JSON object of ids and parameters",
    )
    scoring.add_argument("--model", help="model factory as 'package.module:function' (for metrics that call it)")
    scoring.add_argument("--checkpoint", help="state dict to load (torch.load with weights_only=True)")
    scoring.add_argument("--masks", help="ground-truth masks, a .npy array (N, 1, H, W) or (N, T, H, W)")
    scoring.add_argument("--methods", nargs="+", help="method ids to score, comma-separated (default: all)")
    scoring.add_argument("--budget", help="memory budget, e.g. 4GiB (default: half the free memory)")
    scoring.add_argument("--batch-size", default="auto", type=_batch_size, help="images per pass, or 'auto'")
    scoring.add_argument("--device", help="e.g. cuda:0 (default: cpu)")
    scoring.add_argument("--overwrite", action="store_true", help="replace metric variables the store has")
    scoring.add_argument("--out", help="store to write the scores to (default: STORE; a new path is created)")
    scoring.set_defaults(func=_evaluate)

    page = sub.add_parser("report", help="an HTML report of stores of maps and profiles (offline, paged)")
    page.add_argument("stores", nargs="+", help="zarr stores of run/explain (side by side) and of profile")
    page.add_argument("--out", default="report", help="folder for index.html and its images (default: report)")
    page.add_argument("--title", default="xai_bench report")
    page.add_argument("--per-page", type=int, default=20, help="samples per page (default: 20)")
    page.set_defaults(func=_report)

    check = sub.add_parser("verify", help="check every done sample's chunks (checksums); exit 1 if any is damaged")
    check.add_argument("store")
    check.add_argument("--quick", action="store_true", help="only check that every chunk exists, read none")
    check.set_defaults(func=_verify)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # Model and data set factories are named 'module:function'; like `python -m`, look for the
    # module in the current folder first.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (XaiBenchError, FileNotFoundError, json.JSONDecodeError) as exc:
        print(f"xai-bench: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
