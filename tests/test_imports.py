"""The import direction of every package and module of ecnn/, no import cycles, a lean ``import ecnn``.

Imports are read from the source with :mod:`ast`, at module level and inside
functions alike (a function-level import is a dependency all the same; it only
runs later). The unit of the layering is a *component*: a top-level module
(``ecnn.codec``) or a package with everything under it (``ecnn.coder``).
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

# What each component of ecnn/ may import, besides itself and the standard library,
# numpy, msgpack and constriction: other components, and the runtimes in FRAMEWORKS.
# Data flows one way (shared/STYLE.md):
#   train -> quantize -> context -> coder -> container -> codec -> torch / onnx / transformers / cli
# with errors, dtypes and config at the bottom. A component never imports one
# that comes later. Adding a package is one line here.
#
# Two readings of that line, both written into the rows below:
# - ecnn.train comes first in the flow of *data* (training makes the weights), but
#   as code it is a torch front-end that asks the shared rate estimator and the
#   codec for sizes, like ecnn.budget; so it sits with the front-ends, and no
#   stage imports it.
# - ecnn.container stays self-contained (errors, dtypes, config), as it was checked
#   before; the representations (ecnn.repr) and the codec build on it.
BASE = {"ecnn.errors", "ecnn.dtypes", "ecnn.config"}
# What the codec is built from, and everything under the adapters.
UNDER_CODEC = BASE | {"ecnn.chunkrun", "ecnn.quantize", "ecnn.context", "ecnn.coder", "ecnn.select", "ecnn.rate"}
CORE = UNDER_CODEC | {"ecnn.container", "ecnn.repr", "ecnn.codec", "ecnn.file", "ecnn.parallel"}
ALLOWED: dict[str, set[str]] = {
    # The bottom: imported by everybody.
    "ecnn.errors": set(),
    "ecnn.dtypes": {"ecnn.errors"},
    "ecnn.config": {"ecnn.errors", "ecnn.dtypes"},
    "ecnn.chunkrun": BASE,  # the worker threads
    "ecnn._core": set(),  # the compiled core: C loops behind a thin binding, no ecnn imports
    # The stages, in the order data flows. No torch up to and including ecnn.parallel.
    "ecnn.quantize": BASE | {"ecnn._core"},  # symbols to values with a compiled loop
    "ecnn.context": {"ecnn.errors", "ecnn._core"},  # fits and merges tables with compiled loops
    "ecnn.coder": {"ecnn.errors", "ecnn.context", "ecnn._core"},  # coders code; who runs them on which thread is not theirs
    "ecnn.select": BASE | {"ecnn.context", "ecnn.coder"},  # choosing the model and coder of a stream
    "ecnn.rate": BASE | {"ecnn.quantize", "ecnn.context", "ecnn.coder", "ecnn.select"},  # the rate estimator
    "ecnn.container": BASE | {"ecnn._core"},  # the CRC-32 of payloads, compiled
    "ecnn.repr": BASE
    | {"ecnn.chunkrun", "ecnn.quantize", "ecnn.context", "ecnn.coder", "ecnn.select", "ecnn.container"}
    | {"ecnn._core"},  # fields merges its tails and signs with a compiled loop
    "ecnn.codec": UNDER_CODEC | {"ecnn.container", "ecnn.repr"},
    "ecnn.parallel": UNDER_CODEC | {"ecnn.container", "ecnn.repr", "ecnn.codec"},  # schedules; reads files duck-typed
    "ecnn.file": UNDER_CODEC | {"ecnn.container", "ecnn.repr", "ecnn.codec", "ecnn.parallel"},
    # The adapters for each runtime, and the public API over them.
    "ecnn.torch": CORE | {"torch"},
    "ecnn.onnx": CORE | {"onnx", "onnxruntime"},
    "ecnn.transformers": CORE | {"ecnn.torch", "torch", "transformers"},
    "ecnn.io": CORE | {"ecnn.torch", "torch", "safetensors"},  # reading .safetensors and .pt inputs (tensors through the torch adapter)
    "ecnn.numpy": CORE,
    "ecnn.api": CORE | {"ecnn.torch", "ecnn.numpy"},
    "ecnn": CORE | {"ecnn.numpy", "ecnn.api", "ecnn.budget"},  # __init__; ecnn.compress loads ecnn.budget when used
    # Front-ends that drive the codec from torch models.
    "ecnn.train": CORE | {"ecnn.torch", "ecnn.numpy", "ecnn.api", "ecnn", "torch"},
    "ecnn.budget": CORE | {"ecnn.torch", "ecnn.numpy", "ecnn.api", "torch", "ecnn.onnx"},  # ecnn.onnx: ONNX models' budgets
    # The command line.
    "ecnn.report": CORE | {"ecnn.torch", "ecnn.numpy", "ecnn.api", "ecnn", "ecnn.train", "ecnn.budget", "torch"},
    "ecnn.cli": CORE
    | {"ecnn.torch", "ecnn.numpy", "ecnn.api", "ecnn", "ecnn.train", "ecnn.budget", "ecnn.report", "ecnn.io"}
    | {"ecnn.onnx", "ecnn.transformers"},
    "ecnn.__main__": {"ecnn.cli"},
}
# Third-party packages a component may import only where its row names them.
FRAMEWORKS = {"torch", "onnx", "onnxruntime", "transformers", "safetensors"}
# The stages that must stay free of torch (shared/STYLE.md), whatever their rows say.
TORCH_FREE = (
    "ecnn.errors", "ecnn.dtypes", "ecnn.config", "ecnn.quantize", "ecnn.context", "ecnn.coder", "ecnn.container",
    "ecnn._core",
)

# Violations in today's tree of the layering above, each to be removed from here
# when it is fixed (test_known_violations_are_still_real fails on a stale entry).
# "A -> B": module A imports B, which A's component may not; "cycle: A B ...":
# the modules of one import cycle (a strongly connected set).
KNOWN_VIOLATIONS: set[str] = set()

PKG = Path(__file__).resolve().parent.parent / "ecnn"


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports_of(path: Path, name: str, modules: set[str]) -> dict[str, bool]:
    """What one file imports, at top level or inside functions: {module: runs at import time or call time}.

    ``from ecnn.x import y`` counts as importing ``ecnn.x.y`` when that is a module,
    else ``ecnn.x``. Imports under ``if TYPE_CHECKING:`` count for the layering but
    never run, so they map to False and make no cycle.
    """
    is_pkg = path.name == "__init__.py"
    out: dict[str, bool] = {}

    def add(mod: str, runs: bool) -> None:
        out[mod] = out.get(mod, False) or runs

    def visit(node: ast.AST, runs: bool) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                visit(child, False)
            for child in node.orelse:
                visit(child, runs)
            return
        if isinstance(node, ast.Import):
            for a in node.names:
                add(a.name, runs)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package of this file
                pkg = name.split(".") if is_pkg else name.split(".")[:-1]
                pkg = pkg[: len(pkg) - (node.level - 1)]
                base = ".".join(pkg + ([node.module] if node.module else []))
            for a in node.names:
                add(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base, runs)
        for child in ast.iter_child_nodes(node):
            visit(child, runs)

    visit(ast.parse(path.read_text(), str(path)), True)
    return out


@functools.lru_cache(maxsize=None)
def _graph(root: Path = PKG) -> dict[str, dict[str, bool]]:
    """Every module under ``root`` and what it imports (see :func:`_imports_of`)."""
    paths = {_module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    return {m: _imports_of(p, m, set(paths)) for m, p in paths.items()}


def _component(module: str) -> str:
    """``ecnn.coder.streams`` -> ``ecnn.coder``; ``numpy.linalg`` -> ``numpy``."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "ecnn" else parts[0]


