from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quickstart_runs_offline(tmp_path):
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py"), "--out", str(tmp_path), "--size", "64"],
        capture_output=True,
        text=True,
        env={"MPLBACKEND": "Agg", "PATH": "", "HOME": str(tmp_path)},
    )
    assert out.returncode == 0, out.stderr
    assert "stored: ['deeplift', 'deeplift_delta', 'guided_backprop'," in out.stdout
    assert (tmp_path / "maps.png").exists() and (tmp_path / "maps.zarr").exists()
