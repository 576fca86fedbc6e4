"""The study's stages over one output folder, each resumable; a stage runs the ones before it first
(free when they are done) and a stage run twice does nothing the second time.

    folder/
      data/prepared-<size>.pt        every image at the study's size, labels, padding and lesion masks
      splits.json                    the subject-wise folds (or the split files given)
      checkpoints/fold<k>/<model>.pt the trained models (chosen on validation)
      predictions/fold<k>.npz        test probabilities per model
      table2.csv, table2.md          the scores beside the paper's
      table1.csv, table1.md          the models' parameters, FLOPs and memory at the study's size (report)
      maps/<model>.zarr              the methods for every true and predicted label (explain)
      maps_mean_reference/<model>.zarr  IG and DeepLIFT against the training mean image
      maps_deepliftshap/<model>.zarr DeepLIFT over 10 references from N(0, 0.001^2) (--deepliftshap)
      padding.csv, localisation.csv  the shortcut and (synthetic data) relevance on the lesions
      profiles/<model>.zarr          NAPs and dead feature maps (profile)
      figures/*.png, report.md       (figures, report)
      timings.json                   wall and CPU seconds spent in each stage, over every run of it
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import xarray as xr

import xai_bench

from . import figures
from .cases import single_model_errors
from .complexity import table1_is_for, write_table1
from .datasets import Record
from .interpret import (
    GROUPS,
    STUDY_METHODS,
    explain_models,
    groups_of,
    open_all,
    profile_models,
    relevance_in,
    study_methods,
    table_by_group,
)
from .labels import Hierarchy
from .models import ARCHITECTURES, NAMES
from .prepared import PreparedSet, prepare_set
from .scores import majority_vote, mean_probability, multilabel_scores, threshold, write_table2
from .splits import Split, leakage, subject_splits, unmatched
from .train import TrainConfig, predict, train

#: The stages in order; each runs those before it.
STAGES = ("data", "train", "evaluate", "explain", "profile", "figures", "report")


@dataclass(frozen=True)
class StudyConfig:
    size: int = 512
    folds: int = 5
    models: tuple[str, ...] = ARCHITECTURES
    epochs: int = 20
    batch_size: int = 16
    lr: float = 1e-3
    schedule: str = "constant"  # the paper's fixed rate; "cosine" warms up and decays (train.SCHEDULES)
    seed: int = 0
    pretrained: bool = False
    device: str = "cpu"
    threshold: float = 0.5
    #: The model's outputs: an output set of labels.json ("paper": Fig. 3's five) or labels of the hierarchy.
    outputs: str | tuple[str, ...] = "paper"
    #: The fold whose test images are explained and profiled: a number, or "best" (best ensemble micro F1).
    explain_fold: int | str = "best"
    explain_images: int | None = None  # None: every test image of the fold
    ig_steps: int = 32
    #: The local methods explained, by id (any installed xai_bench method); the study's six by default.
    methods: tuple[str, ...] = STUDY_METHODS
    occlusion_windows: int = 16  # occlusion's window is size / windows (32 px at 512 px) unless given in pixels
    occlusion_window: int | None = None
    occlusion_stride: int | None = None  # None: half the window
    occlusion_fill: float = 0.0
    memory_budget: str | None = None  # e.g. "20GiB" on a GPU; None: what the device has free
    #: Also DeepLIFT averaged over 10 references drawn from N(0, 0.001^2), as the authors' code's DeepLiftShap.
    deepliftshap: bool = False
    explain_batch_size: int | str = "auto"
    #: What the maps explain: each output's logit, or its sigmoid (each model wrapped in a sigmoid).
    explained_output: str = "logit"

    def training(self) -> TrainConfig:
        return TrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, schedule=self.schedule,
                           seed=self.seed, pretrained=self.pretrained, device=self.device)  # fmt: skip


@dataclass
class Timings:
    """Wall-clock and CPU seconds per stage, added up over every run of it (a resumed stage adds the rest of
    its work); kept in ``path`` when one is given. CPU seconds are the process's, all its threads together:
    on a busy machine they say what the work cost where wall time says how long it waited."""

    path: Path | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    cpu_seconds: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.path is not None and self.path.exists():
            saved = json.loads(self.path.read_text())
            if "wall" not in saved:  # written before CPU time was kept: wall seconds alone
                saved = {"wall": saved, "cpu": {}}
            self.seconds = {**saved["wall"], **self.seconds}
            self.cpu_seconds = {**saved["cpu"], **self.cpu_seconds}

    def measure(self, stage: str, work: Callable[[], Any]) -> Any:
        start, cpu = time.perf_counter(), time.process_time()
        result = work()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start
        self.cpu_seconds[stage] = self.cpu_seconds.get(stage, 0.0) + time.process_time() - cpu
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps({"wall": self.seconds, "cpu": self.cpu_seconds}, indent=1))
        return result

    def lines(self) -> list[str]:
        """One Markdown item per stage, then the total."""
        rows = [(stage, wall, self.cpu_seconds.get(stage)) for stage, wall in self.seconds.items()]
        rows.append(("total", sum(self.seconds.values()), sum(self.cpu_seconds.values()) or None))
        return [
            f"- {stage}: {wall:.0f} s" + (f" ({cpu:.0f} CPU s)" if cpu is not None else "") for stage, wall, cpu in rows
        ]


def data_stage(
    records: Sequence[Record], folder: Path, config: StudyConfig, *, lesions=None,
    splits: Sequence[Split] | None = None, progress: bool = True,
) -> tuple[PreparedSet, list[Split]]:  # fmt: skip
    """Prepare the images and draw the folds, or take ``splits`` (e.g. the study authors' files); both are
    kept in ``folder`` and a second call reads them. Given splits that put one subject's images on two
    sides are used as given (that is what reproducing them means) with a warning that counts the leak."""
    prepared = prepare_set(records, config.size, folder / "data" / f"prepared-{config.size}.pt", lesions=lesions,
                           hierarchy=Hierarchy.load().with_outputs(config.outputs), progress=progress)  # fmt: skip
    path = folder / "splits.json"
    if splits is None:
        splits = subject_splits(records, folds=config.folds, seed=config.seed)
    else:
        splits = list(splits)
        for k, split in enumerate(splits):
            missing = unmatched(split, records)
            if missing:
                warnings.warn(f"split {k}: {len(missing)} ids name no image of this data (e.g. {sorted(missing)[:3]}); "
                              "they are left out.", stacklevel=2)  # fmt: skip
            leaked = leakage(split, records)
            if leaked:
                warnings.warn(f"split {k}: {len(leaked)} subjects have images on two sides (e.g. "
                              f"{sorted(leaked)[:3]}); scores on it are optimistic.", stacklevel=2)  # fmt: skip
    lines = "\n".join(split.to_json() for split in splits) + "\n"
    if not path.exists() or path.read_text() != lines:
        path.write_text(lines)
    return prepared, splits


def train_stage(prepared: PreparedSet, splits: Sequence[Split], folder: Path, config: StudyConfig, *,
                progress: bool = True) -> dict[tuple[int, str], torch.nn.Module]:  # fmt: skip
    """Every model on every fold, checkpoints in ``folder/checkpoints`` (resumed, never trained twice)."""
    trained = {}
    for k, split in enumerate(splits):
        train_rows, val_rows = prepared.rows_of(split.train), prepared.rows_of(split.val)
        train_xy = (prepared.float_images(train_rows), prepared.targets[train_rows])
        val_xy = (prepared.float_images(val_rows), prepared.targets[val_rows])
        for name in config.models:
            result = train(name, train_xy, val_xy, config.training(),
                           folder / "checkpoints" / f"fold{k}" / f"{name}.pt", progress=progress)  # fmt: skip
            trained[(k, name)] = result.model
    return trained


def made_from(folder: Path, fold: int, models: Sequence[str], rows: Sequence[int]) -> str:
    """What an output of ``fold`` is made from: its images and the checkpoints (by their last write), so
    that one made before a split, the models or the size changed is made again, never reused."""
    parts = [list(map(int, rows))]
    for name in models:
        checkpoint = folder / "checkpoints" / f"fold{fold}" / f"{name}.pt"
        parts.append([name, checkpoint.stat().st_mtime_ns if checkpoint.exists() else None])
    return hashlib.blake2b(json.dumps(parts).encode(), digest_size=12).hexdigest()


def evaluate_stage(prepared: PreparedSet, splits: Sequence[Split], trained, folder: Path,
                   config: StudyConfig) -> dict[str, list[dict]]:  # fmt: skip
    """Test probabilities per fold and model (kept as ``predictions/fold<k>.npz``), the scores of each model
    and of both ensembles, and Table 2 (``table2.csv``, ``table2.md``)."""
    results: dict[str, list[dict]] = {}
    for k, split in enumerate(splits):
        rows = prepared.rows_of(split.test)
        path = folder / "predictions" / f"fold{k}.npz"
        key = made_from(folder, k, config.models, rows)
        stored = np.load(path) if path.exists() else None
        if stored is not None and "key" in stored and str(stored["key"]) == key:
            probs = {name: stored[name] for name in config.models}
        else:  # none yet, or made from other test images or other checkpoints
            x = prepared.float_images(rows)
            probs = {name: predict(trained[(k, name)], x, device=config.device).numpy() for name in config.models}
            path.parent.mkdir(parents=True, exist_ok=True)
            np.savez(path, **probs, rows=np.asarray(rows), key=np.asarray(key))
        truth = prepared.targets[rows].numpy().astype(np.int64)
        labels = list(prepared.outputs)
        decisions = {NAMES[name]: threshold(p, config.threshold) for name, p in probs.items()}
        for model, pred in decisions.items():
            results.setdefault(model, []).append(multilabel_scores(truth, pred, labels))
        stacked = np.stack([probs[name] for name in config.models])
        ensembles = {
            "Ensemble (majority vote)": majority_vote(np.stack(list(decisions.values()))),
            "Ensemble (mean probability)": mean_probability(stacked, config.threshold),
        }
        for model, pred in ensembles.items():
            results.setdefault(model, []).append(multilabel_scores(truth, pred, labels))
    write_table2(results, folder)
    settings = folder / "config.json"
    text = json.dumps(asdict(config), indent=1)
    if not settings.exists() or settings.read_text() != text:
        settings.write_text(text)
    return results


@dataclass
class Explained:
    """What the explain stage leaves: the explained test rows of one fold and their stores, opened."""

    fold: int
    rows: list[int]
    test_rows: list[int]
    maps: dict[str, xr.Dataset]
    mean_reference: dict[str, xr.Dataset]
    deepliftshap: dict[str, xr.Dataset] = field(default_factory=dict)


def followup_series(prepared: PreparedSet, rows: Sequence[int], longest: int = 4) -> list[int]:
    """The longest follow-up series among ``rows``: the COVID-19 images of the subject with the most images of
    known offset (at least two), in the order of their days, at most ``longest`` spread over the series."""
    offsets = prepared.offsets or [None] * len(prepared.sample_ids)
    series: dict[str, list[int]] = {}
    for row in rows:
        if offsets[row] is not None and "COVID-19" in prepared.labels[row]:
            series.setdefault(prepared.subjects[row], []).append(row)
    best = max(series.values(), key=lambda found: (len(found), -min(found)), default=[])
    if len(best) < 2:
        return []
    best = sorted(best, key=lambda row: (offsets[row], row))
    picks = np.unique(np.linspace(0, len(best) - 1, min(longest, len(best))).round().astype(int))
    return [best[i] for i in picks]


def explained_rows(prepared: PreparedSet, test_rows: Sequence[int], count: int | None) -> list[int]:
    """All of ``test_rows``, or ``count`` of them: a follow-up series first (:func:`followup_series`, at most
    half the count), then the rest taken in turn from each kind (COVID-19, bacterial, viral, other
    pneumonia, healthy), so that every kind is explained as far as the count allows."""
    if count is None or count >= len(test_rows):
        return sorted(test_rows)
    series = followup_series(prepared, test_rows, longest=min(4, count // 2))
    chosen_first = set(series)
    kinds: dict[str, list[int]] = {}
    for row in (r for r in test_rows if r not in chosen_first):
        labels = set(prepared.labels[row])
        kind = next((k for k in ("COVID-19", "bacterial", "viral", "pneumonia", "healthy") if k in labels), "other")
        kinds.setdefault(kind, []).append(row)
    queues = [kinds[kind] for kind in sorted(kinds)]
    chosen: list[int] = list(series)
    for turn in range(max(map(len, queues), default=0)):
        chosen += [queue[turn] for queue in queues if turn < len(queue)]
    return sorted(chosen[:count])


def mean_image(prepared: PreparedSet, rows: Sequence[int], chunk: int = 64) -> torch.Tensor:
    """The mean of the images ``rows`` in [0, 1], summed in chunks (the set may not fit as floats)."""
    rows = list(rows)
    total = torch.zeros(prepared.images.shape[1:], dtype=torch.float64)
    for first in range(0, len(rows), chunk):
        total += prepared.images[rows[first : first + chunk]].to(torch.float64).sum(0)
    return (total / (255.0 * max(1, len(rows)))).float()


def area_by_group(prepared: PreparedSet, rows: Sequence[int]) -> pd.DataFrame:
    """The padding's share of each image's area per group: what a map spread evenly would put there."""
    share = prepared.padding[list(rows)].float().mean((1, 2)).numpy()
    membership = groups_of(prepared, rows)
    records = []
    for g, group in enumerate(GROUPS):
        values = share[membership[:, g]]
        if len(values):
            records.append({"model": "(any)", "method": "area of the padding (an even map)", "group": group,
                            "mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1
                            else float("nan"), "images": len(values)})  # fmt: skip
    return pd.DataFrame.from_records(records)


class Study:
    """The study over one output folder: each stage is a method that runs the ones before it once
    (the stages themselves skip what the folder already holds)."""

    def __init__(self, records: Sequence[Record], folder: str | Path, config: StudyConfig, *,
                 lesions: Sequence[np.ndarray | None] | None = None, splits: Sequence[Split] | None = None,
                 title: str = "The COVID-19 chest X-ray study", progress: bool = True,
                 notes: Sequence[str] = ()) -> None:  # fmt: skip
        self.records, self.folder, self.config = list(records), Path(folder), config
        self.lesions, self.given_splits, self.title, self.progress = lesions, splits, title, progress
        self.notes = list(notes)  # lines on the data for the report (e.g. what the authors' list names not here)
        self.timings = Timings(self.folder / "timings.json")
        self._done: dict[str, Any] = {}

    def _once(self, stage: str, work: Callable[[], Any]) -> Any:
        if stage not in self._done:
            self._done[stage] = self.timings.measure(stage, work)
        return self._done[stage]

    def data(self) -> tuple[PreparedSet, list[Split]]:
        return self._once("data", lambda: data_stage(self.records, self.folder, self.config, lesions=self.lesions,
                                                      splits=self.given_splits, progress=self.progress))  # fmt: skip

    def train(self) -> dict[tuple[int, str], torch.nn.Module]:
        prepared, splits = self.data()
        return self._once("train", lambda: train_stage(prepared, splits, self.folder, self.config,
                                                        progress=self.progress))  # fmt: skip

    def evaluate(self) -> dict[str, list[dict]]:
        prepared, splits = self.data()
        trained = self.train()
        return self._once("evaluate", lambda: evaluate_stage(prepared, splits, trained, self.folder, self.config))

    def explain_fold(self) -> int:
        """The fold explained and profiled: ``config.explain_fold``, or with "best" the fold whose majority-vote
        ensemble has the best micro F1 (the first of equals), so that the maps show the models at their best."""
        chosen, folds = self.config.explain_fold, len(self.data()[1])
        if chosen == "best":
            f1 = [fold["micro_f1"] for fold in self.evaluate()["Ensemble (majority vote)"]]
            return int(np.argmax(f1))
        if not isinstance(chosen, int) or not 0 <= chosen < folds:
            raise ValueError(f"explain_fold {chosen!r}: expected 'best' or a fold from 0 to {folds - 1}.")
        return chosen

    def explain(self) -> Explained:
        """The configured methods, the study's six by default (and IG and DeepLIFT, where chosen, against the
        training mean image), for every true and predicted label of the explained test images of
        :meth:`explain_fold`; then the padding and lesion tables."""
        self.evaluate()
        return self._once("explain", self._explain)

    def _explain(self) -> Explained:
        config, (prepared, splits), trained = self.config, self.data(), self.train()
        k = self.explain_fold()
        stored = np.load(self.folder / "predictions" / f"fold{k}.npz")
        test_rows = [int(r) for r in stored["rows"]]
        rows = explained_rows(prepared, test_rows, config.explain_images)
        position = {r: i for i, r in enumerate(test_rows)}
        probs = {name: stored[name][[position[r] for r in rows]] for name in config.models}
        models = {name: trained[(k, name)] for name in config.models}
        keys = {name: made_from(self.folder, k, [name], rows) for name in config.models}
        common = {"threshold": config.threshold, "memory_budget": config.memory_budget, "device": config.device,
                  "batch_size": config.explain_batch_size, "progress": self.progress, "keys": keys,
                  "output": config.explained_output}  # fmt: skip
        methods = study_methods(config.size, ig_steps=config.ig_steps, windows=config.occlusion_windows,
                                window=config.occlusion_window, stride=config.occlusion_stride,
                                fill=config.occlusion_fill, methods=config.methods)  # fmt: skip
        maps = explain_models(models, prepared, rows, probs, self.folder, methods=methods, **common)
        # Against a reference that is not the padding's value (zero), the padding can be seen.
        reference = mean_image(prepared, prepared.rows_of(splits[k].train))
        others = {"integrated_gradients": {"n_steps": config.ig_steps, "baseline": reference},
                  "deeplift": {"baseline": reference}}  # fmt: skip
        others = {method: params for method, params in others.items() if method in config.methods}
        mean_reference = {}
        if others:
            mean_reference = explain_models(models, prepared, rows, probs, self.folder, methods=others,
                                            store_name="maps_mean_reference", **common)  # fmt: skip
        shap = {}
        if config.deepliftshap:  # the authors' DeepLiftShap: 10 references near zero, drawn once (seeded)
            noise = torch.randn(10, *prepared.images.shape[1:], generator=torch.Generator().manual_seed(config.seed))
            shap = explain_models(models, prepared, rows, probs, self.folder, store_name="maps_deepliftshap",
                                  methods={"deeplift": {"baselines": noise * 0.001}}, **common)  # fmt: skip
        explained = Explained(k, rows, test_rows, open_all(maps), open_all(mean_reference), open_all(shap))
        self._tables(prepared, explained)
        return explained

    def _tables(self, prepared: PreparedSet, explained: Explained) -> None:
        rows = explained.rows
        padding = table_by_group({m: relevance_in(ds, prepared.padding[rows]) for m, ds in explained.maps.items()},
                                 prepared, rows, "relevance_mass")  # fmt: skip
        tables = [area_by_group(prepared, rows), padding]
        if explained.mean_reference:  # IG or DeepLIFT was chosen
            against_mean = table_by_group(
                {m: relevance_in(ds, prepared.padding[rows]) for m, ds in explained.mean_reference.items()},
                prepared, rows, "relevance_mass",
            )  # fmt: skip
            tables.append(against_mean.assign(method=against_mean["method"] + " (mean image reference)"))
        if explained.deepliftshap:
            shap = table_by_group({m: relevance_in(ds, prepared.padding[rows]) for m, ds in
                                   explained.deepliftshap.items()}, prepared, rows, "relevance_mass")  # fmt: skip
            tables.append(shap.assign(method="deepliftshap (10 references from N(0, 0.001²))"))
        pd.concat(tables).to_csv(self.folder / "padding.csv", index=False)
        if prepared.lesions is not None:
            scores = {m: relevance_in(ds, prepared.lesions[rows], metrics={"pointing_game": {}, "relevance_mass": {}})
                      for m, ds in explained.maps.items()}  # fmt: skip
            localisation = pd.concat(
                [table_by_group(scores, prepared, rows, "pointing_game").assign(metric="pointing game"),
                 table_by_group(scores, prepared, rows, "relevance_mass").assign(metric="relevance mass")]
            )  # fmt: skip
            localisation.to_csv(self.folder / "localisation.csv", index=False)

    def profile(self) -> dict[str, Path]:
        """NAPs and dead feature maps of the explain fold's models over its test images."""
        self.evaluate()

        def work() -> dict[str, Path]:
            config, (prepared, _), trained = self.config, self.data(), self.train()
            k = self.explain_fold()
            test_rows = [int(r) for r in np.load(self.folder / "predictions" / f"fold{k}.npz")["rows"]]
            models = {name: trained[(k, name)] for name in config.models}
            keys = {name: made_from(self.folder, k, [name], test_rows) for name in config.models}
            return profile_models(models, prepared, test_rows, self.folder, batch_size=config.explain_batch_size,
                                  memory_budget=config.memory_budget, device=config.device, keys=keys,
                                  progress=self.progress)  # fmt: skip

        return self._once("profile", work)

    def figures(self) -> list[Path]:
        """The paper's figures from the stages' outputs (drawn again each time: they are cheap)."""
        results, explained, profiles = self.evaluate(), self.explain(), self.profile()
        return self._once("figures", lambda: self._draw(results, explained, profiles))

    def _draw(self, results: dict, explained: Explained, profiles: dict[str, Path]) -> list[Path]:
        prepared, _ = self.data()
        fig = self.folder / "figures"
        fig.mkdir(parents=True, exist_ok=True)
        hierarchy = Hierarchy.load()
        drawn = [
            figures.findings_chart(prepared.labels, prepared.sources, list(hierarchy.parents),
                                   fig / "fig1_findings.png"),
            figures.hierarchy_chart(hierarchy.parents, prepared.outputs, fig / "fig2_hierarchy.png"),
            figures.scores_by_label(results, list(prepared.outputs), fig / "fig3_scores.png"),
        ]  # fmt: skip
        first = explained.maps[self.config.models[0]]
        covid = next((prepared.sample_ids[r] for r in explained.rows if "COVID-19" in prepared.labels[r]), None)
        if covid is not None:  # Figs. 4-6: one COVID-19 image, the maps of three of its targets
            covid_targets = [t for t in ("COVID-19", "pneumonia", "viral") if t in first.xai.targets(covid)]
            for number, target in enumerate(covid_targets, start=4):
                drawn.append(figures.method_grid(explained.maps, covid, target, fig / f"fig{number}_{target}.png"))
        for kind in ("bacterial", "viral", "healthy"):  # the same grid for an image of each other kind
            sample = next((prepared.sample_ids[r] for r in explained.rows
                           if kind in prepared.labels[r] and "COVID-19" not in prepared.labels[r]), None)  # fmt: skip
            target = next((t for t in (kind, "pneumonia") if sample and t in first.xai.targets(sample)), None)
            if target is not None:
                drawn.append(figures.method_grid(explained.maps, sample, target, fig / f"grid_{kind}.png"))
        drawn += self._case(explained, fig)
        series = followup_series(prepared, explained.rows, longest=len(explained.rows))
        pair = [m for m in ("densenet161", "resnet18") if m in explained.maps] or list(explained.maps)[:2]
        occlusion = "occlusion" in self.config.methods  # Figs. 8 and 10 show occlusion's maps
        if series and occlusion:  # Fig. 8: one subject's images by day, occlusion of COVID-19 by two models
            days = [float(prepared.offsets[r]) for r in series]
            drawn.append(figures.followup_chart({m: explained.maps[m] for m in pair},
                                                [prepared.sample_ids[r] for r in series], days,
                                                fig / "fig8_followup.png", prepared.subjects[series[0]]))  # fmt: skip
        for name, store in profiles.items():
            profile = xr.open_zarr(store)
            drawn.append(figures.naps(profile, "input", fig / f"fig9_naps_{name}.png"))
            if name in ("resnet18", "densenet161"):  # Fig. 9's feature maps: an early and a deep layer
                for layer in ("first_block", "last_block"):
                    drawn.append(figures.naps(profile, layer, fig / f"fig9_naps_{name}_{layer}.png", top=2))
        if covid is not None and occlusion:
            drawn.append(figures.occlusion_targets(explained.maps, covid, fig / "fig10_occlusion.png",
                                                   targets=covid_targets))  # fmt: skip
        drawn.append(figures.shortcut_chart(pd.read_csv(self.folder / "padding.csv"), fig / "shortcut.png",
                                            "share of |relevance| on the zero padding"))  # fmt: skip
        return drawn

    def _case(self, explained: Explained, fig: Path) -> list[Path]:
        """``cases.csv``: the explained fold's test images that one model gets wrong and the others right;
        Fig. 7 for the first of them that was explained."""
        prepared, _ = self.data()
        stored = np.load(self.folder / "predictions" / f"fold{explained.fold}.npz")
        probs = {name: stored[name] for name in self.config.models}
        ids = [prepared.sample_ids[r] for r in explained.test_rows]
        cases = single_model_errors(probs, prepared.targets[explained.test_rows].numpy(), prepared.outputs, ids,
                                    self.config.threshold)  # fmt: skip
        cases.to_csv(self.folder / "cases.csv", index=False)
        shown = {prepared.sample_ids[r] for r in explained.rows}
        case = next((c for c in cases.itertuples() if c.sample in shown), None)
        if case is None or "occlusion" not in self.config.methods:  # Fig. 7 shows occlusion maps
            return []
        position, label = ids.index(case.sample), list(prepared.outputs).index(case.output)
        chance = {name: float(p[position, label]) for name, p in probs.items()}
        return [figures.case_chart(explained.maps, case.sample, case.output, case.model, case.error, chance,
                                   fig / "fig7_case.png")]  # fmt: skip

    def table1(self) -> Path:
        """Table 1 (``table1.csv``, ``table1.md``): the models' parameters, FLOPs and peak memory at the study's
        size on its device, measured on the architectures (untrained: the numbers do not depend on the
        weights); measured again only when the models, size, outputs or device change."""
        prepared, _ = self.data()

        def work() -> Path:
            settings = {"size": self.config.size, "num_labels": len(prepared.outputs), "device": self.config.device}
            if not table1_is_for(self.folder / "table1.csv", self.config.models, **settings):
                write_table1(self.config.models, self.folder, **settings)
            return self.folder / "table1.md"

        return self._once("table1", work)

    def report(self, extra: Sequence[str] = ()) -> Path:
        """``report.md``: what was run (versions, settings, data, timings), the tables and the figures;
        ``extra`` Markdown lines go before the figures."""
        drawn = self.figures()
        table1 = self.table1().read_text()  # before the timings are listed, so that its own time is among them
        prepared, splits = self.data()
        folder, config = self.folder, self.config
        sources = Counter(prepared.sources)
        kinds = Counter(next((k for k in ("COVID-19", "bacterial", "viral", "pneumonia", "healthy") if k in labels),
                             "other") for labels in prepared.labels)  # fmt: skip
        padding = pd.read_csv(folder / "padding.csv")
        lines = [
            f"# {self.title}", "",
            f"xai_bench {xai_bench.__version__}, torch {torch.__version__}, Python {platform.python_version()}, "
            f"{torch.get_num_threads()} threads, device {config.device}. Settings: `{json.dumps(asdict(config))}`.", "",
            f"Data: {len(prepared.sample_ids)} images of {len(set(prepared.subjects))} subjects "
            f"({', '.join(f'{n} {s}' for s, n in sorted(sources.items()))}; "
            f"{', '.join(f'{n} {k}' for k, n in sorted(kinds.items()))}), {len(splits)} folds; explained: "
            f"{len(self.explain().rows)} test images of fold {self.explain_fold()}"
            f"{' (the best ensemble micro F1)' if config.explain_fold == 'best' else ''}. Outputs: "
            f"{', '.join(prepared.outputs)}. The maps explain each output's "
            f"{'sigmoid (probability)' if config.explained_output == 'sigmoid' else 'logit'}.", "",
            *(line for note in self.notes for line in (note, "")),
            "## Timings", "", *self.timings.lines(), "",
            "## Model complexity (Table 1)", "", table1, "",
            "## Classification (Table 2)", "", (folder / "table2.md").read_text(), "",
            "## The shortcut: share of |relevance| on the zero padding", "",
            "Per model and method, the mean ± std over images (and their number) of each group. Input × gradient, "
            "and integrated gradients and DeepLIFT with the zero reference, give the padding exactly nothing: it "
            "equals the reference. Against the training mean image they can see it. Occlusion fills with zero "
            "too: a window that lies wholly in the padding changes nothing, and what it shows there is spread "
            "from windows that also cover the image.", "",
            figures.markdown(figures.by_group(padding)), "",
        ]  # fmt: skip
        if (folder / "localisation.csv").exists():
            lines += ["## Localisation on the lesions", "",
                      figures.markdown(figures.by_group(pd.read_csv(folder / "localisation.csv"))), ""]  # fmt: skip
        dead = [{"model": NAMES.get(name, name), "layer": str(layer), "dead share": float(share)}
                for name, store in self.profile().items()
                for layer, share in xr.open_zarr(store)["dead_share"].to_series().items()]  # fmt: skip
        if dead:
            lines += ["## Dead feature maps (never above 0 on the test images)", "",
                      figures.markdown(pd.DataFrame(dead)), ""]  # fmt: skip
        lines += [
            *extra, "Every explained image with each model's maps, and the profiles: [html](html/index.html).",
            "", "## Figures", "", *(f"![{p.stem}](figures/{p.name})" for p in drawn), "",
        ]  # fmt: skip
        report = folder / "report.md"
        self.timings.measure("report", lambda: (report.write_text("\n".join(lines)), self.html()))
        return report

    def html(self) -> Path:
        """``html/index.html``: every explained image with each model's maps side by side, and the profiles."""
        stores: dict[str, Path] = {NAMES.get(m, m): self.folder / "maps" / f"{m}.zarr" for m in self.config.models}
        shap = {f"{NAMES.get(m, m)} DeepLiftShap": self.folder / "maps_deepliftshap" / f"{m}.zarr"
                for m in self.config.models}  # fmt: skip
        stores |= {name: path for name, path in shap.items() if self.config.deepliftshap and path.exists()}
        stores |= {f"{NAMES.get(m, m)} profiles": path for m, path in self.profile().items()}
        prepared, _ = self.data()
        truth = {prepared.sample_ids[r]: [label for label, on in zip(prepared.outputs, prepared.targets[r].tolist(),
                                                                      strict=True) if on > 0.5]
                 for r in self.explain().rows}  # fmt: skip
        return xai_bench.report(stores, self.folder / "html", title=self.title, truth=truth, progress=self.progress)

    def until(self, stage: str) -> Any:
        """Run every stage up to ``stage`` (one of :data:`STAGES`) and return what it returns."""
        if stage not in STAGES:
            raise ValueError(f"no stage {stage!r}; the stages are {', '.join(STAGES)}.")
        return getattr(self, stage)()
