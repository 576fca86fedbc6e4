"""Synthetic chest X-rays whose lesions and shortcut are known, to test the study's pipeline where the
real collections cannot say what a model should have looked at.

Each phantom has a chest (body, two lung fields, heart, ribs, diaphragm domes, smooth texture) and,
unless healthy, the lesion pattern of its class with an exact mask: COVID-19 as bilateral peripheral
lower-zone ground glass, bacterial pneumonia as one dense lobar consolidation, other viral pneumonia as
a diffuse interstitial texture.

The study's shortcut is rebuilt on purpose: COVID-19 images come from one collection (Cohen et al.'s,
near square or taller than wide) and the healthy, bacterial and other viral ones from another
(Kermany et al.'s paediatric images, wider than tall), so after zero padding to a square the padded
bands alone tell COVID-19 from the rest. ``generate(..., confound=False)`` draws every aspect ratio from
one distribution whatever the class, with every other draw unchanged, so the two sets differ in the
aspect ratios alone and any change in a model's behaviour is the shortcut's.

The anatomy and lesions are drawn in coordinates relative to the frame (x and y in [-1, 1]), so a
different aspect ratio stretches the same chest rather than showing a different one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from .datasets import Record
from .labels import Hierarchy
from .preprocess import prepare

KINDS = ("healthy", "bacterial", "viral", "COVID-19")
MIX = {"healthy": 0.35, "bacterial": 0.25, "viral": 0.15, "COVID-19": 0.25}
# The leaf findings each kind is labelled with (labels.json); healthy uses the collection's spelling.
FINDINGS = {
    "healthy": ("No Finding",),
    "bacterial": ("Streptococcus", "Klebsiella"),
    "viral": ("SARS", "Influenza"),
    "COVID-19": ("COVID-19",),
}
SOURCE = {"healthy": "kermany", "bacterial": "kermany", "viral": "kermany", "COVID-19": "cohen"}
ASPECTS = {"kermany": (1.3, 1.5), "cohen": (0.85, 1.05)}  # width / height, drawn uniformly

# One random stream per purpose and image, so that a switch touching one purpose (the confound: the
# aspect ratios) leaves every other draw as it was.
_PLAN, _ANATOMY, _LESION, _ASPECT = range(4)


@dataclass(frozen=True, eq=False)  # eq=False: arrays do not compare to one truth value
class Phantom:
    image: np.ndarray  # (H, W) float32 in [0, 1], at its source size
    lesion: np.ndarray  # (H, W) bool: the union of ``masks``
    masks: dict[str, np.ndarray]  # leaf finding -> (H, W) bool; empty when healthy
    findings: tuple[str, ...]  # leaf labels of labels.json, ("No Finding",) when healthy
    subject: str
    source: str  # "cohen" or "kermany"
    kind: str  # one of KINDS: the class in the terms of ``mix``
    lungs: np.ndarray  # (H, W) bool: both lung fields, the place every lesion lies in


@dataclass(frozen=True)
class _Lung:
    x: float
    y: float
    rx: float
    ry: float
    dome: float  # the diaphragm dome's top, below the lung's centre
    curve: float  # how fast the dome falls away laterally (the costophrenic angle)
    out: int  # -1 or +1: the lateral direction


@dataclass(frozen=True)
class _Chest:
    cx: float
    body: tuple[float, float, float, float]  # centre y, half-width, half-height, level
    lungs: tuple[_Lung, _Lung]
    depth: float  # how much darker air makes the lungs
    heart: tuple[float, float, float, float, float]  # x, y, rx, ry, level
    ribs: tuple[float, ...]  # rows where each rib pair starts at the spine
    rib: tuple[float, float]  # amplitude, half-thickness
    texture: tuple[np.ndarray, np.ndarray, np.ndarray]  # coarse, vascular and fine noise grids
    gain: float
    offset: float


def generate(
    n: int,
    *,
    seed: int = 0,
    confound: bool = True,
    base: int = 160,
    mix: Mapping[str, float] | None = None,
    pairs: float = 0.2,
    lesions: bool = True,
) -> list[Phantom]:
    """``n`` phantoms, ``base`` pixels tall, the same for the same arguments.

    ``mix`` gives the kinds' shares (default :data:`MIX`); a share ``pairs`` of the subjects has two
    images (each its own draw, of the same finding), the others one. With ``confound`` the source sets
    the aspect ratio (:data:`ASPECTS`); without, each image's source range is picked by a draw of its
    own, with the sources' overall shares, so the aspect ratios keep their overall spread but say
    nothing about the class. ``lesions=False`` leaves the lesions unpainted (masks and labels stay): the
    healthy chest behind each phantom, to measure what a lesion changed.
    """
    if n < 0 or base < 16:
        raise ValueError(f"n must be >= 0 and base >= 16, got {n} and {base}.")
    if not 0 <= pairs <= 1:
        raise ValueError(f"pairs must be a share in [0, 1], got {pairs}.")
    shares = _shares(MIX if mix is None else mix)
    kermany_share = sum(p for kind, p in shares.items() if SOURCE[kind] == "kermany")
    phantoms = []
    for index, (subject, kind, finding) in enumerate(_plan(n, shares, pairs, seed)):
        source = SOURCE[kind]
        aspect = _aspect(_rng(seed, _ASPECT, index), source if confound else None, kermany_share)
        phantoms.append(_phantom(seed, index, kind, finding, subject, source, aspect, base, lesions))
    return phantoms


def _rng(seed: int, purpose: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(purpose, index)))


def _shares(mix: Mapping[str, float]) -> dict[str, float]:
    unknown = set(mix) - set(KINDS)
    if unknown:
        raise ValueError(f"mix has kinds {sorted(unknown)}; the kinds are {list(KINDS)}.")
    total = sum(mix.values())
    if any(v < 0 for v in mix.values()) or total <= 0:
        raise ValueError(f"mix needs shares >= 0 with a positive sum, got {dict(mix)}.")
    return {kind: mix.get(kind, 0) / total for kind in KINDS}


def _plan(n: int, shares: dict[str, float], pairs: float, seed: int) -> list[tuple[str, str, str]]:
    """(subject, kind, finding) per image: subjects drawn one after another, some with two images."""
    rng = _rng(seed, _PLAN, 0)
    probabilities = [shares[k] for k in KINDS]
    plan: list[tuple[str, str, str]] = []
    number = 0
    while len(plan) < n:
        kind = KINDS[rng.choice(len(KINDS), p=probabilities)]
        finding = FINDINGS[kind][rng.integers(len(FINDINGS[kind]))]
        count = 2 if rng.random() < pairs else 1
        plan += [(f"phantom:{number:05d}", kind, finding)] * min(count, n - len(plan))
        number += 1
    return plan


def _aspect(rng: np.random.Generator, source: str | None, kermany_share: float) -> float:
    """Width / height. Both draws are made either way, so switching the confound changes only which
    range the second one lands in."""
    position, pick = rng.random(), rng.random()
    if source is None:
        source = "kermany" if pick < kermany_share else "cohen"
    low, high = ASPECTS[source]
    return low + position * (high - low)


def _phantom(
    seed: int, index: int, kind: str, finding: str, subject: str, source: str, aspect: float, base: int, paint: bool
) -> Phantom:
    height, width = base, max(8, round(base * aspect))
    x = ((np.arange(width) + 0.5) / width * 2 - 1)[None, :]
    y = ((np.arange(height) + 0.5) / height * 2 - 1)[:, None]
    chest = _draw_chest(_rng(seed, _ANATOMY, index), base)
    density, fields = _anatomy(chest, x, y)
    lungs = np.maximum(*fields) > 0.5
    delta, lesion = _LESIONS[kind](_rng(seed, _LESION, index), chest, x, y, fields)
    lesion &= lungs
    if paint:
        density = density + delta
    image = np.clip(chest.offset + chest.gain * density, 0, 1).astype(np.float32)
    masks = {} if kind == "healthy" else {finding: lesion}
    return Phantom(image, lesion, masks, (finding,), subject, source, kind, lungs)


# --- anatomy -------------------------------------------------------------------------------------------


def _soft(z: np.ndarray | float) -> np.ndarray:
    """A logistic step written with tanh, which never overflows (warnings are errors in the tests)."""
    return 0.5 * (1 + np.tanh(np.asarray(z) / 2))


def _noise(grid: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A fixed grid of draws, resized smoothly to ``shape``: the same texture at any size, so its draws
    never depend on the aspect ratio."""
    field = Image.fromarray(np.asarray(grid, dtype=np.float32)).resize(shape[::-1], Image.BICUBIC)
    return np.asarray(field, dtype=np.float64) / (grid.std() + 1e-9)