def _layering_violations(graph: dict[str, dict[str, bool]]) -> set[str]:
    out = set()
    for mod, imports in graph.items():
        own = _component(mod)
        for imp in imports:
            other = _component(imp)
            if other == own or (other != "ecnn" and not other.startswith("ecnn.") and other not in FRAMEWORKS):
                continue
            if other not in ALLOWED.get(own, set()):
                out.add(f"{mod} -> {imp}")
    return out


def _cycles(graph: dict[str, dict[str, bool]]) -> list[list[str]]:
    """The strongly connected sets of modules of more than one module (or a module importing itself)."""
    edges = {m: sorted(i for i, runs in imports.items() if runs and i in graph) for m, imports in graph.items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out = []

    def connect(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            scc = []
            while True:
                w = stack.pop()
                scc.append(w)
                if w == v:
                    break
            if len(scc) > 1 or v in edges[v]:
                out.append(sorted(scc))

    for v in sorted(edges):
        if v not in index:
            connect(v)
    return sorted(out)


def _violations(graph: dict[str, dict[str, bool]]) -> set[str]:
    return _layering_violations(graph) | {"cycle: " + " ".join(c) for c in _cycles(graph)}


def _components(graph: dict[str, dict[str, bool]]) -> set[str]:
    return {_component(m) for m in graph}


def test_every_component_has_a_row():
    """A new package or top-level module needs its line in ALLOWED."""
    graph = _graph()
    assert {"ecnn", "ecnn.coder", "ecnn.context", "ecnn.container", "ecnn.codec"} <= _components(graph)
    assert _components(graph) - set(ALLOWED) == set()


def test_the_table_is_a_layering():
    """ALLOWED names only known components and frameworks, has no cycle, and keeps torch out of the early stages."""
    for comp, deps in ALLOWED.items():
        assert comp not in deps, comp
        assert deps <= set(ALLOWED) | FRAMEWORKS, (comp, deps - set(ALLOWED) - FRAMEWORKS)
    seen: dict[str, int] = {}  # 1 while visiting, 2 when done

    def reach(comp: str) -> set[str]:  # everything comp may import, directly or not
        assert seen.get(comp) != 1, f"ALLOWED has a cycle through {comp}"
        seen[comp] = 1
        out = set(ALLOWED.get(comp, ()))
        for dep in ALLOWED.get(comp, ()):
            out |= reach(dep)
        seen[comp] = 2
        return out

    for comp in TORCH_FREE:
        assert not reach(comp) & FRAMEWORKS, f"{comp} may reach {reach(comp) & FRAMEWORKS}"
    assert "ecnn.train" not in reach("ecnn")  # import ecnn stays lean


@pytest.mark.parametrize("component", sorted(_components(_graph())))
def test_imports_follow_the_layering(component):
    """Every import (module level or in a function) of ``component`` is allowed by its row."""
    found = {v for v in _layering_violations(_graph()) if _component(v.split(" -> ")[0]) == component}
    assert found - KNOWN_VIOLATIONS == set(), f"imports that {component}'s row in ALLOWED does not allow"


@pytest.mark.parametrize("component", TORCH_FREE)
def test_early_stages_never_import_torch(component):
    graph = _graph()
    mods = {m: imports for m, imports in graph.items() if _component(m) == component}
    assert mods, component
    for mod, imports in mods.items():
        assert not {i for i in imports if _component(i) in FRAMEWORKS}, f"{mod} imports a runtime"


def test_no_import_cycles():
    """No module reaches itself through the imports that run (module level and in functions)."""
    cycles = {"cycle: " + " ".join(c) for c in _cycles(_graph())}
    assert cycles - KNOWN_VIOLATIONS == set()


def test_known_violations_are_still_real():
    """An entry of KNOWN_VIOLATIONS that no longer happens must leave the list."""
    assert KNOWN_VIOLATIONS - _violations(_graph()) == set(), "fixed: remove from KNOWN_VIOLATIONS"


def test_the_checks_see_function_level_imports_and_cycles(tmp_path):
    """The parser and the cycle search on a made-up package: a function-level import
    makes a cycle and breaks the layering; one under TYPE_CHECKING does neither."""
    root = tmp_path / "ecnn"
    (root / "coder").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "coder" / "__init__.py").write_text("from . import a\n")
    (root / "coder" / "a.py").write_text("from ecnn.coder.b import x\n")
    (root / "coder" / "b.py").write_text("def f():\n    from ecnn.coder import a\n    import ecnn.codec\n")
    (root / "codec.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import torch\n    from ecnn import file\n"
    )
    (root / "file.py").write_text("from ecnn import codec\n")
    graph = _graph(root)
    assert graph["ecnn.coder.b"] == {"ecnn.coder.a": True, "ecnn.codec": True}
    assert graph["ecnn.codec"] == {"typing": True, "torch": False, "ecnn.file": False}
    assert _cycles(graph) == [["ecnn.coder.a", "ecnn.coder.b"]]
    assert _layering_violations(graph) == {
        "ecnn.coder.b -> ecnn.codec", "ecnn.codec -> torch", "ecnn.codec -> ecnn.file",
    }


def test_import_ecnn_does_not_import_torch(lean_import):
    mods = set(lean_import["import ecnn"])
    assert "ecnn" in mods
    assert "torch" not in mods


def test_numpy_api_works_without_torch(lean_import):
    assert lean_import["numpy round trip"]
    assert "torch" not in lean_import["after numpy api"]
