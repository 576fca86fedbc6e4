"""``covid-cxr quick``: the whole study on synthetic phantoms, sized for two CPU cores, with its control."""

from __future__ import annotations

import json
import platform
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import xarray as xr

import xai_bench

from . import figures
from .interpret import explain_stage, open_all, profile_stage, relevance_in, study_methods, table_by_group
from .models import ARCHITECTURES
from .phantoms import generate, to_records
from .study import StudyConfig, Timings, data_stage, evaluate_stage, train_stage


@dataclass(frozen=True)
class QuickConfig:
    images: int = 400
    size: int = 80  # InceptionV3 and InceptionResNetV2 need 75 px at least
    folds: int = 2
    epochs: int = 6
    explain_images: int = 16
    ig_steps: int = 16
    occlusion_windows: int = 8  # a window of size / 8, stride half of it: 15 x 15 positions at 80 px
    seed: int = 0
    models: tuple[str, ...] = ARCHITECTURES
    control_model: str = "resnet18"


def quick(out: str | Path = "covid_cxr_quick", config: QuickConfig = QuickConfig(), *, progress: bool = True) -> Path:
    """Run (or finish) the synthetic study into ``out`` and return its ``report.md``."""
    out = Path(out)
    timings = Timings()
    study = StudyConfig(size=config.size, folds=config.folds, models=config.models, epochs=config.epochs,
                        batch_size=16, seed=config.seed)  # fmt: skip
    main = timings.measure("study (confound on)", lambda: _one(out, config, study, True, progress))
    control_study = StudyConfig(**{**asdict(study), "models": (config.control_model,)})
    control = timings.measure("control (confound off)", lambda: _one(out / "control", config, control_study, False,
                                                                     progress))  # fmt: skip
    return _report(out, config, main, control, timings)


