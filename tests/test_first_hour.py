"""What a new user meets in the first hour: tests and examples that a busy, shared machine cannot trip."""

from __future__ import annotations

import re
from pathlib import Path

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
