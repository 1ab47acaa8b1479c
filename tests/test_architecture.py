"""The import rules of docs/ARCHITECTURE.md, read from the source (every import statement, those
inside functions and under ``if TYPE_CHECKING`` included): no module imports a higher layer, and
no modules import each other in a cycle, in ``skinlesion/`` or in ``dashboard/``. A new module of
``skinlesion/`` must be given its layer in :data:`LAYERS`."""

from __future__ import annotations

import ast
import graphlib
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Layers, lowest first; a module may import its own layer and those below it. An entry is a
#: module, or ``package.*`` for a package and everything in it.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("foundation: plain data and pure functions", (
        "skinlesion.errors", "skinlesion.settings", "skinlesion.schema", "skinlesion.metrics",
        "skinlesion.thresholds", "skinlesion.calibration", "skinlesion.operating_point",
        "skinlesion.intervals", "skinlesion.cache", "skinlesion.display", "skinlesion.auth",
        "skinlesion.sessions")),
    ("data and models", ("skinlesion.data.*", "skinlesion.model.*")),
    ("fit, score and store versions", (
        "skinlesion.train", "skinlesion.train_config", "skinlesion.features",
        "skinlesion.soft_targets", "skinlesion.fit_calibration", "skinlesion.evaluate", "skinlesion.registry", "skinlesion.register",
        "skinlesion.reference", "skinlesion.recalibration", "skinlesion.tune", "skinlesion.distill",
        "skinlesion.scoring",
        "skinlesion.explain", "skinlesion.plots", "skinlesion.export")),
    ("predict", ("skinlesion.predict",)),
    ("store and serving", ("skinlesion.store.*", "skinlesion.records.*", "skinlesion.serving")),
    ("lifecycle", ("skinlesion.lifecycle.*",)),
    ("monitoring", ("skinlesion.monitoring.*",)),
    ("edges and applications", (
        "skinlesion", "skinlesion.__main__", "skinlesion.api.*", "skinlesion.cli.*",
        "skinlesion.demo", "skinlesion.demo_sample", "skinlesion.bench",
        "skinlesion.lifecycle_bench", "skinlesion.store_bench")),
)


def modules(root: Path, package_dir: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` under ``package_dir`` (named from ``root``)."""
    found = {}
    for path in package_dir.rglob("*.py"):
        name = ".".join(path.relative_to(root).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


def _imported(tree: ast.AST, module: str, is_package: bool) -> Iterator[str]:
    """Every dotted name an import statement anywhere in ``tree`` names (``from a import b`` names
    ``a`` and ``a.b``; relative imports resolved against ``module``)."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def import_graph(found: dict[str, Path], roots: tuple[str, ...]) -> dict[str, set[str]]:
    """module -> the modules of ``found`` it imports (a name resolves to its longest known
    prefix); imports of the module itself, of its own packages and of a bare root left out."""
    graph: dict[str, set[str]] = {}
    for module, path in found.items():
        targets = set()
        for name in _imported(ast.parse(path.read_text()), module, path.name == "__init__.py"):
            while name and name not in found:
                name = name.rpartition(".")[0]
            if name and name not in roots and name != module and not module.startswith(name + "."):
                targets.add(name)
        graph[module] = targets
    return graph


def layer_of(module: str) -> int | None:
    for index, (_, members) in enumerate(LAYERS):
        for member in members:
            if module == member or (member.endswith(".*") and (
                    module == member[:-2] or module.startswith(member[:-1]))):
                return index
    return None


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """``a (layer) imports b (higher layer)`` for every import against the layer order."""
    found = []
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            low, high = layer_of(module), layer_of(target)
            if low is not None and high is not None and high > low:
                found.append(f"{module} ({LAYERS[low][0]}) imports {target} ({LAYERS[high][0]})")
    return found


def cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (its modules in order, the first repeated), or None."""
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as err:
        return list(err.args[1])
    return None


def _skinlesion() -> dict[str, set[str]]:
    return import_graph(modules(ROOT, ROOT / "skinlesion"), ("skinlesion",))


def test_every_module_has_a_layer():
    unplaced = sorted(m for m in _skinlesion() if layer_of(m) is None)
    assert not unplaced, (f"give these modules their layer in tests/test_architecture.py LAYERS "
                          f"(see docs/ARCHITECTURE.md): {', '.join(unplaced)}")


def test_no_module_imports_a_higher_layer():
    assert upward_imports(_skinlesion()) == []


def test_the_library_has_no_import_cycle():
    assert cycle(_skinlesion()) is None


#: The one module that may import evidently (docs/ARCHITECTURE.md, DESIGN: monitoring's drift).
EVIDENTLY_IMPORTER = "skinlesion.monitoring.drift"


def importers_of(package: str, found: dict[str, Path]) -> list[str]:
    """The modules of ``found`` with an import statement (anywhere) naming ``package``."""
    return sorted(module for module, path in found.items()
                  if any(name == package or name.startswith(package + ".")
                         for name in _imported(ast.parse(path.read_text()), module, path.name == "__init__.py")))


def test_only_drift_imports_evidently(tmp_path: Path):
    assert importers_of("evidently", modules(ROOT, ROOT / "skinlesion")) == [EVIDENTLY_IMPORTER]
    planted = tmp_path / "skinlesion"
    planted.mkdir()
    (planted / "health.py").write_text("def late():\n    from evidently import Report\n")
    assert importers_of("evidently", modules(tmp_path, planted)) == ["skinlesion.health"]


def test_the_dashboard_has_no_import_cycle():
    dashboard = ROOT / "dashboard"
    found = {name.removeprefix("dashboard."): path
             for name, path in modules(ROOT, dashboard).items()}
    assert cycle(import_graph(found, ())) is None


@pytest.fixture
def planted(tmp_path: Path) -> Path:
    """A tiny ``skinlesion`` tree: thresholds (layer 0) imports predict (layer 3) inside a
    function, and predict imports thresholds back: one upward import, one cycle."""
    package = tmp_path / "skinlesion"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "thresholds.py").write_text("def late():\n    from skinlesion.predict import x\n")
    (package / "predict.py").write_text("from . import thresholds\nx = 1\n")
    (package / "schema.py").write_text("import numpy\n")
    return tmp_path


def test_the_checks_catch_an_upward_function_level_import_and_a_cycle(planted: Path):
    graph = import_graph(modules(planted, planted / "skinlesion"), ("skinlesion",))
    assert graph["skinlesion.thresholds"] == {"skinlesion.predict"}
    assert graph["skinlesion.predict"] == {"skinlesion.thresholds"}
    assert upward_imports(graph) == [
        "skinlesion.thresholds (foundation: plain data and pure functions) imports "
        "skinlesion.predict (predict)"]
    assert set(cycle(graph)) == {"skinlesion.thresholds", "skinlesion.predict"}
    del graph["skinlesion.thresholds"]
    assert cycle(graph) is None
