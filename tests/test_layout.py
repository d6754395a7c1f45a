"""The package layout: imports only go down (cli -> app -> worker -> models -> core -> emopres_client), and no first-party module
is imported optionally (a renamed module must fail loudly, not make routes or commands vanish)."""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LAYERS = ("emopres_client", "core", "models", "worker", "app", "cli")  # lowest first: a package imports only its own layer and those below
RANK = {name: rank for rank, name in enumerate(LAYERS)}


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


def optional_first_party_imports(source: str, where: str) -> list[str]:
    """`importlib.import_module(...)`, or a first-party import inside a try that catches ImportError."""
    found = []
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "import_module"):
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


def test_every_layer_is_a_package_the_build_ships():
    import tomllib

    packages = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    assert set(LAYERS) <= set(packages)
    for package in LAYERS:
        assert (REPO / package / "__init__.py").is_file()
