"""The study's interpretability stages: its six methods (or those chosen) for every true and predicted label
of every test image (one resumable store per model), the shortcut measured on the padding, localisation on
known lesions, and neuron activation profiles with dead feature maps."""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import xarray as xr
from torch import nn

from xai_bench import Passes, Targets, evaluate, open_maps, profile, run

from .layers import study_layers
from .prepared import ForRun, PreparedSet

#: The groups the study profiled, by an image's labels.
GROUPS = ("COVID-19", "pneumonia", "pneumonia without COVID-19", "healthy")


#: The six local methods the study ran, in the order its figures show them.
STUDY_METHODS = ("occlusion", "saliency", "input_x_gradient", "guided_backprop", "integrated_gradients", "deeplift")


def study_methods(
    size: int, *, ig_steps: int = 32, windows: int = 16, window: int | None = None, stride: int | None = None,
    fill: float = 0.0, methods: Sequence[str] = STUDY_METHODS,
) -> dict[str, dict[str, Any]]:  # fmt: skip
    """``methods`` (by default the study's six) with the study's settings. Occlusion's window is ``window``
    pixels, or ``size / windows`` (32 px at 512 px for ``windows=16``: 31 x 31 = 961 positions, each a forward
    pass per image); its stride ``stride``, or half the window; ``fill`` the value in the window (0 is the
    padding's black, 0.5 a grey square). Integrated gradients takes ``ig_steps``; any other installed method
    runs with its own defaults."""
    window = window or max(4, size // windows)
    settings = {
        "occlusion": {"window": window, "stride": stride or max(1, window // 2), "fill": fill},
        "integrated_gradients": {"n_steps": ig_steps},
    }
    return {method: settings.get(method, {}) for method in methods}


def targets_of(prepared: PreparedSet, rows: Sequence[int], probabilities: np.ndarray, t: float) -> list[list[int]]:
    """Per test image, every output it has or the model predicts (the study explained both)."""
    truth = prepared.targets[list(rows)].numpy() > 0.5
    predicted = probabilities > t
    return [sorted(np.flatnonzero(a | b).tolist()) for a, b in zip(truth, predicted, strict=True)]


def groups_of(prepared: PreparedSet, rows: Sequence[int]) -> np.ndarray:
    """(n, 4) membership in :data:`GROUPS` (multilabel: a COVID-19 image is also a pneumonia image)."""
    labels = [set(prepared.labels[i]) for i in rows]
    return np.array(
        [["COVID-19" in s, "pneumonia" in s, "pneumonia" in s and "COVID-19" not in s, "healthy" in s] for s in labels]
    )


def explain_models(
    models: Mapping[str, nn.Module],
    prepared: PreparedSet,
    rows: Sequence[int],
    probabilities: Mapping[str, np.ndarray],
    folder: Path,
    *,
    methods: Mapping[str, Mapping[str, Any]],
    threshold: float = 0.5,
    memory_budget: str | int | None = None,
    batch_size: int | str = "auto",
    store_name: str = "maps",
    device: str | None = None,
    progress: bool = True,
    keys: Mapping[str, str] | None = None,
    output: str = "logit",
) -> dict[str, Path]:
    """``methods`` for every true and predicted label of the test images ``rows``, one store per model
    (``folder/<store_name>/<model>.zarr``, with the inputs), resumed where a run stopped. The maps
    explain ``output``: each label's logit, or its sigmoid (recorded in the store's ``output``).

    A store made from something else (``keys``: the images and checkpoints; the methods and threshold)
    is made again, as the predictions and profiles are: another fold explained, say, would otherwise
    be refused by the store as another run."""
    stores = {}
    for name, model in models.items():
        store = folder / store_name / f"{name}.zarr"
        key = json.dumps([(keys or {}).get(name, ""), threshold, methods, *([output] if output != "logit" else [])],
                         sort_keys=True,
                         default=lambda value: f"tensor{tuple(value.shape)}")  # fmt: skip
        stamp = store.with_suffix(".made-from")
        if store.exists() and (not stamp.exists() or stamp.read_text() != key):
            shutil.rmtree(store)
        if not stamp.exists() or stamp.read_text() != key:
            stamp.parent.mkdir(parents=True, exist_ok=True)
            stamp.write_text(key)  # before the run: a run stopped half-way resumes
        targets = Targets(
            targets_of(prepared, rows, probabilities[name], threshold),
            task="multilabel",
            class_names=list(prepared.outputs),
            max_targets=len(prepared.outputs),
            output=output,
        )
        passes = Passes(batch_size=batch_size, memory_budget=memory_budget, device=device, progress=progress)
        run(model, ForRun(prepared, rows), methods=dict(methods), store=store, targets=targets, passes=passes,
            store_inputs=True)  # fmt: skip
        stores[name] = store
    return stores


def relevance_in(maps: xr.Dataset, masks: torch.Tensor, *, metrics: Mapping[str, Any] | None = None) -> xr.Dataset:
    """Scores of the maps against ``masks`` (n, S, S) of their images (padding bands or lesions)."""
    chosen = metrics or {"relevance_mass": {"positive": False, "abs": True}}
    return evaluate(maps, metrics=dict(chosen), masks=masks[:, None])


def table_by_group(
    scores: Mapping[str, xr.Dataset], prepared: PreparedSet, rows: Sequence[int], metric: str
) -> pd.DataFrame:
    """Mean (and std over images) of ``metric`` per model x method x group, over each image's slots."""
    membership = groups_of(prepared, rows)
    records = []
    for model, ds in scores.items():
        for name, var in ds.data_vars.items():
            if var.attrs.get("metric") != metric or not str(name).endswith(metric):
                continue
            # The mean over an image's slots (its true and predicted labels); NaN where it has none scored.
            values_2d = var.values
            have = np.isfinite(values_2d)
            per_image = np.where(have.any(1), np.where(have, values_2d, 0).sum(1) / np.maximum(have.sum(1), 1), np.nan)
            for g, group in enumerate(GROUPS):
                values = per_image[membership[:, g]]
                values = values[np.isfinite(values)]
                if len(values):
                    records.append({"model": model, "method": var.attrs["method"], "group": group,
                                    "mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1
                                    else float("nan"), "images": len(values)})  # fmt: skip
    return pd.DataFrame.from_records(records)


def profile_models(
    models: Mapping[str, nn.Module], prepared: PreparedSet, rows: Sequence[int], folder: Path, *,
    batch_size: int | str = "auto", memory_budget: str | None = None, device: str | None = None,
    keys: Mapping[str, str] | None = None, progress: bool = True,
) -> dict[str, Path]:  # fmt: skip
    """NAPs and dead feature maps at the study's layers (:mod:`covid_cxr.layers`), per group; one store each.

    Every model is profiled: one whose layers cannot be found stops the stage with a ``ValueError``.
    """
    done = {}
    x = prepared.float_images(rows)
    groups = torch.from_numpy(groups_of(prepared, rows))
    for name, model in models.items():
        layers = study_layers(model)
        store = folder / "profiles" / f"{name}.zarr"
        # A profile is made again when what it was made from (``keys``: images and checkpoint) changed.
        key = (keys or {}).get(name, "")
        stamp = store.with_suffix(".made-from")
        if not store.exists() or not stamp.exists() or stamp.read_text() != key:
            passes = Passes(batch_size=batch_size, memory_budget=memory_budget, device=device, progress=progress)
            profile(model, x, layers=layers, groups=groups, group_names=list(GROUPS), store=store, overwrite=True,
                    passes=passes)  # fmt: skip
            stamp.write_text(key)
        done[name] = store
    return done


def open_all(stores: Mapping[str, Path]) -> dict[str, xr.Dataset]:
    return {name: open_maps(path) for name, path in stores.items()}