def _draw_chest(rng: np.random.Generator, base: int) -> _Chest:
    """All the random choices of one chest, made before any drawing so their order never changes."""
    cx = rng.uniform(-0.03, 0.03)
    body = (rng.uniform(0.1, 0.2), rng.uniform(0.8, 0.9), rng.uniform(1.05, 1.2), rng.uniform(0.42, 0.5))
    top = rng.uniform(-0.12, -0.02)
    lungs = []
    for side in (-1, 1):
        ry = rng.uniform(0.55, 0.65)
        y = top + rng.uniform(-0.03, 0.03)
        x = cx + side * rng.uniform(0.37, 0.42)
        rx, dome, curve = rng.uniform(0.24, 0.29), y + ry * rng.uniform(0.6, 0.72), rng.uniform(1.6, 2.4)
        lungs.append(_Lung(x, y, rx, ry, dome, curve, side))
    depth = rng.uniform(0.26, 0.34)
    # The heart lies left of the patient's midline: the viewer's right in a PA film.
    heart = (cx + rng.uniform(0.1, 0.16), rng.uniform(0.28, 0.36), rng.uniform(0.28, 0.34), rng.uniform(0.22, 0.28),
             rng.uniform(0.03, 0.07))  # fmt: skip
    apex = min(lung.y - lung.ry for lung in lungs)
    spacing = (max(lung.dome for lung in lungs) - apex) / 9 * rng.uniform(0.95, 1.05)
    ribs = tuple(apex + (k + 0.3) * spacing + rng.normal(0, 0.01) for k in range(9))
    rib = (rng.uniform(0.05, 0.08), rng.uniform(0.02, 0.026))
    texture = (rng.standard_normal((6, 6)), rng.standard_normal((24, 24)), rng.standard_normal((base, base)))
    return _Chest(cx, body, tuple(lungs), depth, heart, ribs, rib, texture, rng.uniform(0.9, 1.1), rng.normal(0, 0.02))


