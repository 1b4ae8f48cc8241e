"""Lines of code per tier and imports placed inside functions, per package.

    python -m scripts.structure_stats [--json]

Tiers: serving is ``runtime/``, ``app/`` and every module of ``models/`` that imports no
torch network code; training is ``training/``, ``export/``, ``methods/``, the package
``models`` and its modules that do (torch, timm, torchvision or :mod:`models.registry`, at any
level).
Lines of code are the non-blank lines that are not comments only (docstrings count).
A function-level import is an ``import``/``from ... import`` statement inside a function or
method body (found with :mod:`ast`), the kind that defers an import to call time.
"""
from __future__ import annotations

import argparse
import ast
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERVING = ("runtime", "app")
TRAINING = ("training", "export", "methods")
PACKAGES = ("runtime", "app", "models", "training", "export", "methods", "scripts", "tests")
TORCH_ROOTS = {"torch", "timm", "torchvision"}


def code_lines(text: str) -> int:
    """Non-blank lines that are not only a comment."""
    return sum(1 for line in text.splitlines()
               if line.strip() and not line.lstrip().startswith("#"))


def imported_names(tree: ast.AST) -> set[str]:
    """Every module an ``import`` or ``from ... import`` in ``tree`` names (absolute only)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def is_torch_module(tree: ast.AST) -> bool:
    """Whether a module of ``models/`` belongs to the torch networks."""
    return any(n.split(".")[0] in TORCH_ROOTS or n == "models.registry"
               for n in imported_names(tree))


def function_level_imports(tree: ast.AST) -> int:
    """Import statements whose nearest enclosing scope is a function."""
    count = 0

    def visit(node: ast.AST, in_function: bool) -> None:
        nonlocal count
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)) and in_function:
                count += 1
            inside = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                       ast.Lambda))
            visit(child, inside)

    visit(tree, False)
    return count


def tier_of(path: Path, tree: ast.AST) -> str | None:
    """'serving', 'training' or None (scripts, tests) for a project file."""
    top = path.relative_to(ROOT).parts[0]
    if top in SERVING:
        return "serving"
    if top in TRAINING:
        return "training"
    if top == "models":  # the package itself belongs to its networks
        serving = path.name != "__init__.py" and not is_torch_module(tree)
        return "serving" if serving else "training"
    return None


def stats() -> dict:
    """The numbers: code lines and files per tier, function-level imports per package."""
    tiers = {t: {"files": 0, "code_lines": 0, "modules": []} for t in ("serving", "training")}
    imports = {p: 0 for p in PACKAGES}
    lines = {p: 0 for p in PACKAGES}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "__pycache__" in path.parts or ".venv" in path.parts:
                continue
            text = path.read_text(encoding="utf-8")
            tree = ast.parse(text, filename=str(path))
            imports[package] += function_level_imports(tree)
            lines[package] += code_lines(text)
            tier = tier_of(path, tree)
            if tier:
                tiers[tier]["files"] += 1
                tiers[tier]["code_lines"] += code_lines(text)
                if package == "models":
                    tiers[tier]["modules"].append(path.stem)
    return {"tiers": tiers, "code_lines": lines, "function_level_imports": imports,
            "function_level_imports_total": sum(imports.values())}


def main() -> None:
    """Print the numbers (a table, or JSON with ``--json``)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print JSON")
    args = ap.parse_args()
    s = stats()
    if args.json:
        print(json.dumps(s, indent=2))
        return
    print("tier      files  code lines  modules of models/")
    for name, t in s["tiers"].items():
        print(f"{name:<9} {t['files']:>5}  {t['code_lines']:>10}  {', '.join(t['modules']) or '-'}")
    print("\npackage   code lines  function-level imports")
    for package, n in s["function_level_imports"].items():
        print(f"  {package:<9} {s['code_lines'][package]:>8}  {n:>4}")
    print(f"  {'total':<9} {s['function_level_imports_total']:>4}")


if __name__ == "__main__":
    main()
