"""The overlay helper: image + map -> RGB, without a figure."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xai_bench import overlay


def test_signed_maps_are_red_where_positive_and_blue_where_negative():
    image = np.full((1, 8, 8), 0.5)
    m = np.zeros((3, 8, 8))
    m[:, :, :4] = 1.0
    m[:, :, 4:] = -1.0
    rgb = overlay(image, m, alpha=1.0)
    assert rgb.shape == (8, 8, 3) and rgb.min() >= 0 and rgb.max() <= 1
    assert rgb[0, 0, 0] > 2 * rgb[0, 0, 2]  # red
    assert rgb[0, 7, 2] > 2 * rgb[0, 7, 0]  # blue


def test_unsigned_maps_use_a_sequential_colormap_and_alpha_blends():
    image = torch.rand(3, 6, 6, generator=torch.Generator().manual_seed(0))
    m = torch.zeros(6, 6)
    m[2, 2] = 5.0
    none = overlay(image, m, alpha=0.0)
    np.testing.assert_allclose(none, image.permute(1, 2, 0).numpy(), rtol=1e-12)
    full = overlay(image, m, alpha=1.0, percentile=None)
    assert full[2, 2].sum() > full[0, 0].sum()  # the hot pixel is bright, zero is magma's black
    assert np.allclose(full[0, 0], 0.0, atol=0.02)


def test_percentile_clipping_keeps_one_extreme_pixel_from_washing_out_the_rest():
    m = np.ones((10, 10))
    m[0, 0] = 1000.0
    clipped = overlay(np.zeros((10, 10)), m, alpha=1.0, percentile=95)
    raw = overlay(np.zeros((10, 10)), m, alpha=1.0, percentile=None)
    assert clipped[5, 5].sum() > 3 * raw[5, 5].sum()


@pytest.mark.parametrize(
    ("image", "m", "message"),
    [(np.zeros((8, 8)), np.zeros((6, 6)), "same size"), (np.zeros((2, 8, 8)), np.zeros((8, 8)), "1 or 3 channels")],
)
def test_mismatched_inputs_are_refused(image, m, message):
    with pytest.raises(ValueError, match=message):
        overlay(image, m)
