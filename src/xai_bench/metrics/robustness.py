"""Robustness metrics: how much maps change when the input changes a little (max- and avg-sensitivity,
the local Lipschitz estimate, relative input stability), and how well a map predicts the model's response
to small input changes (infidelity).

Every metric here draws ``n_samples`` perturbed copies of each input. Draw ``d`` of a sample comes from a
generator seeded by ``(seed, key, d)`` alone, ``key`` derived from the sample's id (:func:`draw_generator`),
so scores do not depend on batching or on which other samples are scored, and the global random state is
never used. All targets of a
sample share its copies (and, for infidelity, their forward passes). ``perturb(image, generator)``
replaces the default noise: it takes one image (C, H, W) and returns its perturbed copy (C, H, W);
:meth:`Resampled.perturbed` returns the copies a metric uses, to feed the same ones to another library.

The sensitivity metrics, the local Lipschitz estimate and relative input stability compare the
channel-summed maps (P, H, W), as Quantus 0.6.0's explanation functions sum attributions over the
channels; infidelity pairs each input element with its own attribution (captum's ``infidelity``).
"""

from __future__ import annotations

import copy
import hashlib
import math
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from ..core.checks import positive_int
from ..core.errors import InvalidParameterError
from .base import Context, Metric, Pairs, Score
from .perturbation import scores_of

#: ``perturb(image (C, H, W), generator) -> perturbed image (C, H, W)``
Perturb = Callable[[Tensor, torch.Generator], Tensor]

#: The most input elements one call to ``Context.explain`` is handed: its copies exist whole (the
#: engine then splits them into passes within the memory budget), so they are made a slice at a time.
CHUNK_ELEMENTS = 1 << 24


def draw_generator(seed: int, key: int, draw: int) -> torch.Generator:
    """The CPU generator of draw ``draw`` for the sample with ``key`` (``Context.keys``)."""
    digest = hashlib.blake2b(f"{seed}:{key}:{draw}".encode(), digest_size=8, person=b"xai-bench-robust")
    return torch.Generator().manual_seed(int.from_bytes(digest.digest(), "little") >> 1)


@dataclass(frozen=True)
class UniformNoise:
    """Add noise drawn uniformly from [low, high) to every element (Quantus's ``batch_uniform_noise``)."""

    low: float
    high: float

    def __call__(self, image: Tensor, generator: torch.Generator) -> Tensor:
        # Drawn in float64 on the CPU: the same numbers whatever the device and dtype of the image.
        noise = torch.empty(image.shape, dtype=torch.float64).uniform_(self.low, self.high, generator=generator)
        return image + noise.to(image.device, image.dtype)


@dataclass(frozen=True)
class GaussianNoise:
    """Add noise drawn from N(0, std²) to every element (Quantus's ``batch_gaussian_noise``)."""

    std: float

    def __call__(self, image: Tensor, generator: torch.Generator) -> Tensor:
        noise = torch.empty(image.shape, dtype=torch.float64).normal_(0.0, self.std, generator=generator)
        return image + noise.to(image.device, image.dtype)


