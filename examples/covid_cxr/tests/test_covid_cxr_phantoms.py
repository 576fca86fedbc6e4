"""Synthetic chest X-rays: determinism, lesions inside the lungs with the pattern of their class, the
source shortcut on and off, and their records on disk."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from covid_cxr.phantoms import MIX, contact_sheet, generate, lesion_mask_prepared, mask_path, to_records
from covid_cxr.preprocess import prepare
from PIL import Image


@pytest.fixture(scope="module")
def painted():
    return generate(120, seed=0, base=64)


@pytest.fixture(scope="module")
def unpainted():
    return generate(120, seed=0, base=64, lesions=False)


def _aspect(phantom) -> float:
    h, w = phantom.image.shape
    return w / h


def _high_pass(image: np.ndarray) -> np.ndarray:
    """The image less its 3x3 mean: what a fine texture adds and a smooth haze does not."""
    padded = np.pad(image, 1, mode="edge")
    h, w = image.shape
    return image - sum(padded[i : i + h, j : j + w] for i in range(3) for j in range(3)) / 9


def test_the_same_seed_gives_the_same_phantoms_and_another_seed_others():
    first, again, other = generate(6, seed=1, base=48), generate(6, seed=1, base=48), generate(6, seed=2, base=48)
    for a, b in zip(first, again, strict=True):
        assert np.array_equal(a.image, b.image) and np.array_equal(a.lesion, b.lesion)
        assert (a.findings, a.subject, a.source) == (b.findings, b.subject, b.source)
    assert all(a.image.dtype == np.float32 and a.image.min() >= 0 and a.image.max() <= 1 for a in first)
    pairs = zip(first, other, strict=True)
    assert not any(a.image.shape == b.image.shape and np.array_equal(a.image, b.image) for a, b in pairs)


def test_lesions_lie_in_the_lungs_and_only_diseased_phantoms_have_them(painted):
    assert {p.kind for p in painted} == set(MIX)
    for p in painted:
        assert p.lesion.shape == p.image.shape == p.lungs.shape
        assert not (p.lesion & ~p.lungs).any()
        if p.kind == "healthy":
            assert p.findings == ("No Finding",) and p.masks == {} and not p.lesion.any()
        else:
            assert set(p.masks) == set(p.findings) and p.lesion.any()
            assert np.array_equal(np.logical_or.reduce(list(p.masks.values())), p.lesion)
        assert p.source == ("cohen" if p.kind == "COVID-19" else "kermany")


def test_each_pathology_changes_the_chest_in_its_own_way(painted, unpainted):
    stats: dict[str, list[dict]] = {}
    for p, healthy in zip(painted, unpainted, strict=True):
        assert np.array_equal(p.lesion, healthy.lesion)  # the masks do not depend on the painting
        if p.kind == "healthy":
            assert np.array_equal(p.image, healthy.image)
            continue
        change, mask = p.image - healthy.image, p.lesion
        w = mask.shape[1]
        rows, cols = np.nonzero(mask)
        lung_rows, lung_cols = np.nonzero(p.lungs)
        stats.setdefault(p.kind, []).append({
            "rise": change[mask].mean(),
            "outside": np.abs(change[p.lungs & ~mask]).mean(),
            "texture": _high_pass(p.image)[mask].std() / _high_pass(healthy.image)[mask].std(),
            "sides": int(mask[:, : w // 2].any()) + int(mask[:, w // 2 :].any()),
            "cover": mask.sum() / p.lungs.sum(),
            "lower": rows.mean() - lung_rows.mean(),
            "lateral": np.abs(cols - w / 2).mean() - np.abs(lung_cols - w / 2).mean(),
        })  # fmt: skip
    mean = {kind: {key: np.mean([s[key] for s in rows]) for key in rows[0]} for kind, rows in stats.items()}
    for kind in stats:
        # A lesion's mask is where it changed the image: far more inside than in the rest of the lungs.
        assert mean[kind]["rise"] > 2 * mean[kind]["outside"], kind
    # COVID-19: faint, smooth, in both lungs, low and lateral.
    covid = mean["COVID-19"]
    assert 0.02 < covid["rise"] < 0.12 and covid["texture"] < 1.2
    assert all(s["sides"] == 2 and s["lower"] > 0 and s["lateral"] > 0 for s in stats["COVID-19"])
    # Bacterial: dense, in one lung.
    assert mean["bacterial"]["rise"] > 0.2 and all(s["sides"] == 1 for s in stats["bacterial"])
    # Other viral: little brighter but a finer texture, over most of both lungs.
    viral = mean["viral"]
    assert viral["rise"] < 0.05 and viral["texture"] > 1.3 and viral["cover"] > 0.6
    assert all(s["sides"] == 2 for s in stats["viral"])


def test_the_source_sets_the_aspect_ratio_only_while_the_confound_is_on(painted):
    off = generate(120, seed=0, base=64, confound=False)

    def by_source(phantoms, value):
        return {s: np.mean([value(p) for p in phantoms if p.source == s]) for s in ("kermany", "cohen")}

    on_aspect, off_aspect = by_source(painted, _aspect), by_source(off, _aspect)
    assert on_aspect["kermany"] > 1.2 and on_aspect["cohen"] < 1.1
    assert abs(off_aspect["kermany"] - off_aspect["cohen"]) < 0.1
    assert np.std([_aspect(p) for p in off]) > 0.1  # still spread, just not by class

    # Everything but the aspect ratio is the same draw.
    assert [(p.findings, p.subject, p.source) for p in painted] == [(p.findings, p.subject, p.source) for p in off]
    changed = 0
    for a, b in zip(painted, off, strict=True):
        assert a.image.shape[0] == b.image.shape[0]
        assert abs(a.lesion.mean() - b.lesion.mean()) < 0.01
        stretched = np.asarray(Image.fromarray(b.image).resize(a.image.shape[::-1], Image.BILINEAR))
        assert np.abs(stretched - a.image).mean() < 0.03
        changed += a.image.shape != b.image.shape
    assert changed > 20

    # What the shortcut leaves in the prepared images: the padded share.
    def padded(p):
        return float(prepare(p.image, size=32).padding.float().mean())

    on_pad, off_pad = by_source(painted, padded), by_source(off, padded)
    assert on_pad["kermany"] - on_pad["cohen"] > 0.15
    assert abs(off_pad["kermany"] - off_pad["cohen"]) < 0.06


def test_the_class_mix_and_subjects_with_two_images():
    phantoms = generate(400, seed=5, base=16)
    shares = Counter(p.kind for p in phantoms)
    for kind, share in MIX.items():
        assert abs(shares[kind] / len(phantoms) - share) < 0.07, kind
    images_of = Counter(p.subject for p in phantoms)
    assert set(images_of.values()) == {1, 2} and 0.1 < Counter(images_of.values())[2] / len(images_of) < 0.3
    for subject, count in images_of.items():
        if count == 2:
            a, b = (p for p in phantoms if p.subject == subject)
            assert a.findings == b.findings and not np.array_equal(a.image, b.image)
    only = generate(10, seed=5, base=16, mix={"COVID-19": 1}, pairs=0)
    assert {p.source for p in only} == {"cohen"} and len({p.subject for p in only}) == 10
    with pytest.raises(ValueError, match="kinds"):
        generate(3, mix={"fungal": 1})


def test_records_on_disk_carry_ancestors_and_a_second_write_changes_nothing(tmp_path):
    phantoms = generate(12, seed=3, base=32, pairs=0.5)
    records = to_records(phantoms, tmp_path)
    assert len(records) == 12 and len({r.path for r in records}) == 12
    for record, p in zip(records, phantoms, strict=True):
        assert record.subject == p.subject and record.source == p.source and record.view == "PA"
        expected = {
            "healthy": {"healthy"},
            "bacterial": {p.findings[0], "bacterial", "pneumonia"},
            "viral": {p.findings[0], "viral", "pneumonia"},
            "COVID-19": {"COVID-19", "viral", "pneumonia"},
        }
        assert record.labels == expected[p.kind]
        with Image.open(record.path) as image:
            assert image.mode == "L" and np.abs(np.asarray(image) / 255 - p.image).max() <= 0.5 / 255 + 1e-6
        with Image.open(mask_path(record.path)) as mask:
            assert np.array_equal(np.asarray(mask) > 127, p.lesion)
    assert max(Counter(r.subject for r in records).values()) == 2
    files = sorted(tmp_path.iterdir())
    assert len(files) == 24
    stamps = {f: f.stat().st_mtime_ns for f in files}
    assert to_records(phantoms, tmp_path) == records
    assert {f: f.stat().st_mtime_ns for f in sorted(tmp_path.iterdir())} == stamps


def test_prepared_masks_align_with_prepared_images():
    phantoms = generate(40, seed=4, base=48)
    checked = set()
    for p in phantoms:
        if p.kind == "healthy":
            continue
        # The lesion bright on a flat background: after prepare, the bright pixels are the mask's.
        image = np.where(p.lesion, 1.0, 0.3).astype(np.float32)
        prepared = prepare(image, size=64, low=0, high=100)
        bright = prepared.image[0].numpy() > 0.5
        mask = lesion_mask_prepared(p, 64)
        assert not (mask & prepared.padding.numpy()).any()
        assert (bright & mask).sum() / (bright | mask).sum() > 0.7
        checked.add(p.source)
        # And in the phantom itself, the consolidation is the brightest part of its lungs.
        if p.kind == "bacterial":
            real = prepare(p.image, size=64).image[0].numpy()
            assert real[mask].mean() > real[~mask & ~prepared.padding.numpy()].mean()
    assert checked == {"cohen", "kermany"}


def test_a_contact_sheet_shows_every_phantom():
    sheet = contact_sheet(generate(5, seed=0, base=32), columns=3, size=40)
    assert sheet.mode == "RGB" and sheet.size == (120, 2 * 54)
