"""The package's layout rules: one public boundary per subpackage, no import circles, small modules and functions.

As scanpy's ``tests/test_package_structure.py``, these read the source (``ast``), not the imported
modules, so that lazy imports inside functions count as much as top-level ones.

- A subpackage (``stdiff.pp``, ``stdiff.models``, …) is used by the others through its public
  names only: ``from ..pp import Section``, never ``from ..pp._tiling import Section``. Top-level
  private modules (``stdiff._utils``, ``stdiff._constants``, …) are the package's shared core and
  may be imported anywhere.
- No two modules import each other, directly or through others, at any time: lazily inside a
  function, or under ``if TYPE_CHECKING:`` for annotations, counts as an import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "stdiff"


def _modules() -> dict[str, Path]:
    mods = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


MODULES = _modules()


def _subpackage(module: str) -> str:
    """``stdiff.pp._section`` → ``stdiff.pp``; top-level modules (``stdiff._utils``) → ``stdiff``."""
    parts = module.split(".")
    if len(parts) >= 2 and f"stdiff.{parts[1]}" in MODULES and MODULES[f"stdiff.{parts[1]}"].name == "__init__.py":
        return f"stdiff.{parts[1]}"
    return "stdiff"


def _imports(module: str) -> list[tuple[str, list[str]]]:
    """``(imported module, names)`` of every ``stdiff`` import in ``module`` (relative ones resolved)."""
    path = MODULES[module]
    tree = ast.parse(path.read_text())
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == "stdiff" or target.startswith("stdiff."):
                out.append((target, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            out.extend((a.name, []) for a in node.names if a.name.startswith("stdiff"))
    return out


def _edges(module: str) -> set[str]:
    """Modules that ``module`` imports (a name that is a submodule counts as that submodule only)."""
    edges = set()
    for target, names in _imports(module):
        subs = [f"{target}.{n}" for n in names if f"{target}.{n}" in MODULES]
        if subs:
            edges.update(subs)
        if len(subs) < len(names) or not names:
            if target in MODULES:
                edges.add(target)
    edges.discard(module)
    return edges


def cross_package_private_imports() -> list[str]:
    """``"importer -> imported"`` for every import of another subpackage's private module."""
    bad = []
    for module in MODULES:
        for target in _edges(module):
            if _subpackage(target) == _subpackage(module) or _subpackage(target) == "stdiff":
                continue
            inner = target.split(".")[2:]
            if any(part.startswith("_") for part in inner):
                bad.append(f"{module} -> {target}")
    return sorted(bad)


def import_cycles() -> list[list[str]]:
    """Strongly connected groups of modules (Tarjan), each a cycle of imports."""
    graph = {m: _edges(m) for m in MODULES}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for m in MODULES:
        if m not in index:
            visit(m)
    return groups


def test_the_checks_see_what_they_look_for():
    """The parser resolves relative imports and finds the package's modules (else the checks pass vacuously)."""
    assert "stdiff.pp._section" in MODULES and "stdiff.models.diffst" in MODULES
    assert "stdiff.pp" in _edges("stdiff.tl._superresolve")
    assert _subpackage("stdiff.pp._section") == "stdiff.pp" and _subpackage("stdiff._utils") == "stdiff"


def test_subpackages_use_each_other_through_public_names_only():
    bad = cross_package_private_imports()
    assert not bad, "import the public name instead (add it to the subpackage's __init__):\n" + "\n".join(bad)


def test_no_import_circles():
    cycles = import_cycles()
    assert not cycles, "modules that import each other (directly or through others):\n" + "\n".join(map(str, cycles))


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_stay_small(module):
    lines = len(MODULES[module].read_text().splitlines())
    assert lines <= 400, f"{module} has {lines} lines; split it by concept"


def test_model_layers_import_downwards_only():
    """Networks and losses (``models.nn``) know nothing of data, training or models; the loop knows no model."""
    below = {
        "stdiff.models.nn": ("stdiff.models.nn", "stdiff.models.config"),
        "stdiff.models.training": ("stdiff.models.nn",),
    }
    bad = []
    for module in MODULES:
        for layer, allowed in below.items():
            if module != layer and not module.startswith(layer + "."):
                continue
            for target in _edges(module):
                if target.startswith("stdiff.models") and not target.startswith(allowed):
                    bad.append(f"{module} -> {target}")
    assert any(m.startswith("stdiff.models.nn.") for m in MODULES) and "stdiff.models.training" in MODULES
    assert not bad, "a lower layer imports a higher one:\n" + "\n".join(bad)


#: The synthetic tissue simulator draws its scene in long, linear recipes; it is exempt.
LONG_FUNCTIONS_ALLOWED = ("stdiff.datasets._synthetic",)


def _code_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines of a function, its docstring excluded."""
    n = node.end_lineno - node.lineno + 1
    first = node.body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        n -= first.end_lineno - first.lineno + 1
    return n


def test_functions_stay_short():
    long = [
        f"{module}.{node.name}: {_code_lines(node)} lines"
        for module, path in MODULES.items()
        if not module.startswith(LONG_FUNCTIONS_ALLOWED)
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and _code_lines(node) > 80
    ]
    assert not long, "split these into named steps (at most 80 lines of code each):\n" + "\n".join(long)
