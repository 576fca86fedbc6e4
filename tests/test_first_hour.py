"""What a new user meets in the first hour: tests and examples that a busy, shared machine cannot trip."""

from __future__ import annotations

import inspect
import io
import re
import sys
from pathlib import Path

import pytest
import torch

from xai_bench import InvalidParameterError, Passes, explain, run
from xai_bench.engine import progress
from xai_bench.testing import tiny_cnn
from xai_bench.testing.data import SyntheticImages

ROOT = Path(__file__).resolve().parents[1]


def test_every_local_cluster_takes_any_free_dashboard_port():
    # dask's dashboard_address=None still binds 8787 and warns when another program holds it, which
    # filterwarnings = error turns into a failed cluster start; ":0" lets the OS pick a free port.
    files = [ROOT / "README.md", *(ROOT / "docs").rglob("*.md"), *(ROOT / "tests").rglob("*.py")]
    files += [*(ROOT / "src").rglob("*.py"), *(ROOT / "examples").rglob("*.py"), *(ROOT / "benchmarks").rglob("*.py")]
    calls = [
        (path.relative_to(ROOT).as_posix(), call)
        for path in files
        for call in re.findall(r"LocalCluster\([^)]*\)", path.read_text(encoding="utf-8"))
    ]
    assert calls, "no LocalCluster found: the scan looks in the wrong place"
    fixed = [(where, call) for where, call in calls if 'dashboard_address=":0"' not in call]
    assert not fixed, f"clusters that may bind dask's default port 8787: {fixed}"


def test_both_commands_print_their_version(capsys):
    from importlib.metadata import version

    from covid_cxr.cli import main as covid_cxr

    from xai_bench.app.cli import main as xai_bench

    for main, name in ((xai_bench, "xai-bench"), (covid_cxr, "covid-cxr")):
        with pytest.raises(SystemExit) as exit_:
            main(["--version"])
        assert exit_.value.code == 0
        assert capsys.readouterr().out.strip() == f"{name} {version(name)}"


@pytest.mark.parametrize("page", ["README.md", "docs/getting-started.md"])
def test_the_cpu_only_install_pins_the_same_torch_as_the_default_command(page):
    default = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()[5]
    pins = re.findall(r"torch(?:vision)?==\S+", default)
    text = (ROOT / page).read_text(encoding="utf-8")
    cpu = [line for line in text.splitlines() if "download.pytorch.org/whl/cpu" in line]
    assert len(cpu) == 1 and cpu[0].startswith("pip install ") and re.findall(r"torch(?:vision)?==\S+", cpu[0]) == pins
    assert default.replace(" ".join(pins) + " ", "") in text  # then the rest of the default command


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _explain_tiny(images: int, progress: bool | str = "auto"):
    x = torch.rand(images, 3, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    passes = Passes(batch_size=8, progress=progress)
    return explain(tiny_cnn(), x, methods={"integrated_gradients": {"n_steps": 4}}, targets=[0], passes=passes)


def test_every_front_door_defaults_to_the_same_automatic_progress():
    from xai_bench import evaluate, profile

    for door in (explain, run, evaluate, profile):
        assert inspect.signature(door).parameters["passes"].default is None  # Passes(): progress="auto"
    assert Passes().progress == "auto"


def test_auto_progress_draws_a_bar_in_a_terminal_for_a_long_call_only(monkeypatch):
    monkeypatch.setattr(progress, "AUTO_DELAY_S", 0.0)  # a long call, without waiting for one
    monkeypatch.setattr(progress, "AUTO_MIN_IMAGES", 16)  # a small model stands in for a large one
    for images, drawn in ((2, False), (3, True)):  # IG with 4 steps: 6 images a sample (its ends too), 12 then 18
        terminal = _Terminal()
        monkeypatch.setattr(sys, "stderr", terminal)
        _explain_tiny(images)
        assert ("explain" in terminal.getvalue()) == drawn, terminal.getvalue()


def test_auto_progress_stays_quiet_where_stderr_is_not_a_terminal(capsys, monkeypatch):
    monkeypatch.setattr(progress, "AUTO_DELAY_S", 0.0)
    monkeypatch.setattr(progress, "AUTO_MIN_IMAGES", 1)
    _explain_tiny(2)
    assert capsys.readouterr().err == ""
    _explain_tiny(2, progress=True)
    assert "explain" in capsys.readouterr().err


def test_run_with_auto_progress_draws_one_bar_in_a_terminal(monkeypatch, tmp_path):
    monkeypatch.setattr(progress, "AUTO_DELAY_S", 0.0)
    monkeypatch.setattr(progress, "AUTO_MIN_IMAGES", 1)
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    run(tiny_cnn(), SyntheticImages(4), methods=["saliency"], store=tmp_path / "s.zarr", samples_per_block=2)
    assert "run" in terminal.getvalue() and "explain" not in terminal.getvalue()  # the blocks draw none


def test_a_progress_value_that_is_none_of_the_three_is_refused_before_any_work():
    with pytest.raises(InvalidParameterError, match="progress must be True, False or 'auto', got 'yes'"):
        explain(None, None, methods=["saliency"], passes=Passes(progress="yes"))
