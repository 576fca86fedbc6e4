"""Model rewrites that make rule-based methods correct; they never touch the user's model object.

Part of the methods layer: may import ``xai_bench.core`` only.
"""

from .rewrite import PLAIN, RuleSet, SurgeryReport, dry_run_sites, forget, rewrite, trace
from .rules import GuidedReLU, Rescale, RescaleMaxPool, RescaleReLU

__all__ = [
    "PLAIN",
    "GuidedReLU",
    "Rescale",
    "RescaleMaxPool",
    "RescaleReLU",
    "RuleSet",
    "SurgeryReport",
    "dry_run_sites",
    "forget",
    "rewrite",
    "trace",
]
