from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_opens_with_the_two_commands_ci_runs():
    lines = (ROOT / "README.md").read_text().splitlines()
    # The title, the one-line pitch, then exactly the two commands.
    assert lines[0].startswith("# ") and lines[2] and lines[1] == "" and lines[3] == ""
    assert lines[4] == "```bash" and lines[7] == "```"
    install, test = lines[5], lines[6]
    assert "torch==2.14.1 torchvision==0.29.1" in install and "covid-cxr quick" in install
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert install in ci and test in ci


def test_the_getting_started_page_gives_the_same_two_commands():
    lines = (ROOT / "README.md").read_text().splitlines()
    page = (ROOT / "docs" / "getting-started.md").read_text()
    assert f"```bash\n{lines[5]}\n{lines[6]}\n```" in page
