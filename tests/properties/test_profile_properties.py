"""Profiles stream: a data set's profile is the merge of its parts' profiles."""

from __future__ import annotations

import numpy as np
import torch
import xarray as xr
from hypothesis import given
from hypothesis import strategies as st

from xai_bench.profilers.naps import DeadFeatureMaps, NeuronActivationProfiles


@given(seed=st.integers(0, 2**16), n=st.integers(2, 30), groups=st.integers(1, 4), cut=st.floats(0.05, 0.95))
def test_merge_of_shards_equals_profile_of_the_whole(seed, n, groups, cut):
    gen = torch.Generator().manual_seed(seed)
    # float64 activations: batch sums are taken in the activations' dtype, so this checks the
    # bookkeeping exactly rather than float32 rounding.
    acts = {
        "a": torch.randn(n, 3, 4, 5, generator=gen, dtype=torch.float64),
        "b": torch.randn(n, 6, generator=gen, dtype=torch.float64),
    }
    member = torch.rand(n, groups, generator=gen) > 0.4
    member[0] = True  # every group has a member
    split = max(1, min(n - 1, int(cut * n)))

    def fresh(cls):
        return cls(layers={"a": "layer.a", "b": "layer.b"}, groups=[f"g{i}" for i in range(groups)])

    for cls in (NeuronActivationProfiles, DeadFeatureMaps):
        whole, left, right = fresh(cls), fresh(cls), fresh(cls)
        whole.update(acts, member)
        left.update({k: v[:split] for k, v in acts.items()}, member[:split])
        right.update({k: v[split:] for k, v in acts.items()}, member[split:])
        merged = left.merge(right)
        xr.testing.assert_allclose(merged.result(), whole.result(), rtol=1e-12, atol=1e-12)
        # Merging leaves both parts as they were.
        again = fresh(cls)
        again.update({k: v[:split] for k, v in acts.items()}, member[:split])
        xr.testing.assert_identical(left.result(), again.result())
    assert np.isfinite(whole.result()["dead_share"].values).all()
