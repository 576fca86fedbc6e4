"""Install the example Grad-CAM plugin for real and use it through the public API."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "plugins" / "xai-bench-gradcam"

SCRIPT = """
import json, torch, xai_bench
from xai_bench.testing import check_attributor, tiny_cnn
info = xai_bench.list_methods()["gradcam"]
plugins = {p.name: p.distribution for p in xai_bench.list_plugins()}
x = torch.rand(2, 3, 12, 12, dtype=torch.float64)
ds = xai_bench.explain(tiny_cnn(), x, targets=[0, 1], methods={"gradcam": {"layer": "conv3"}})
check_attributor("gradcam", {"layer": "conv3"})
try:
    xai_bench.explain(tiny_cnn(), x, targets=0, methods={"gradcam": {"layer": "conv"}})
except xai_bench.InvalidParameterError as exc:
    error = str(exc)
print(json.dumps({"provider": info["provider"], "dist": plugins.get("gradcam"),
                  "shape": list(ds["gradcam"].shape), "version": ds["gradcam"].attrs["provider_version"],
                  "nonneg": bool((ds["gradcam"].values >= 0).all()), "error": error}))
"""


@pytest.mark.slow
def test_gradcam_plugin_installs_and_works(tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(PLUGIN),
        ],
        check=True,
        capture_output=True,
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")])}
    env.pop("XAI_BENCH_LOAD_PLUGINS", None)
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    import json

    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["provider"] == "gradcam"
    assert result["dist"] == "xai-bench-gradcam"
    assert result["version"] == "0.1.0"
    assert result["shape"] == [2, 2, 3, 12, 12]
    assert result["nonneg"]
    assert "no layer 'conv'. Did you mean" in result["error"]

    # The same install is ignored when XAI_BENCH_LOAD_PLUGINS leaves it out.
    env["XAI_BENCH_LOAD_PLUGINS"] = ""
    listed = subprocess.run(
        [sys.executable, "-c", "import xai_bench; print('gradcam' in xai_bench.list_methods())"],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert listed.stdout.strip() == "False", listed.stderr


@pytest.mark.slow
def test_the_wheel_ships_the_licence_and_the_type_marker(tmp_path):
    import zipfile

    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("xai_bench-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "xai_bench/py.typed" in names
    assert any(n.endswith("licenses/LICENSE") or n.endswith("/LICENSE") for n in names), names