def _one(out: Path, config: QuickConfig, study: StudyConfig, confound: bool, progress: bool) -> dict:
    phantoms = generate(config.images, seed=config.seed, confound=confound, base=config.size + config.size // 5)
    records = to_records(phantoms, out / "data" / "phantoms")
    prepared, splits = data_stage(records, out, study, lesions=[p.lesion for p in phantoms], progress=progress)
    trained = train_stage(prepared, splits, out, study, progress=progress)
    results = evaluate_stage(prepared, splits, trained, out, study)
    stored = np.load(out / "predictions" / "fold0.npz")
    test_rows = [int(r) for r in stored["rows"]]
    rows = _explained(prepared, test_rows, config.explain_images)
    position = {r: i for i, r in enumerate(test_rows)}
    probs = {name: stored[name][[position[r] for r in rows]] for name in study.models}
    models = {name: trained[(0, name)] for name in study.models}
    methods = study_methods(config.size, ig_steps=config.ig_steps, windows=config.occlusion_windows)
    maps = open_all(explain_stage(models, prepared, rows, probs, out, methods=methods, batch_size=32,
                                  progress=progress))  # fmt: skip
    # The same attribution methods against a reference that is not the padding's value: the training mean image.
    mean_image = prepared.float_images(prepared.rows_of(splits[0].train)).mean(0)
    reference = {"integrated_gradients": {"n_steps": config.ig_steps, "baseline": mean_image},
                 "deeplift": {"baseline": mean_image}}  # fmt: skip
    meanref = open_all(explain_stage(models, prepared, rows, probs, out, methods=reference, batch_size=32,
                                     store_name="maps_mean_reference", progress=progress))  # fmt: skip
    padding = table_by_group({m: relevance_in(ds, prepared.padding[rows]) for m, ds in maps.items()}, prepared, rows,
                             "relevance_mass")  # fmt: skip
    padding_meanref = table_by_group({m: relevance_in(ds, prepared.padding[rows]) for m, ds in meanref.items()},
                                     prepared, rows, "relevance_mass")  # fmt: skip
    padding_meanref["method"] = padding_meanref["method"] + " (mean image reference)"
    lesions = {m: relevance_in(ds, prepared.lesions[rows], metrics={"pointing_game": {}, "relevance_mass": {}})
               for m, ds in maps.items()}  # fmt: skip
    localisation = pd.concat(
        [table_by_group(lesions, prepared, rows, "pointing_game").assign(metric="pointing game"),
         table_by_group(lesions, prepared, rows, "relevance_mass").assign(metric="relevance mass")]
    )  # fmt: skip
    profiles = profile_stage(models, prepared, test_rows, out, progress=progress)
    return {"results": results, "padding": pd.concat([padding, padding_meanref]), "localisation": localisation,
            "maps": maps, "profiles": profiles, "rows": rows, "prepared": prepared}  # fmt: skip


def _explained(prepared, test_rows: list[int], count: int) -> list[int]:
    """Up to ``count`` test images, the same number from each kind where there are enough."""
    kinds = {}
    for row in test_rows:
        labels = set(prepared.labels[row])
        kind = next(k for k in ("COVID-19", "bacterial", "viral", "healthy") if k in labels)
        kinds.setdefault(kind, []).append(row)
    chosen, per_kind = [], max(1, count // max(1, len(kinds)))
    for kind in sorted(kinds):
        chosen += kinds[kind][:per_kind]
    return sorted(chosen)


def _report(out: Path, config: QuickConfig, main: dict, control: dict, timings: Timings) -> Path:
    fig = out / "figures"
    fig.mkdir(parents=True, exist_ok=True)
    main["padding"].to_csv(out / "padding.csv", index=False)
    control["padding"].to_csv(out / "control" / "padding.csv", index=False)
    main["localisation"].to_csv(out / "localisation.csv", index=False)
    prepared, rows = main["prepared"], main["rows"]
    drawn = [figures.scores_by_label(main["results"], list(prepared.outputs), fig / "fig3_scores.png")]
    for kind, target in (("COVID-19", "COVID-19"), ("bacterial", "pneumonia"), ("healthy", "healthy")):
        sample = next((prepared.sample_ids[r] for r in rows if kind in prepared.labels[r]), None)
        if sample is not None:
            drawn.append(figures.method_grid(main["maps"], sample, target, fig / f"fig4_{kind}.png"))
    covid = next((prepared.sample_ids[r] for r in rows if "COVID-19" in prepared.labels[r]), None)
    if covid is not None:
        drawn.append(figures.occlusion_targets(main["maps"][config.models[0]], covid, fig / "fig10_occlusion.png"))
    for name, store in main["profiles"].items():
        drawn.append(figures.naps(xr.open_zarr(store), "input", fig / f"fig9_naps_{name}.png"))
    drawn.append(figures.shortcut_chart(main["padding"], fig / "shortcut_on.png", "confound on"))
    drawn.append(figures.shortcut_chart(control["padding"], fig / "shortcut_off.png", "confound off (control)"))
    table2 = (out / "table2.md").read_text()
    control_table = (out / "control" / "table2.md").read_text()
    lines = [
        "# The COVID-19 chest X-ray study, quick synthetic run", "",
        f"xai_bench {xai_bench.__version__}, torch {torch.__version__}, Python {platform.python_version()}, "
        f"{torch.get_num_threads()} threads. Settings: `{json.dumps(asdict(config))}`.", "",
        "## Timings", "", *(f"- {stage}: {seconds:.0f} s" for stage, seconds in timings.seconds.items()), "",
        "## Classification (Table 2)", "", table2, "",
        "Control (the aspect-ratio confound off, " + config.control_model + "):", "", control_table, "",
        "## The shortcut: share of |relevance| on the zero padding", "",
        "Confound on (rows: method x group; integrated gradients and DeepLIFT with a zero reference cannot see "
        "the padding, which equals the reference; the mean-image rows can):", "",
        figures.markdown(main["padding"]), "", "Confound off (control):", "", figures.markdown(control["padding"]), "",
        "## Localisation on the lesions", "", figures.markdown(main["localisation"]), "",
        "## Figures", "", *(f"![{p.stem}](figures/{p.name})" for p in drawn), "",
    ]  # fmt: skip
    report = out / "report.md"
    report.write_text("\n".join(lines))
    return report
