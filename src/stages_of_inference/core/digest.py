"""Code digests: a rule's outputs depend on the code it runs, not only on its script.

Snakemake reruns a ``script:`` rule when the script changes, but our scripts are thin:
the code that computes lives in this package. Each rule therefore carries a ``code``
param, ``code_digest(script)``: a hash of the package modules the script can reach. The
script's imports of package functions are followed into their modules; inside a module,
every import statement (at module level and inside any function) is followed, except in
the script's *rule functions'* own module (``<study>/rules.py``), where only the module
level and the imported functions' own bodies count. So editing ``self_repair/compute.py``
changes the digest of the self-repair model rule (and of nothing outside the study that
does not import it); editing ``self_repair/figures.py`` changes only the figure rules';
editing ``core/engine.py`` changes every rule that runs a model.

The digest is of file contents (never paths or times): a copied or moved project has the
same digests and reruns nothing.
"""
from __future__ import annotations

import ast
import functools
import hashlib
from pathlib import Path

PACKAGE = "stages_of_inference"
ROOT = Path(__file__).resolve().parents[1]  # src/stages_of_inference


def _module_path(module: str) -> Path | None:
    if module != PACKAGE and not module.startswith(PACKAGE + "."):
        return None
    parts = module.split(".")[1:]
    base = ROOT.joinpath(*parts)
    if base.with_suffix(".py").exists():
        return base.with_suffix(".py")
    if (base / "__init__.py").exists():
        return base / "__init__.py"
    return None


def _resolve(module: str, node: ast.ImportFrom | ast.Import) -> list[str]:
    """Absolute module names an import statement in ``module`` names (ours only)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.startswith(PACKAGE)]
    package = module.split(".")
    if not _module_path(module).name == "__init__.py":
        package = package[:-1]
    if node.level:
        base = package[: len(package) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    if not target.startswith(PACKAGE):
        return []
    out = [target]
    for alias in node.names:  # `from . import compute` imports a module
        if _module_path(f"{target}.{alias.name}") is not None:
            out.append(f"{target}.{alias.name}")
    return out


@functools.lru_cache(maxsize=None)
def _parsed(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _imports(module: str, nodes) -> set[str]:
    found = set()
    for node in nodes:
        for sub in ast.walk(node):
            if isinstance(sub, (ast.Import, ast.ImportFrom)):
                found.update(_resolve(module, sub))
    return found


def _closure(roots: set[str]) -> set[str]:
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        module = todo.pop()
        if module in seen or _module_path(module) is None:
            continue
        seen.add(module)
        todo.extend(_imports(module, [_parsed(_module_path(module))]) - seen)
        # a package's __init__ runs before any of its modules
        parent = module.rsplit(".", 1)[0]
        if parent != module and parent.startswith(PACKAGE):
            todo.append(parent)
    return seen


def modules_of_script(script: str | Path) -> list[str]:
    """The package modules a workflow script can run (see the module docstring)."""
    tree = ast.parse(Path(script).read_text(), filename=str(script))
    roots: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.ImportFrom) or not (node.module or "").startswith(PACKAGE):
            continue
        path = _module_path(node.module)
        if path is None:
            continue
        module_tree = _parsed(path)
        functions = {n.name: n for n in module_tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
        imported = [functions[a.name] for a in node.names if a.name in functions]
        if not imported:  # a module or constants: all of it
            roots.add(node.module)
            continue
        roots.add(node.module)  # its own text is hashed; its imports: module level + these functions
        top = [n for n in module_tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
        roots |= _imports(node.module, top + imported) - {node.module}
        # helpers of the same module called by the imported functions
        names = {n.id for f in imported for n in ast.walk(f) if isinstance(n, ast.Name)}
        helpers = [functions[name] for name in names if name in functions and functions[name] not in imported]
        roots |= _imports(node.module, helpers) - {node.module}
    # follow everything but the rule modules themselves (their text is hashed above)
    closure = set(roots)
    for module in roots:
        path = _module_path(module)
        if path is None or path.name == "rules.py":
            continue
        closure |= _closure({module})
    return sorted(closure)


def code_digest(script: str | Path) -> str:
    """A short hash of the source of every package module ``script`` can run."""
    digest = hashlib.sha256()
    for module in modules_of_script(script):
        digest.update(module.encode())
        digest.update(_module_path(module).read_bytes())
    return digest.hexdigest()[:16]
