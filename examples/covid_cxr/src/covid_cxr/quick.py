"""``covid-cxr quick``: the whole study on synthetic phantoms, sized for two CPU cores, with its control."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import torch

from . import figures
from .interpret import STUDY_METHODS
from .models import ARCHITECTURES
from .phantoms import generate, to_records
from .study import Study, StudyConfig


@dataclass(frozen=True)
class QuickConfig:
    # Sized for 10 CPU-minutes on two cores, the control included (report.md lists each stage's CPU seconds).
    images: int = 240
    size: int = 76  # InceptionV3 and InceptionResNetV2 need 75 px at least
    folds: int = 2
    epochs: int = 4
    explain_images: int = 8  # two of each kind: COVID-19, bacterial, viral, healthy
    ig_steps: int = 16
    occlusion_windows: int = 5  # a window of size / 5, stride half of it: 10 x 10 positions at 76 px
    seed: int = 0
    models: tuple[str, ...] = ARCHITECTURES
    methods: tuple[str, ...] = STUDY_METHODS
    control_model: str = "resnet18"
    # A few epochs at a fixed rate leave batch norm's running statistics behind the weights (the validation
    # loss jumped tenfold in the last epochs); a warm-up and a cosine decay to zero end on settled weights.
    schedule: str = "cosine"
    # Torch's thread count changes the order of floating-point sums: a fixed count gives the same table on
    # every machine.
    threads: int = 2

    def study(self) -> StudyConfig:
        return StudyConfig(size=self.size, folds=self.folds, models=self.models, epochs=self.epochs, batch_size=16,
                           schedule=self.schedule, seed=self.seed, explain_images=self.explain_images,
                           ig_steps=self.ig_steps, methods=self.methods,
                           occlusion_windows=self.occlusion_windows, explain_batch_size=32,
                           # The three outputs and the first fold the quick study's documented numbers come from.
                           outputs="three", explain_fold=0)  # fmt: skip


def synthetic_study(out: Path, config: QuickConfig, study: StudyConfig, *, confound: bool, title: str,
                    progress: bool = True) -> Study:  # fmt: skip
    """The study on phantoms drawn with the aspect-ratio confound on or off (the same seed otherwise)."""
    phantoms = generate(config.images, seed=config.seed, confound=confound, base=config.size + config.size // 5)
    records = to_records(phantoms, out / "data" / "phantoms")
    return Study(records, out, study, lesions=[p.lesion for p in phantoms], title=title, progress=progress)


def quick(out: str | Path = "covid_cxr_quick", config: QuickConfig = QuickConfig(), *, progress: bool = True) -> Path:
    """Run (or finish) the synthetic study into ``out`` and return its ``report.md``; the control (the
    confound off, ``config.control_model`` only) goes to ``out/control`` with a report of its own."""
    out = Path(out)
    threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        return _quick(out, config, progress)
    finally:
        torch.set_num_threads(threads)


def _quick(out: Path, config: QuickConfig, progress: bool) -> Path:
    study = config.study()
    control_config = StudyConfig(**{**asdict(study), "models": (config.control_model,)})
    control = synthetic_study(out / "control", config, control_config, confound=False, progress=progress,
                              title="The quick synthetic study's control: the aspect-ratio confound off")  # fmt: skip
    control_report = control.report()
    main = synthetic_study(out, config, study, confound=True, progress=progress,
                           title="The COVID-19 chest X-ray study, quick synthetic run")  # fmt: skip
    (out / "figures").mkdir(parents=True, exist_ok=True)
    shortcut_off = figures.shortcut_chart(pd.read_csv(out / "control" / "padding.csv"),
                                          out / "figures" / "shortcut_off.png", "confound off (control)")  # fmt: skip
    extra = [
        "## The control: the same phantoms (same seed) with the aspect-ratio confound off", "",
        f"{config.control_model} only; its full report is [control/report.md]({control_report.relative_to(out)}); "
        f"it took {sum(control.timings.seconds.values()):.0f} s ({sum(control.timings.cpu_seconds.values()):.0f} "
        "CPU s).",
        "", (out / "control" / "table2.md").read_text(), "",
        "Share of |relevance| on the zero padding without the confound:", "",
        figures.markdown(figures.by_group(pd.read_csv(out / "control" / "padding.csv"))), "",
        f"![shortcut_off](figures/{shortcut_off.name})", "",
    ]  # fmt: skip
    return main.report(extra=extra)
