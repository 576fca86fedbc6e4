"""The package's layers, checked from its source: imports only go down, and nothing imports in a circle.

Every import counts, including those inside functions (lazy imports make circles too).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "xai_bench"

# Top to bottom; a component may import its own layer and any layer below it.
LAYERS: list[set[str]] = [
    {"__init__"},  # the public API: nothing inside imports it
    {"app", "testing", "viz"},
    {"scale"},
    {"api"},
    {"engine", "plugins"},
    {"attributors", "profilers", "surgery", "metrics"},
    {"storage"},
    {"core"},
]
RANK = {component: len(LAYERS) - i for i, layer in enumerate(LAYERS) for component in layer}


def module_name(path: Path) -> str:
    parts = ["xai_bench", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(path: Path, name: str, known: set[str]) -> set[str]:
    """Absolute names of the package modules ``path`` imports, wherever the import statement is."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                root = ".".join(base + ([node.module] if node.module else []))
            else:
                root = node.module or ""
            # "from x import y" imports the module x.y when y is one, else the module x.
            targets = [f"{root}.{a.name}" if f"{root}.{a.name}" in known else root for a in node.names]
        else:
            continue
        found.update(t for t in targets if t == "xai_bench" or t.startswith("xai_bench."))
    return {t for t in found if t != name}


def component(module: str) -> str:
    parts = module.split(".")
    return "__init__" if len(parts) == 1 else parts[1]


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {name: imports(path, name, known) for name, path in mods.items()}


def test_every_component_has_a_layer():
    components = {component(m) for m in modules()}
    assert components <= set(RANK), f"components without a layer: {sorted(components - set(RANK))}"


def test_imports_only_go_down():
    upward = [
        f"{importer} imports {imported}"
        for importer, targets in graph().items()
        for imported in targets
        if RANK[component(imported)] > RANK[component(importer)]
    ]
    assert not upward, "upward imports:\n" + "\n".join(sorted(upward))


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_module_imports_in_a_circle():
    cycle = find_cycle(graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_no_component_imports_in_a_circle():
    edges: dict[str, set[str]] = {}
    for importer, targets in graph().items():
        edges.setdefault(component(importer), set()).update(
            component(t) for t in targets if component(t) != component(importer)
        )
    cycle = find_cycle(edges)
    assert cycle is None, "circle between components: " + " -> ".join(cycle)


def test_every_subpackage_says_what_it_owns_and_may_import():
    for init in PACKAGE.glob("*/__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc, f"{init.parent.name}/__init__.py has no docstring"
        assert "import" in doc, f"{init.parent.name}: the docstring does not say what the layer may import"


@pytest.mark.parametrize(
    "name", ["explain", "profile", "run", "open_maps", "list_methods", "list_metrics", "list_profilers", "select_map"]
)
def test_no_module_is_named_like_the_function_it_exports(name):
    import xai_bench

    assert not any(m.rsplit(".", 1)[-1] == name for m in modules()), f"a module is named {name!r}"
    assert callable(getattr(xai_bench, name))


def test_the_checker_sees_function_level_imports_and_circles():
    source = "def f():\n    from .b import g\n"
    tree_imports = imports_from_source(source, "xai_bench.scale.a", {"xai_bench.scale.b"})
    assert tree_imports == {"xai_bench.scale.b"}
    assert find_cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]


def imports_from_source(source: str, name: str, known: set[str]) -> set[str]:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "a.py"
        path.write_text(source)
        return imports(path, name, known)


EXAMPLES = PACKAGE.parents[1] / "examples"
#: What an example may import of the library: its public API, nothing behind it.
PUBLIC = {"xai_bench", "xai_bench.viz", "xai_bench.testing"}


def library_imports(path: Path) -> set[str]:
    """The ``xai_bench`` modules ``path`` imports (absolute imports only: an example is not in the package)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.add(node.module)
    return {name for name in found if name == "xai_bench" or name.startswith("xai_bench.")}


def test_examples_import_only_the_public_api():
    private = [
        f"{path.relative_to(EXAMPLES.parent)} imports {name}"
        for path in sorted(EXAMPLES.rglob("*.py"))
        for name in sorted(library_imports(path) - PUBLIC)
    ]
    assert not private, "examples reach behind the public API:\n" + "\n".join(private)


def test_the_examples_checker_sees_private_imports(tmp_path):
    path = tmp_path / "a.py"
    path.write_text(
        "import xai_bench\nfrom xai_bench.viz import plot_maps\ndef f():\n    from xai_bench.app import viz\n"
    )
    assert library_imports(path) - PUBLIC == {"xai_bench.app"}
