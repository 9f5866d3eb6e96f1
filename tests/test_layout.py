"""The layout holds: layers import downwards only, the command line has one home, no import cycle,
and every module stays small enough to read in one sitting (README, "Layout")."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("shared", "workers", "api", "cli")
MAX_LINES = 400


def modules() -> Iterator[tuple[str, Path]]:
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            yield ".".join(parts[:-1] if parts[-1] == "__init__" else parts), path


def imports(path: Path) -> set[str]:
    """Every module this file imports, at the top or inside a function (a lazy import is still one)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


GRAPH = {name: imports(path) for name, path in modules()}
KNOWN = set(GRAPH)


def top(name: str) -> str:
    return name.split(".")[0]


@pytest.mark.parametrize(("package", "forbidden"), [
    ("shared", {"workers", "api", "cli", "typer", "click"}),
    ("workers", {"api", "cli", "typer", "click"}),
    ("api", {"workers", "cli", "typer", "click"}),
])
def test_layers_import_downwards_only(package: str, forbidden: set[str]) -> None:
    wrong = sorted(f"{name} imports {target}" for name, targets in GRAPH.items() if top(name) == package
                   for target in targets if top(target) in forbidden)
    assert wrong == []


def test_the_model_library_is_plain_data_in_and_out() -> None:
    """shared/ml takes arrays and plain data: no database, broker or web framework; and only it imports
    torch, so producers, the API and the command line start without loading a model."""
    wrong = sorted(f"{name} imports {target}" for name, targets in GRAPH.items()
                   if name.startswith("shared.ml") for target in targets
                   if target.startswith("shared.db") or top(target) in {"sqlalchemy", "celery", "fastapi"})
    torch = sorted(name for name, targets in GRAPH.items() if not name.startswith("shared.ml")
                   and {top(t) for t in targets} & {"torch", "torchvision", "timm", "transformers", "peft"})
    assert wrong == [] and torch == []


def test_rich_in_the_library_only_for_progress_bars() -> None:
    wrong = sorted(f"{name} imports {target}" for name, targets in GRAPH.items() if top(name) == "shared"
                   for target in targets if top(target) == "rich" and not target.startswith("rich.progress"))
    assert wrong == []


def test_every_tagger_command_lives_under_cli() -> None:
    """typer is the command-line toolkit: whoever imports it defines commands, and only cli/ may."""
    outside = sorted(name for name, targets in GRAPH.items() if top(name) != "cli" and "typer" in
                     {top(t) for t in targets})
    assert outside == []
    assert 'tagger = "cli.main:main"' in (ROOT / "pyproject.toml").read_text()


def _edges(name: str) -> set[str]:
    """Project modules ``name`` imports (``from a.b import c``: a.b, and a.b.c if that is a module)."""
    return {t for t in GRAPH[name] if t in KNOWN and t != name}


def test_no_import_cycle() -> None:
    """A cycle means two modules that cannot be understood (or moved) apart; lazy imports count too."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []
    cycles: list[str] = []

    def visit(name: str) -> None:
        state[name] = 1
        path.append(name)
        for target in sorted(_edges(name)):
            if state.get(target) == 1:
                cycles.append(" -> ".join([*path[path.index(target):], target]))
            elif target not in state:
                visit(target)
        path.pop()
        state[name] = 2

    for name in sorted(GRAPH):
        if name not in state:
            visit(name)
    assert cycles == []


def test_the_cycle_check_can_fail() -> None:
    """The checks above read the real files: a planted cycle is found by the same graph walk."""
    GRAPH["shared.errors"].add("shared.config")
    GRAPH["shared.config"].add("shared.errors")
    try:
        with pytest.raises(AssertionError):
            test_no_import_cycle()
    finally:
        GRAPH["shared.errors"].discard("shared.config")
        GRAPH["shared.config"].discard("shared.errors")


def test_modules_stay_under_400_lines() -> None:
    long = sorted(f"{path.relative_to(ROOT)}: {n}" for _, path in modules()
                  if (n := len(path.read_text(encoding="utf-8").splitlines())) >= MAX_LINES)
    assert long == []


def test_tests_mirror_the_source_tree() -> None:
    """Each source package has its tests folder: tests/<package>/ (tests/shared/<sub>/ for sub-packages)."""
    missing = [p for p in PACKAGES if not (ROOT / "tests" / p).is_dir()]
    missing += [f"shared/{d.name}" for d in (ROOT / "shared").iterdir()
                if (d / "__init__.py").is_file() and not (ROOT / "tests" / "shared" / d.name).is_dir()]
    assert missing == []
