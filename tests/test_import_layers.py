"""The package's layers: settings.py is machinery that imports no client, and the
subpackages import each other without a circle (imports inside functions included)."""

import ast
from pathlib import Path

import bayes_et

ROOT = Path(bayes_et.__file__).parent


def _imports(path: Path) -> set[str]:
    """The bayes_et units (subpackage or top-level module) that a file imports anywhere."""
    package = path.relative_to(ROOT.parent).with_suffix("").parts[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = list(package[:len(package) - node.level + 1]) if node.level else []
            names = [".".join(base + ([node.module] if node.module else []))]
        out |= {".".join(n.split(".")[:2]) for n in names if n.startswith("bayes_et.")}
    return out


def _unit(path: Path) -> str:
    return ".".join(path.relative_to(ROOT.parent).with_suffix("").parts[:2])


def test_settings_imports_no_client():
    assert _imports(ROOT / "settings.py") == set()


def test_subpackages_import_each_other_without_a_circle():
    graph: dict[str, set[str]] = {}
    for path in ROOT.rglob("*.py"):
        unit = _unit(path)
        graph.setdefault(unit, set()).update(_imports(path) - {unit})
    assert {"bayes_et.settings", "bayes_et.cavi", "bayes_et.train"} <= set(graph)
    done, stack = set(), []

    def visit(unit):
        assert unit not in stack, f"import circle: {' -> '.join(stack + [unit])}"
        if unit in done:
            return
        stack.append(unit)
        for dep in graph.get(unit, ()):
            visit(dep)
        stack.pop()
        done.add(unit)

    for unit in graph:
        visit(unit)