def _number(owner: str, name: str, value: Any, *, positive: bool, meaning: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidParameterError(f"{owner}: {name} ({meaning}) must be a finite number, got {value!r}.")
    if positive and not value > 0:
        raise InvalidParameterError(f"{owner}: {name} ({meaning}) must be > 0, got {value!r}.")
    return float(value)


class Resampled(Metric):
    """A metric that scores maps on perturbed copies of each input; see the module's docstring."""

    higher_is_better: ClassVar[bool] = False
    needs_model: ClassVar[bool] = True

    def __init__(self, *, n_samples: int, seed: int, perturb: Perturb | None) -> None:
        self.n_samples = positive_int("n_samples", n_samples, owner=self.id)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise InvalidParameterError(f"{self.id}: seed must be an int, got {seed!r}.")
        if perturb is not None and not callable(perturb):
            raise InvalidParameterError(
                f"{self.id}: perturb must be None (the default noise) or a callable (image (C, H, W), generator) -> "
                f"perturbed image (C, H, W), got {type(perturb).__name__}."
            )
        self.seed = seed
        self._perturb = perturb

    def default_perturbation(self) -> Perturb:
        """The noise used when no ``perturb`` is given."""
        raise NotImplementedError

    def params(self) -> dict[str, Any]:
        own = {k: v for k, v in vars(self).items() if not k.startswith("_")}
        given = self._perturb
        named = f"{getattr(given, '__module__', None)}.{getattr(given, '__qualname__', type(given).__qualname__)}"
        return {**own, "perturb": None if given is None else named}

    def perturbed(self, image: Tensor, key: int, draws: Iterable[int]) -> Tensor:
        """The copies of ``image`` (C, H, W), the sample with ``key``, for ``draws``: (k, C, H, W)."""
        perturb = self.default_perturbation() if self._perturb is None else self._perturb
        copies = []
        for draw in draws:
            copy_ = perturb(image, draw_generator(self.seed, key, draw))
            if not isinstance(copy_, Tensor) or copy_.shape != image.shape:
                got = tuple(copy_.shape) if isinstance(copy_, Tensor) else type(copy_).__name__
                raise InvalidParameterError(
                    f"{self.id}: perturb returned {got} for an image of shape {tuple(image.shape)}; it must return "
                    "the perturbed image, of the same shape."
                )
            copies.append(copy_.to(image.device, image.dtype))
        return torch.stack(copies)

    def copies_of(self, x: Tensor, samples: Tensor, draws: Tensor, keys: Tensor | None) -> Tensor:
        """Copy ``draws[i]`` of sample ``samples[i]`` of ``x`` for each i (draw -1: the input itself): (k, C, H, W)
        on ``x``'s device. ``keys`` (N,) are the samples' keys (without them, their rows)."""
        return torch.cat([
            x[[s]] if d < 0 else self.perturbed(x[s], s if keys is None else int(keys[s]), [d])
            for s, d in zip(samples.tolist(), draws.tolist(), strict=True)
        ])  # fmt: skip

    def forward_copies(self, pairs: Pairs, context: Context) -> Tensor:
        """The logits of each pair's input and its copies: (P, 1 + n_samples, K), float64 on the CPU, from one
        forward pass of each sample and copy (its targets share them)."""
        x = context.inputs
        assert x is not None
        rows, row_of = torch.unique(pairs.sample, return_inverse=True)
        width = self.n_samples + 1

        def images(first: int, count: int) -> Tensor:
            item = torch.arange(first, first + count)
            return self.copies_of(x, rows[item // width], item % width - 1, context.keys)

        logits = context.forward(len(rows) * width, images, self.id).to(torch.float64).cpu()
        return logits.view(len(rows), width, -1)[row_of]


class Reexplained(Resampled):
    """A metric that compares each map with the method's maps of the perturbed copies of its input.

    The copies of a pair are made again with ``Context.explain`` (n_samples per pair, the expensive
    part), a slice of the (pair, draw) items at a time, and each is reduced to a number by
    :meth:`compare` at once, so the maps of the copies are never all held.
    """

    def compare(self, original: Tensor, new: Tensor, x: Tensor, copies: Tensor) -> Tensor:
        """One value per copy: ``original`` and ``new`` channel-summed maps (k, H, W), ``x`` and ``copies``
        (k, C, H, W), all float64."""
        raise NotImplementedError

    def per_copy(self, pairs: Pairs, context: Context) -> Tensor:
        """:meth:`compare`'s value for each pair and copy: (P, n_samples), float64."""
        x, model = context.inputs, context.model
        assert x is not None and model is not None
        n = self.n_samples
        original = pairs.reduced()
        private = copy.deepcopy(model)  # the method may rewrite or hook the model it explains
        values = torch.empty(len(pairs.sample) * n, dtype=torch.float64)
        step = max(1, CHUNK_ELEMENTS // x[0].numel())
        for first in range(0, len(values), step):
            item = torch.arange(first, min(first + step, len(values)))
            pair, draw = item // n, item % n
            sample = pairs.sample[pair]
            copies = self.copies_of(x, sample, draw, context.keys)
            new = context.explain(private, sample, pairs.target[pair], copies)
            values[item] = self.compare(
                original[pair], new.to(torch.float64).sum(1), x[sample.to(x.device)].cpu().double(),
                copies.cpu().double(),
            )  # fmt: skip
        return values.view(len(pairs.sample), n)


def relative_change(original: Tensor, new: Tensor) -> Tensor:
    """||new - original|| / ||original|| (Frobenius) per row, as ||new - original|| where the original is zero."""
    size = original.flatten(1).norm(dim=1)
    return (new - original).flatten(1).norm(dim=1) / torch.where(size > 0, size, torch.ones_like(size))


# The maps of the copies are the expensive part of both sensitivities: when one evaluate call asks for
# both, with the same noise, the second reads the first's per-copy values. Keyed by the call's explain
# function, which lives as long as the call scores one method.
_shared_sensitivity: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class _Sensitivity(Reexplained):
    def __init__(
        self, *, n_samples: int = 10, radius: float = 0.2, seed: int = 0, perturb: Perturb | None = None
    ) -> None:
        super().__init__(n_samples=n_samples, seed=seed, perturb=perturb)
        self.radius = _number(self.id, "radius", radius, positive=True, meaning="of the uniform noise, per element")

    def default_perturbation(self) -> Perturb:
        return UniformNoise(-self.radius, self.radius)

    def compare(self, original: Tensor, new: Tensor, x: Tensor, copies: Tensor) -> Tensor:
        return relative_change(original, new)

    def score(self, pairs: Pairs, context: Context) -> Score:
        key = (self.n_samples, self.radius, self.seed, id(self._perturb))
        try:
            known = _shared_sensitivity.setdefault(context.explain, {})
        except TypeError:  # an explain function that cannot be weakly referenced: nothing is shared
            known = {}
        if key not in known or known[key][0] is not pairs:
            known[key] = (pairs, self.per_copy(pairs, context))
        return Score(self.reduce(known[key][1]))

    def reduce(self, values: Tensor) -> Tensor:
        """The score of each pair from its copies' values (P, n_samples)."""
        raise NotImplementedError


class MaxSensitivity(_Sensitivity):
    """The largest relative change of the map over ``n_samples`` noisy copies of the input (Yeh et al.,
    2019; Quantus's ``MaxSensitivity``; captum's ``sensitivity_max``); lower is better.

    ``max_k ||a(x_k) - a(x)|| / ||a(x)||`` with ``a`` the channel-summed map (H, W), the Frobenius
    norm, and ``x_k = x + u``, ``u`` uniform in [-radius, radius) per element (an L-inf ball; Quantus's
    default noise and norms, whose default radius is 0.2 too). ``a(x_k)`` is the method's map of the
    copy, made again with the parameters the maps were made with. Quantus draws 200 copies by default,
    captum 10 (as here); a zero map divides by 1, as captum (Quantus returns inf or NaN). ``seed``
    seeds the noise and ``perturb`` replaces it (see the module). Value (P,) per pair.
    """

    id: ClassVar[str] = "max_sensitivity"

    def reduce(self, values: Tensor) -> Tensor:
        return values.amax(1)


class AvgSensitivity(_Sensitivity):
    """The mean relative change of the map over ``n_samples`` noisy copies of the input (Yeh et al., 2019;
    Quantus's ``AvgSensitivity``); lower is better. As :class:`MaxSensitivity`, with the mean for the
    max; evaluated together with it (same ``n_samples``, ``radius``, ``seed``, ``perturb``), both read
    one set of maps of the copies."""

    id: ClassVar[str] = "avg_sensitivity"

    def reduce(self, values: Tensor) -> Tensor:
        return values.mean(1)


def normalised_by_max(maps: Tensor) -> Tensor:
    """Each map (k, H, W) divided by its largest absolute value; maps of zeros stay zero."""
    largest = maps.flatten(1).abs().amax(1).view(-1, *([1] * (maps.dim() - 1)))
    return maps / torch.where(largest > 0, largest, torch.ones_like(largest))


class LocalLipschitzEstimate(Reexplained):
    """The largest ratio of the map's change to the input's change over ``n_samples`` copies of the input
    with Gaussian noise (Alvarez-Melis & Jaakkola, 2018, as Quantus's ``LocalLipschitzEstimate``);
    lower is better.

    ``max_k ||a(x_k) - a(x)|| / ||x_k - x||`` (Euclidean norms), ``x_k = x + e``, ``e ~ N(0, std²)`` per
    element (Quantus's defaults: std 0.1; it draws 200 copies). ``a`` is the channel-summed map
    (H, W), divided by its largest absolute value with ``normalise=True`` (as Quantus's default
    ``normalise_by_max``, per map: Quantus divides by the largest value of the whole batch). Quantus
    adds 1e-10 to the denominator; here a copy equal to its input gives NaN and is passed over.
    ``seed`` and ``perturb``: see the module.
    """

    id: ClassVar[str] = "local_lipschitz_estimate"

    def __init__(
        self,
        *,
        n_samples: int = 10,
        std: float = 0.1,
        normalise: bool = True,
        seed: int = 0,
        perturb: Perturb | None = None,
    ) -> None:
        super().__init__(n_samples=n_samples, seed=seed, perturb=perturb)
        self.std = _number(self.id, "std", std, positive=True, meaning="of the Gaussian noise, per element")
        if not isinstance(normalise, bool):
            raise InvalidParameterError(f"{self.id}: normalise must be True or False, got {normalise!r}.")
        self.normalise = normalise

    def default_perturbation(self) -> Perturb:
        return GaussianNoise(self.std)

    def compare(self, original: Tensor, new: Tensor, x: Tensor, copies: Tensor) -> Tensor:
        if self.normalise:
            original, new = normalised_by_max(original), normalised_by_max(new)
        step = (copies - x).flatten(1).norm(dim=1)
        change = (new - original).flatten(1).norm(dim=1)
        return torch.where(step > 0, change / step, torch.full_like(step, math.nan))

    def score(self, pairs: Pairs, context: Context) -> Score:
        return Score(nanmax(self.per_copy(pairs, context)))


def nanmax(values: Tensor) -> Tensor:
    """The largest value of each row (P, n) that is not NaN; NaN where none is."""
    kept = ~torch.isnan(values)
    largest = torch.where(kept, values, torch.full_like(values, -math.inf)).amax(1)
    return torch.where(kept.any(1), largest, torch.full_like(largest, math.nan))


class RelativeInputStability(Reexplained):
    """The largest relative change of the map per relative change of the input, over the copies of the
    input whose predicted class does not change (Agarwal et al., 2022, as Quantus's
    ``RelativeInputStability``); lower is better.

    ``max_k ||(a - a_k) / a|| / max(||(x - x_k) / x||, eps_min)`` over copies ``x_k`` with
    ``argmax f(x_k) = argmax f(x)``, element-wise quotients in which a zero divisor counts as
    ``eps_min``, Euclidean norms, ``a`` the channel-summed map (H, W). The default copies add noise
    uniform in [low, high) to every element, Quantus's default (its ``batch_uniform_noise`` with
    ``upper_bound=0.2`` and the 0.02 default lower bound); it draws 200 copies. NaN when every copy
    changes the prediction. Quantus returns NaN as soon as one copy changes the prediction (it takes
    ``np.max`` over values it set to NaN), and adds ``eps_min`` to a zero denominator only.
    ``seed`` and ``perturb``: see the module.
    """

    id: ClassVar[str] = "relative_input_stability"

    def __init__(
        self,
        *,
        n_samples: int = 10,
        low: float = 0.02,
        high: float = 0.2,
        eps_min: float = 1e-6,
        seed: int = 0,
        perturb: Perturb | None = None,
    ) -> None:
        super().__init__(n_samples=n_samples, seed=seed, perturb=perturb)
        self.low = _number(self.id, "low", low, positive=False, meaning="the noise's lower bound")
        self.high = _number(self.id, "high", high, positive=False, meaning="the noise's upper bound")
        if not self.high > self.low:
            raise InvalidParameterError(
                f"{self.id}: the noise is uniform in [low, high): high must be > low, got low={low!r}, high={high!r}."
            )
        self.eps_min = _number(self.id, "eps_min", eps_min, positive=True, meaning="the smallest divisor")

    def default_perturbation(self) -> Perturb:
        return UniformNoise(self.low, self.high)

    def compare(self, original: Tensor, new: Tensor, x: Tensor, copies: Tensor) -> Tensor:
        change = self._relative(original, new).norm(dim=1)
        step = self._relative(x, copies).norm(dim=1)
        return change / step.clamp_min(self.eps_min)

    def _relative(self, before: Tensor, after: Tensor) -> Tensor:
        divisor = torch.where(before == 0, torch.full_like(before, self.eps_min), before)
        return ((before - after) / divisor).flatten(1)

    def unchanged(self, pairs: Pairs, context: Context) -> Tensor:
        """Whether each copy keeps its input's predicted class (the largest logit): (P, n_samples)."""
        predicted = self.forward_copies(pairs, context).argmax(2)
        return predicted[:, 1:] == predicted[:, :1]

    def score(self, pairs: Pairs, context: Context) -> Score:
        values = self.per_copy(pairs, context)
        kept = self.unchanged(pairs, context)
        return Score(nanmax(torch.where(kept, values, torch.full_like(values, math.nan))))


OUTPUTS = ("logit", "softmax", "sigmoid")


class Infidelity(Resampled):
    """How badly the map predicts the change of the model's output when the input is perturbed (Yeh et
    al., 2019; captum's ``infidelity``); lower is better.

    ``mean_k (I_k . a - (f(x) - f(x - I_k)))²`` over ``n_samples`` perturbations ``I_k = x - x_k``
    of the input, ``x_k = x + e``, ``e ~ N(0, std²)`` per element by default, ``a`` the map (C, H, W)
    (a one-channel map counts for every channel, as Quantus broadcasts it) and ``f`` the target's
    score the maps explain (``output=None``, the default: their logit, sigmoid or softmax, from the maps'
    provenance; or ``"logit"``, ``"softmax"``, ``"sigmoid"`` to choose). With
    ``normalise=True`` (the default) the map is first scaled by
    ``beta = sum_k (I_k . a) Δf_k / sum_k (I_k . a)²``, the scale that fits the output changes best,
    so that the score does not change with the map's scale and maps of different methods compare:
    this is captum's ``normalize=True``, whose documentation finds the same normalisation in the
    paper's official implementation. ``normalise=False`` is captum's default and Quantus's
    ``Infidelity`` (which perturbs with black patches instead of noise). The forward passes of a
    sample's copies serve all its targets. ``seed`` and ``perturb``: see the module. Value (P,).
    """

    id: ClassVar[str] = "infidelity"

    def __init__(
        self,
        *,
        n_samples: int = 10,
        std: float = 0.1,
        normalise: bool = True,
        output: str | None = None,
        seed: int = 0,
        perturb: Perturb | None = None,
    ) -> None:
        super().__init__(n_samples=n_samples, seed=seed, perturb=perturb)
        self.std = _number(self.id, "std", std, positive=True, meaning="of the Gaussian noise, per element")
        if not isinstance(normalise, bool):
            raise InvalidParameterError(f"{self.id}: normalise must be True or False, got {normalise!r}.")
        if output is not None and output not in OUTPUTS:
            raise InvalidParameterError(
                f"{self.id}: output (what f is) must be None (what the maps explain) or one of "
                f"{', '.join(map(repr, OUTPUTS))}, got {output!r}."
            )
        self.normalise, self.output = normalise, output

    def default_perturbation(self) -> Perturb:
        return GaussianNoise(self.std)

    def output_changes(self, pairs: Pairs, context: Context) -> Tensor:
        """f(x) - f(x_k) for each pair and copy: (P, n_samples), float64."""
        logits = self.forward_copies(pairs, context)
        width = logits.shape[1]
        classes = pairs.target.repeat_interleave(width)
        output = context.output if self.output is None else self.output
        scores = scores_of(logits.flatten(0, 1), classes, output, context.task).view(-1, width)
        return scores[:, :1] - scores[:, 1:]

    def predicted_changes(self, pairs: Pairs, context: Context) -> Tensor:
        """I_k . a for each pair and copy: (P, n_samples), float64."""
        x = context.inputs
        assert x is not None
        n = self.n_samples
        maps = pairs.maps.to(torch.float64)
        if maps.shape[1] not in (1, x.shape[1]) or maps.shape[2:] != x.shape[2:]:
            raise InvalidParameterError(
                f"infidelity: maps of shape {tuple(maps.shape[1:])} for inputs of shape {tuple(x.shape[1:])}; give "
                "maps of the inputs' shape, or of one channel."
            )
        values = torch.empty(len(pairs.sample) * n, dtype=torch.float64)
        step = max(1, CHUNK_ELEMENTS // x[0].numel())
        for first in range(0, len(values), step):
            item = torch.arange(first, min(first + step, len(values)))
            pair, draw = item // n, item % n
            sample = pairs.sample[pair]
            copies = self.copies_of(x, sample, draw, context.keys).cpu().double()
            change = x[sample.to(x.device)].cpu().double() - copies
            values[item] = (change * maps[pair]).flatten(1).sum(1)
        return values.view(len(pairs.sample), n)

    def score(self, pairs: Pairs, context: Context) -> Score:
        outputs = self.output_changes(pairs, context)
        predicted = self.predicted_changes(pairs, context)
        if self.normalise:
            fit = (predicted * outputs).sum(1, keepdim=True)
            size = predicted.square().sum(1, keepdim=True)
            predicted = predicted * fit / torch.where(size > 0, size, torch.ones_like(size))
        return Score((predicted - outputs).square().mean(1))


#: the classes this module registers as built-ins
ROBUSTNESS_METRICS: tuple[type[Metric], ...] = (
    MaxSensitivity, AvgSensitivity, LocalLipschitzEstimate, RelativeInputStability, Infidelity,
)  # fmt: skip
