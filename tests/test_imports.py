"""The import direction of the stages, and a lean ``import ecnn``."""

import pytest

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "ecnn"
# Each stage may import only numpy, msgpack, constriction, the standard library
# and these ecnn modules (its own stage and the ones before it).
ALLOWED = {
    "context": {"ecnn.context", "ecnn.errors"},
    "coder": {"ecnn.coder", "ecnn.context", "ecnn.errors", "ecnn.chunkrun"},
    "container": {"ecnn.container", "ecnn.errors", "ecnn.dtypes"},
}


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at top level or inside functions."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "ecnn":  # "from ecnn import x" imports ecnn.x
                out.update(f"ecnn.{a.name}" for a in node.names)
            else:
                out.add(node.module)
    return out


@pytest.mark.parametrize("stage", sorted(ALLOWED))
def test_early_stages_import_neither_torch_nor_later_stages(stage):
    files = sorted((PKG / stage).glob("*.py"))
    assert files
    for f in files:
        for mod in _imports(f):
            top = mod.split(".")[0]
            assert top != "torch", f"{f.name} imports torch"
            if top == "ecnn":
                assert any(mod == a or mod.startswith(a + ".") for a in ALLOWED[stage]), f"{stage}/{f.name} imports {mod}"


def test_dtypes_module_is_torch_free():
    assert all(m.split(".")[0] != "torch" for m in _imports(PKG / "dtypes.py"))


def test_import_ecnn_does_not_import_torch(lean_import):
    mods = set(lean_import["import ecnn"])
    assert "ecnn" in mods
    assert "torch" not in mods


def test_numpy_api_works_without_torch(lean_import):
    assert lean_import["numpy round trip"]
    assert "torch" not in lean_import["after numpy api"]
