from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_opens_with_the_two_commands_ci_runs():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert lines[0] == "```bash" and lines[3] == "```"
    install, test = lines[1], lines[2]
    assert "torch==2.14.1 torchvision==0.29.1" in install and "xai-bench demo" in install
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert install in ci and test in ci
