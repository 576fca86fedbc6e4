"""The ``xai-bench`` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .errors import XaiBenchError


def _methods(args: argparse.Namespace) -> int:
    from .explain import methods

    for method_id, info in methods().items():
        flags = [k for k in ("needs_baseline", "needs_surgery", "multiplies_by_inputs", "has_delta") if info[k]]
        params = ", ".join(f"{k}={v!r}" for k, v in info["parameters"].items())
        print(f"{method_id:<22} {info['provider']:<32} {' '.join(flags) or '-'}")
        print(f"{'':<22} {info['summary']}")
        if params:
            print(f"{'':<22} parameters: {params}")
    return 0


def _plugins(args: argparse.Namespace) -> int:
    from .plugins import list_plugins

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xai-bench", description="Interpretability for PyTorch image classifiers.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("methods", help="list attribution methods").set_defaults(func=_methods)
    sub.add_parser("plugins", help="list loaded plugins").set_defaults(func=_plugins)
    demo = sub.add_parser("demo", help="explain a tiny CNN on generated shapes with every method")
    demo.add_argument("--out", default="demo_out", help="folder for maps.zarr and maps.png")
    demo.add_argument("--steps", type=int, default=300, help="training steps of the demo CNN")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (XaiBenchError, FileNotFoundError) as exc:
        print(f"xai-bench: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
