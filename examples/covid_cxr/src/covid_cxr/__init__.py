"""The COVID-19 chest X-ray study (Chatterjee et al., J. Imaging 2024) as an application of xai_bench.

Data: the two public collections in their published layouts, a generic folder + CSV layout, the
label hierarchy (``labels.json``), the paper's preprocessing with exact padding masks, and
subject-wise splits.
"""
