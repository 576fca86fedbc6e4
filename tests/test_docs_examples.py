"""Every ```python block of README.md and docs/*.md runs.

A page is a tutorial: its blocks run in order in one shared namespace (later blocks use names
from earlier ones), in a fresh working directory (stores and figures land there, and a second
run never finds the first one's), after ``torch.manual_seed(0)``, with matplotlib's Agg backend
and freshly loaded plugins. A failure names the block (``docs/results.md:2``), the line of the
page it failed at, and the exception.

A block that cannot run anywhere (a cluster address, CUDA) carries ``<!-- not run: reason -->``
on the line right before its fence: it is reported as skipped, with the reason, and the page's
other blocks still run.
"""

from __future__ import annotations

import re
import sys
import traceback
import types
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import pytest
import torch

matplotlib.use("Agg")

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
NOT_RUN = re.compile(r"^\s*<!--\s*not run:\s*(?P<reason>.*?)\s*-->\s*$")
FENCE = re.compile(r"^(?P<indent> {0,3})(?P<ticks>`{3,}|~{3,})(?P<info>[^`]*)$")


@dataclass(frozen=True)
class Block:
    page: str  # relative to the repository root, e.g. "docs/results.md"
    number: int  # 1-based, counting the page's ```python blocks only
    line: int  # 1-based line of the opening fence
    code: str
    not_run: str | None  # the reason given in <!-- not run: ... -->, or None

    @property
    def id(self) -> str:
        return f"{self.page}:{self.number}"


def python_blocks(text: str, page: str) -> list[Block]:
    """The ```python blocks of a markdown page, in order; other fences (bash, text, toml) are passed over."""
    lines = text.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        ticks, indent = opening["ticks"], len(opening["indent"])
        closing = re.compile(rf"^ {{0,3}}{re.escape(ticks[0])}{{{len(ticks)},}}\s*$")
        end = i + 1
        while end < len(lines) and not closing.match(lines[end]):
            end += 1
        if opening["info"].split()[:1] == ["python"]:
            marker = NOT_RUN.match(lines[i - 1]) if i > 0 else None
            code = "\n".join(line[indent:] if line[:indent].isspace() else line for line in lines[i + 1 : end])
            blocks.append(Block(page, len(blocks) + 1, i + 1, code, marker["reason"] if marker else None))
        i = end + 1
    return blocks


def page_name(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


BLOCKS = {page_name(path): python_blocks(path.read_text(encoding="utf-8"), page_name(path)) for path in PAGES}
PAGES_WITH_CODE = [page for page, blocks in BLOCKS.items() if any(b.not_run is None for b in blocks)]
NOT_RUN_BLOCKS = [block for blocks in BLOCKS.values() for block in blocks if block.not_run is not None]


@pytest.fixture
def page_env(tmp_path, monkeypatch, dask_default_port_taken):
    """A fresh working directory, Agg, one seeded torch thread and freshly loaded plugins; port 8787 taken."""
    import matplotlib.pyplot as plt

    from xai_bench.plugins.manager import reset_plugin_manager

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    reset_plugin_manager()  # what a page registers stays on that page
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is as fast, and far faster on a busy machine
    torch.manual_seed(0)
    yield tmp_path
    torch.set_num_threads(threads)
    plt.close("all")
    reset_plugin_manager()


def run_block(block: Block, namespace: dict[str, object]) -> str | None:
    """Run one block in the page's namespace; on an error, say where and what, else None."""
    source = "\n" * block.line + block.code  # tracebacks give the page's own line numbers
    try:
        exec(compile(source, block.page, "exec"), namespace)
    except Exception as err:
        frames = traceback.extract_tb(err.__traceback__)[1:]  # from the block's own frame on
        ours = [f for f in frames if f.filename == block.page][-1:]
        shown = traceback.format_list(ours + [f for f in frames[-3:] if f not in ours])
        where = ours[0].lineno if ours else block.line
        header = f"{block.id} (the block at {block.page}:{block.line}) failed at {block.page}:{where}\n"
        return header + "".join(shown + traceback.format_exception_only(err))
    return None


@pytest.mark.parametrize("page", PAGES_WITH_CODE)
def test_page_runs(page, page_env, monkeypatch):
    # The blocks run as one script would: in a module of their own, found in sys.modules
    # (pickling, dataclasses and plugin registration look modules up there).
    # Twice in the same folder: a reader who runs a page again must not trip over what it wrote.
    for attempt in ("first", "second"):
        module = types.ModuleType("docs_" + re.sub(r"\W", "_", Path(page).stem))
        monkeypatch.setitem(sys.modules, module.__name__, module)
        for block in BLOCKS[page]:
            if block.not_run is None and (error := run_block(block, module.__dict__)):
                pytest.fail(f"{attempt} run: {error}", pytrace=False)


if NOT_RUN_BLOCKS:

    @pytest.mark.parametrize("block", NOT_RUN_BLOCKS, ids=[block.id for block in NOT_RUN_BLOCKS])
    def test_block_marked_not_run(block):
        pytest.skip(f"{block.id} (line {block.line}) is marked not run: {block.not_run}")


def test_every_python_block_is_collected_and_every_not_run_marker_names_a_reason_and_a_block():
    assert PAGES_WITH_CODE, "no runnable ```python blocks found in README.md or docs/*.md"
    for path in PAGES:
        page = page_name(path)
        lines = path.read_text(encoding="utf-8").splitlines()
        assert sum(line.strip() == "```python" for line in lines) == len(BLOCKS[page]), page
        for number, line in enumerate(lines, 1):
            if "not run" in line and "<!--" in line:
                marker = NOT_RUN.match(line)
                assert marker and marker["reason"], f"{page}:{number}: write it as <!-- not run: <reason> -->"
                assert number < len(lines) and lines[number].strip() == "```python", (
                    f"{page}:{number}: a not-run marker must be on the line right before a ```python fence"
                )
        for block in BLOCKS[page]:
            assert block.code.strip(), f"{block.id} is empty"


def test_blocks_are_found_with_their_markers_and_line_numbers():
    text = "\n".join(
        [
            "# Page",  # 1
            "```bash",  # 2
            "echo not python",
            "```",
            "```python",  # 5
            "a = 1",
            "```",
            "<!-- not run: needs CUDA -->",
            "```python",  # 9
            "b = torch.ones(1, device='cuda')",
            "```",
            "````markdown",  # 12
            "```python",
            "inside another fence",
            "```",
            "````",
            "```text",
            "c = 3",
            "```",
            "```python",  # 20
            "c = a + 1",
            "```",
        ]
    )
    blocks = python_blocks(text, "docs/x.md")
    assert [(b.id, b.line, b.code, b.not_run) for b in blocks] == [
        ("docs/x.md:1", 5, "a = 1", None),
        ("docs/x.md:2", 9, "b = torch.ones(1, device='cuda')", "needs CUDA"),
        ("docs/x.md:3", 20, "c = a + 1", None),
    ]
    namespace: dict[str, object] = {}
    assert run_block(blocks[0], namespace) is None
    error = run_block(Block("docs/x.md", 4, 30, "d = 1\nundefined_name", None), namespace)
    assert error is not None
    assert error.startswith("docs/x.md:4 (the block at docs/x.md:30) failed at docs/x.md:32")
    assert "NameError: name 'undefined_name' is not defined" in error
