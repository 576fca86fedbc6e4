"""Model rewrites that make rule-based methods correct; they never touch the user's model object.

Part of the methods layer: may import ``xai_bench.core`` only.
"""

from .composites import Attention, LayerNorm, MultiheadAttention, Quotient, Softmax, composite
from .rewrite import PLAIN, RuleSet, SurgeryReport, dry_run_sites, forget, rewrite, trace
from .rules import DeconvReLU, GuidedReLU, Product, Rescale, RescaleMaxPool, RescaleReLU, pairs_in_pass

__all__ = [
    "PLAIN",
    "Attention",
    "DeconvReLU",
    "GuidedReLU",
    "LayerNorm",
    "MultiheadAttention",
    "Product",
    "Quotient",
    "Softmax",
    "composite",
    "pairs_in_pass",
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
