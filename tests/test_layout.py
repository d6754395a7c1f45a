"""The package layout: imports only go down (cli -> app -> worker -> models -> core -> emopres_client), and
within a layer from one sub-package only to those below it (SUBLAYERS); no import cycle between first-party
modules (TYPE_CHECKING and function-level imports included); no first-party module is imported optionally (a
renamed module must fail loudly, not make routes or commands vanish); no folder holds more than 15 modules and
no module is longer than 500 lines."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LAYERS = (
    "emopres_client",
    "core",
    "models",
    "worker",
    "app",
    "cli",
)  # lowest first: a package imports only its own layer and those below
RANK = {name: rank for rank, name in enumerate(LAYERS)}
# within a layer, its sub-packages, lowest first (a layer's top-level modules, e.g. models/registry.py, may use any)
SUBLAYERS = {
    "models": ("runtime", "prosody", "lite", "paper", "ser"),
    "worker": ("engine", "render", "queue", "research"),
    "app": ("plumbing", "webhooks", "submission", "routes", "ui"),
}
MAX_MODULES_PER_FOLDER = 15
MAX_MODULE_LINES = 500


def _modules():
    for package in LAYERS:
        for path in sorted((REPO / package).rglob("*.py")):
            yield package, path


def _imported_modules(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        return [node.module]
    return []


def upward_imports(package: str, source: str, where: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        for module in _imported_modules(node):
            top = module.split(".")[0]
            if top in RANK and RANK[top] > RANK[package]:
                found.append(f"{where}:{node.lineno}: {package} imports {module} (a layer above it)")
    return found


def sideways_imports(module: str, source: str, where: str) -> list[str]:
    """Imports from one sub-package of a layer to a sub-package ranked above it (models.paper -> models.ser)."""
    parts = module.split(".")
    order = SUBLAYERS.get(parts[0], ())
    if len(parts) < 3 or parts[1] not in order:
        return []
    found = []
    for node in ast.walk(ast.parse(source)):
        for imported in _imported_modules(node):
            target = imported.split(".")
            if (
                target[0] == parts[0]
                and len(target) > 1
                and target[1] in order
                and order.index(target[1]) > order.index(parts[1])
            ):
                found.append(f"{where}:{node.lineno}: {module} imports {imported} (a sub-package above it)")
    return found


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(sources: dict[str, str]) -> dict[str, set[str]]:
    """module -> the first-party modules it imports anywhere (``from a import b`` names a.b when b is a module)."""
    graph = {}
    for module, source in sources.items():
        edges = set()
        for node in ast.walk(ast.parse(source)):
            names = _imported_modules(node)
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names += [f"{node.module}.{alias.name}" for alias in node.names]
            edges |= {name for name in names if name in sources and name != module}
        graph[module] = edges
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index, low, on_stack, stack, cycles = {}, {}, set(), [], []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            child = next(edges, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component))
    return cycles


def optional_first_party_imports(source: str, where: str) -> list[str]:
    """`importlib.import_module(...)`, or a first-party import inside a try that catches ImportError."""
    found = []
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "import_module":
            found.append(f"{where}:{node.lineno}: importlib.import_module (import first-party modules statically)")
        if isinstance(node, ast.Try):
            caught = set()
            for handler in node.handlers:
                names = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
                caught |= {n.id for n in names if isinstance(n, ast.Name)}
            if caught & {"ImportError", "ModuleNotFoundError"}:
                for inner in (n for stmt in node.body for n in ast.walk(stmt)):
                    if any(m.split(".")[0] in RANK for m in _imported_modules(inner)):
                        found.append(f"{where}:{inner.lineno}: first-party import that may fail silently")
    return found


def test_imports_only_go_down():
    problems = []
    for package, path in _modules():
        problems += upward_imports(package, path.read_text(), str(path.relative_to(REPO)))
    assert not problems, "\n".join(problems)


def test_sub_packages_import_only_those_below_them():
    problems = []
    for _, path in _modules():
        problems += sideways_imports(module_name(path), path.read_text(), str(path.relative_to(REPO)))
    assert not problems, "\n".join(problems)


def test_no_import_cycle():
    sources = {module_name(path): path.read_text() for _, path in _modules()}
    assert not import_cycles(import_graph(sources))


def test_folders_and_modules_stay_small():
    too_many, too_long = [], []
    folders = [REPO / p for p in (*LAYERS, "bench", "tests")]
    for folder in folders:
        for sub in (folder, *(p for p in folder.rglob("*") if p.is_dir() and p.name != "__pycache__")):
            modules = sorted(sub.glob("*.py"))
            if len(modules) > MAX_MODULES_PER_FOLDER:
                too_many.append(f"{sub.relative_to(REPO)}: {len(modules)} modules")
            too_long += [
                f"{m.relative_to(REPO)}: {n} lines"
                for m in modules
                if (n := len(m.read_text().splitlines())) > MAX_MODULE_LINES
            ]
    assert not too_many and not too_long, "\n".join(too_many + too_long)


def test_no_silent_optional_first_party_imports():
    problems = []
    for _, path in _modules():
        problems += optional_first_party_imports(path.read_text(), str(path.relative_to(REPO)))
    assert not problems, "\n".join(problems)


def test_the_checks_catch_what_they_look_for():
    # the two detectors on tiny sources: they must flag an upward import and a swallowed import
    assert upward_imports("models", "def f():\n    from worker.metrics import x\n", "m.py")
    assert upward_imports("core", "import app.main\n", "c.py")
    assert not upward_imports("worker", "from models.registry import x\nfrom core.db import y\n", "w.py")
    swallowed = "try:\n    import app.report_routes\nexcept ModuleNotFoundError:\n    pass\n"
    assert optional_first_party_imports(swallowed, "a.py")
    assert optional_first_party_imports("import importlib\nimportlib.import_module('app.x')\n", "a.py")
    assert not optional_first_party_imports("try:\n    import funasr\nexcept ImportError:\n    pass\n", "a.py")
    assert sideways_imports("models.paper.x", "from models.ser.head import SerHead\n", "p.py")
    assert not sideways_imports("models.ser.x", "import models.paper.profile\nfrom models import registry\n", "s.py")
    # a cycle through a TYPE_CHECKING import is a cycle; a chain is not
    cyclic = {
        "m.a": "import m.b\n",
        "m.b": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from m import a\n",
        "m.c": "import m.a\n",
    }
    assert import_cycles(import_graph(cyclic)) == [["m.a", "m.b"]]
    assert import_cycles(import_graph({"m.a": "import m.b\n", "m.b": "", "m.c": "from m.a import x\n"})) == []


def test_every_package_is_shipped_and_says_its_job():
    import tomllib

    from setuptools import find_packages

    include = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    shipped = set(find_packages(str(REPO), include=include))
    for package in LAYERS:
        for init in (REPO / package).rglob("__init__.py"):
            name = module_name(init)
            assert name in shipped, f"{name} is not shipped by pyproject.toml"
            assert ast.get_docstring(ast.parse(init.read_text())), f"{init.relative_to(REPO)} has no docstring"
