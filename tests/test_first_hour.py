"""What a new user meets in the first hour: tests and examples that a busy, shared machine cannot trip."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

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
