"""Imports run one way: operators <- solvers <- models <- methods <- workflows <- evaluation / training <- cli.

Every ``import`` statement of the package (module level or inside a function, read with
:mod:`ast`, so lazy imports count too) is checked against the layers below; a module may
import its own package, any lower layer, and nothing above or beside it. The HU window,
the config loader, the metrics and the shared helpers are the base every layer may use.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: unit -> layer; a unit is a subpackage of ctresample or one base module
LAYERS = {
    "operators": 0,
    "ctresample._version": 1,
    "ctresample.hu_window": 1,
    "ctresample.config": 1,
    "ctresample.configs": 1,
    "ctresample.metrics": 1,
    "ctresample.utils": 1,
    "ctresample.io": 2,
    "ctresample.solvers": 2,
    "ctresample.models": 3,
    "ctresample.methods": 4,
    "ctresample.workflows": 5,
    "ctresample.evaluation": 6,
    "ctresample.training": 6,
    "ctresample.cli": 7,
}
BASE = 1
#: operators may use these and the standard library, nothing else
OPERATORS_ALLOWED = {"torch", "numpy"}


def unit_of(module: str) -> str | None:
    """The unit a dotted module name belongs to (``None`` for the package root and for other packages)."""
    parts = module.split(".")
    if parts[0] == "operators":
        return "operators"
    if parts[0] != "ctresample" or len(parts) == 1:
        return None
    name = ".".join(parts[:2])
    if name in ("ctresample.__init__", "ctresample.__main__"):
        return None
    return name


def module_name(path: Path, root: Path = ROOT) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    if parts[0] == "configs":  # shipped as ctresample.configs
        parts = ["ctresample", "configs", *parts[1:]]
    return ".".join(parts)


def imported_modules(source: str, module: str, is_package: bool) -> list[tuple[int, str]]:
    """``(line, absolute module)`` of every import in ``source`` of ``module``."""
    package = module if is_package else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            if node.module is None:  # from .. import x: x may be a module
                out += [(node.lineno, f"{target}.{alias.name}") for alias in node.names]
            else:
                out.append((node.lineno, target))
    return out


def violations(path: Path, source: str | None = None, root: Path = ROOT) -> list[str]:
    """Imports of ``path`` that go against the layers (empty when it follows them)."""
    module = module_name(path, root)
    source = path.read_text() if source is None else source
    me = unit_of(module)
    found = []
    for line, target in imported_modules(source, module, path.name == "__init__.py"):
        top = target.split(".")[0]
        if me == "operators":
            if top not in OPERATORS_ALLOWED and top not in sys.stdlib_module_names and top != "operators":
                found.append(f"{path.relative_to(root)}:{line}: operators imports {target} (torch and numpy only)")
            continue
        if me is None or top not in ("ctresample", "operators"):
            continue
        if target == "ctresample":
            found.append(f"{path.relative_to(root)}:{line}: imports the package root (import the module itself)")
            continue
        other = unit_of(target)
        if other is None or other == me or other not in LAYERS or me not in LAYERS:
            continue
        mine, theirs = LAYERS[me], LAYERS[other]
        if theirs < mine or theirs == mine == BASE:
            continue
        found.append(f"{path.relative_to(root)}:{line}: {me} (layer {mine}) imports {target} (layer {theirs})")
    return found


def package_files() -> list[Path]:
    files = sorted((ROOT / "ctresample").rglob("*.py")) + sorted((ROOT / "operators").rglob("*.py"))
    return files + sorted((ROOT / "configs").glob("*.py"))


def test_every_unit_has_a_layer():
    units = {unit_of(module_name(p)) for p in package_files()} - {None}
    assert units <= set(LAYERS), f"give these a layer: {sorted(units - set(LAYERS))}"


def test_imports_follow_the_layers():
    found = [v for p in package_files() for v in violations(p)]
    assert not found, "imports against the layer order:\n" + "\n".join(found)


@pytest.mark.parametrize("where, code, bad", [
    ("ctresample/models/x.py", "from ..methods import registry\n", True),  # models never imports methods
    ("ctresample/solvers/x.py", "def f():\n    from ctresample.models import prior\n", True),  # lazy imports count
    ("ctresample/workflows/x.py", "from ..evaluation import runner\n", True),
    ("ctresample/training/x.py", "from ..evaluation import tables\n", True),  # siblings do not import each other
    ("ctresample/methods/x.py", "from .. import workflows\n", True),
    ("ctresample/io/x.py", "import ctresample\n", True),
    ("operators/x.py", "import scipy\n", True),
    ("ctresample/methods/x.py", "from ..models.prior import load_prior\nfrom ..solvers import sirt\n", False),
    ("ctresample/cli/x.py", "from ..workflows import run_reconstruct\nfrom ..evaluation import evaluate\n", False),
    ("ctresample/metrics.py", "from .hu_window import HU_MIN\n", False),
    ("operators/x.py", "import math\nimport torch\nfrom .units import MU_WATER\n", False),
])
def test_the_checker_catches_imports_against_the_order(where, code, bad):
    assert bool(violations(ROOT / where, code)) is bad
