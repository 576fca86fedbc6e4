"""Model rewrites that make rule-based methods correct; they never touch the user's model object.

Part of the methods layer: may import ``xai_bench.core`` only.
"""

from .composites import Attention, LayerNorm, MultiheadAttention, Quotient, Softmax, composite
from .rewrite import PLAIN, RuleSet, SurgeryReport, dry_run_sites, forget, rewrite, trace
from .rules import GuidedReLU, Product, Rescale, RescaleMaxPool, RescaleReLU

__all__ = [
    "PLAIN",
    "Attention",
    "GuidedReLU",
    "LayerNorm",
    "MultiheadAttention",
    "Product",
    "Quotient",
    "Softmax",
    "composite",
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