def _lung_field(lung: _Lung, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Soft 0..1 map of one lung: an egg narrow at the apex and broad at the base, cut below by the
    diaphragm dome, which falls away laterally into the costophrenic angle."""
    t = (y - lung.y) / lung.ry
    width = lung.rx * (0.85 + 0.2 * np.clip(t, -1, 1))
    r = np.sqrt(((x - lung.x) / width) ** 2 + t**2)
    dome = lung.dome + lung.curve * (x - lung.x) ** 2
    return _soft((1 - r) / 0.05) * _soft((dome - y) / 0.02)


def _anatomy(chest: _Chest, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """The chest's density (before contrast) and each lung's soft field."""
    shape = (y.shape[0], x.shape[1])
    cy, brx, bry, level = chest.body
    body = _soft((1 - np.sqrt(((x - chest.cx) / brx) ** 2 + ((y - cy) / bry) ** 2)) / 0.04)
    fields = (_lung_field(chest.lungs[0], x, y), _lung_field(chest.lungs[1], x, y))
    hx, hy, hrx, hry, hlevel = chest.heart
    heart = _soft((1 - np.sqrt(((x - hx) / hrx) ** 2 + ((y - hy) / hry) ** 2)) / 0.06)
    lungs = np.maximum(*fields)
    spine = np.exp(-(((x - chest.cx) / 0.06) ** 2)) * body
    air = lungs * (1 - 0.85 * heart)  # the heart hides the lung behind it: soft tissue there, not air
    density = 0.04 + (level - 0.04) * body - chest.depth * air + hlevel * heart + 0.07 * spine
    # Posterior ribs: arcs rising from the spine and falling laterally, plainest against the dark lungs.
    amp, thick = chest.rib
    for side in (-1, 1):
        d = side * (x - chest.cx)
        start = _soft((d - 0.05) / 0.02)
        for row in chest.ribs:
            centre = row - 0.3 * d + 1.1 * d**2
            density = density + amp * np.exp(-(((y - centre) / thick) ** 2)) * start * (0.15 + 0.85 * air) * body
    coarse, vessels, fine = chest.texture
    density = density + body * (0.02 * _noise(coarse, shape) + 0.025 * air * _noise(vessels, shape))
    return density + 0.008 * _noise(fine, shape), fields


# --- lesions: each returns the density it adds and where that is appreciable ------------------------------


def _ground_glass(rng, chest, x, y, fields):
    """COVID-19: faint hazy patches at the lateral edges of the lower halves of both lungs; the haze
    adds to what lies beneath (vessels and ribs stay visible), as ground glass does."""
    shape = (y.shape[0], x.shape[1])
    amp = rng.uniform(0.07, 0.11)
    patches = np.zeros(shape)
    for lung in chest.lungs:
        for _ in range(rng.integers(1, 4)):
            t, reach = rng.uniform(0.15, 0.6), rng.uniform(0.55, 0.85)
            rx, ry = rng.uniform(0.08, 0.14), rng.uniform(0.12, 0.2)
            half = lung.rx * (0.85 + 0.2 * t) * np.sqrt(1 - t**2)  # the lung's half-width at that height
            px = lung.x + lung.out * reach * half
            py = min(lung.y + t * lung.ry, lung.dome + lung.curve * (px - lung.x) ** 2 - 0.06)
            patches = np.maximum(patches, np.exp(-2 * (((x - px) / rx) ** 2 + ((y - py) / ry) ** 2)))
    haze = np.clip(1 + 0.3 * _noise(rng.standard_normal((12, 12)), shape), 0.6, 1.4)
    delta = amp * patches * haze * np.maximum(*fields)
    return delta, delta > 0.3 * amp


def _consolidation(rng, chest, x, y, fields):
    """Bacterial: one dense, nearly uniform blob in one lung, cut straight on one side by a fissure, as
    a lobar consolidation is bounded by its lobe."""
    shape = (y.shape[0], x.shape[1])
    which = int(rng.integers(2))
    lung = chest.lungs[which]
    amp = rng.uniform(0.28, 0.38)
    cx = lung.x + rng.uniform(-0.25, 0.25) * lung.rx
    cy = lung.y + rng.uniform(-0.35, 0.35) * lung.ry
    rx, ry = rng.uniform(0.5, 0.75) * lung.rx, rng.uniform(0.3, 0.45) * lung.ry
    upper, cut, slope = rng.random() < 0.4, rng.uniform(0.2, 0.6), rng.uniform(-0.4, 0.4)
    mottle = 1 + 0.08 * _noise(rng.standard_normal((10, 10)), shape)
    r = (np.abs((x - cx) / rx) ** 3 + np.abs((y - cy) / ry) ** 3) ** (1 / 3)  # squarish: a lobe, not a ball
    line = cy + (cut if upper else -cut) * ry + slope * (x - cx)
    fissure = _soft((line - y) / 0.012) if upper else _soft((y - line) / 0.012)
    delta = amp * _soft((1 - r) / 0.08) * fissure * mottle * fields[which]
    return delta, delta > 0.25 * amp


def _interstitial(rng, chest, x, y, fields):
    """Other viral pneumonia: a fine net of lines and vertical streaks over most of both lungs, spreading
    from the hila, with a patchy but fairly sharp border. The mask is the area the texture covers at half
    strength or more, not its single lines, which are finer than any attribution map resolves."""
    shape = (y.shape[0], x.shape[1])
    amp = rng.uniform(0.1, 0.14)
    net = _noise(rng.standard_normal((18, 18)), shape)
    streaks = _noise(rng.standard_normal((8, 30)), shape)  # few rows, many columns: long vertical features
    lines = np.maximum(np.exp(-((net / 0.18) ** 2)), 0.8 * np.exp(-((streaks / 0.15) ** 2)))
    hila = np.zeros(shape)
    for lung in chest.lungs:
        hx, hy = lung.x - lung.out * 0.4 * lung.rx, lung.y + 0.1 * lung.ry
        hila = np.maximum(hila, np.exp(-(((x - hx) / (1.1 * lung.rx)) ** 2 + ((y - hy) / (0.9 * lung.ry)) ** 2)))
    # A steep step, so the texture is either there or nearly gone: its mask then says where it changed
    # the image, as the other masks do.
    cover = _soft((hila + 0.25 * _noise(rng.standard_normal((5, 5)), shape) - 0.25) / 0.04)
    cover = cover * np.maximum(*fields)
    return amp * lines * cover, cover > 0.5


def _none(rng, chest, x, y, fields):
    return np.zeros((y.shape[0], x.shape[1])), np.zeros((y.shape[0], x.shape[1]), dtype=bool)


_LESIONS = {"healthy": _none, "bacterial": _consolidation, "viral": _interstitial, "COVID-19": _ground_glass}


# --- onto disk, and into the prepared geometry ---------------------------------------------------------------


def to_records(phantoms: Sequence[Phantom], folder: str | Path) -> list[Record]:
    """Write each phantom as an 8-bit grey PNG ``<subject>_<k>.png`` (``phantom_00042_0.png``; ``k`` counts
    a subject's images in order) with its lesion mask beside it as ``<subject>_<k>_mask.png`` (0 or 255;
    a phantom has one finding, so the lesion mask is its finding's mask), and return their
    :class:`Record` s (labels with ancestors, view "PA"). Files that already hold the same pixels are
    left untouched, so a stage can be rerun; use one folder per generated set, since names repeat."""
    hierarchy = Hierarchy.load()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    seen: Counter[str] = Counter()
    records = []
    for phantom in phantoms:
        name = f"{phantom.subject.replace(':', '_')}_{seen[phantom.subject]}"
        seen[phantom.subject] += 1
        path = folder / f"{name}.png"
        _write_png(np.round(phantom.image * 255).astype(np.uint8), path)
        _write_png(phantom.lesion.astype(np.uint8) * 255, mask_path(path))
        records.append(Record(path, hierarchy.closure(phantom.findings), phantom.subject, "PA", phantom.source))
    return records


def mask_path(image: str | Path) -> Path:
    """Where :func:`to_records` keeps an image's lesion mask."""
    image = Path(image)
    return image.with_name(f"{image.stem}_mask.png")


def _write_png(pixels: np.ndarray, path: Path) -> bool:
    """Write unless the file already holds these pixels (compared decoded, not as bytes, so another
    PNG encoder's output of the same picture counts as the same)."""
    if path.is_file():
        with Image.open(path) as old:
            if old.mode == "L" and np.array_equal(np.asarray(old), pixels):
                return False
    Image.fromarray(pixels).save(path)
    return True


def lesion_mask_prepared(phantom: Phantom, size: int, finding: str | None = None) -> np.ndarray:
    """The lesion mask (or ``finding``'s) in the geometry of ``prepare(phantom.image, size=size)``: the
    longer side resized to ``size``, centred zero padding; resized by nearest neighbour so it stays a
    mask. (size, size) bool, False on the padding."""
    mask = phantom.lesion if finding is None else phantom.masks[finding]
    h, w = mask.shape
    # The same arithmetic as prepare, so both land on the same pixels.
    scale = size / max(w, h)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    resized = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((new_w, new_h), Image.NEAREST)) > 127
    canvas = np.zeros((size, size), dtype=bool)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    canvas[top : top + new_h, left : left + new_w] = resized
    return canvas


def contact_sheet(phantoms: Sequence[Phantom], *, columns: int = 4, size: int = 160) -> Image.Image:
    """The phantoms as ``prepare`` pads them (so the padded bands show), lesions outlined in red, kind and
    source written beneath: for looking, not for measuring."""
    rows = -(-len(phantoms) // columns)
    caption = 14
    sheet = Image.new("RGB", (columns * size, rows * (size + caption)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, phantom in enumerate(phantoms):
        grey = (prepare(phantom.image, size=size, channels=1).image[0].numpy() * 255).astype(np.uint8)
        tile = np.repeat(grey[..., None], 3, axis=2)
        mask = lesion_mask_prepared(phantom, size)
        inner = mask.copy()
        inner[1:-1, 1:-1] = mask[1:-1, 1:-1] & mask[:-2, 1:-1] & mask[2:, 1:-1] & mask[1:-1, :-2] & mask[1:-1, 2:]
        tile[mask & ~inner] = (255, 40, 40)
        left, top = (i % columns) * size, (i // columns) * (size + caption)
        sheet.paste(Image.fromarray(tile), (left, top))
        draw.text((left + 3, top + size + 1), f"{phantom.findings[0]} / {phantom.source}", fill="black")
    return sheet
