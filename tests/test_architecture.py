"""The packages' structure: layers that point one way, no import cycle, no hidden imports.

* Every module of ``pasa_theory`` and ``pasa_npu`` imports on its own, with no other module of either
  package loaded beforehand (a fresh interpreter; package modules are purged between modules).
* No ``pasa_theory`` module imports torch.
* The module import graph, built from the AST of every module (imports inside functions included), is
  acyclic, and inside ``pasa_theory`` it follows the layers of :data:`THEORY_LAYERS`.
* Imports inside functions are only of optional or heavy dependencies (:data:`LAZY_ALLOWED`).
* No module imports a private (underscore) name from another module of the packages.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pasa_theory", "pasa_npu")

#: pasa_theory's layers, lowest first: a module may import only from its own layer or below.
#: formats → shifting (β always given) → roots → selection (β = None dispatch) → policies/schema →
#: error model → bounds → cli. ``scheme``/``symbols`` (sympy derivations) sit beside the solver and are
#: imported lazily by ``bounds.derivations`` only.
THEORY_LAYERS = (
    ("pasa_theory.schema",),
    ("pasa_theory.formats",),
    ("pasa_theory._accum",),
    ("pasa_theory.cost", "pasa_theory.floor"),
    ("pasa_theory._real",),
    ("pasa_theory.shifting",),
    ("pasa_theory.roots",),
    ("pasa_theory.selection", "pasa_theory.symbols"),
    ("pasa_theory.scheme", "pasa_theory.policies"),
    (
        "pasa_theory._errormodel",
        "pasa_theory._scoreemu",
        "pasa_theory._enclosure",
        "pasa_theory._refbound",
        "pasa_theory._refmodel",
    ),
    ("pasa_theory.bounds", "pasa_theory.rigorous"),
    ("pasa_theory.cli", "pasa_theory.__main__", "pasa_theory"),
)

#: Modules that may be imported inside a function: optional dependencies (torch in the torch-free
#: package, the Ascend runtime, plotting) and sympy with the two modules built on it (0.5 s to import;
#: the solver never needs them).
LAZY_ALLOWED = {
    "torch",
    "torch_npu",
    "matplotlib",
    "cycler",
    "sympy",
    "pasa_theory.scheme",
    "pasa_theory.symbols",
    # the optional extras: [sweep] (Parquet, process pools, Dask) and [models] (GGUF, tokenizers, safetensors)
    "pyarrow",
    "pandas",
    "joblib",
    "dask",
    "gguf",
    "tokenizers",
    "safetensors",
}

#: Files that are being restructured on their own (the figures layer becomes a subpackage); the rules
#: apply to whatever replaces them.
PENDING = {"pasa_npu/figures.py"}


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


MODULES = _modules()


def _resolve(current: str, is_pkg: bool, node: ast.ImportFrom | ast.Import) -> list[tuple[str, str | None]]:
    """(module, imported name or None) pairs of one import statement, absolute."""
    if isinstance(node, ast.Import):
        return [(a.name, None) for a in node.names]
    base = node.module or ""
    if node.level:
        pkg_parts = current.split(".") if is_pkg else current.split(".")[:-1]
        pkg_parts = pkg_parts[: len(pkg_parts) - (node.level - 1)]
        base = ".".join(pkg_parts + ([base] if base else []))
    out = []
    for a in node.names:
        sub = f"{base}.{a.name}"
        out.append((sub, None) if sub in MODULES else (base, a.name))
    return out


def _imports(name: str) -> list[tuple[str, str | None, bool, int]]:
    """(module, name, inside a function, line) for every import of module ``name``."""
    path = MODULES[name]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_pkg = path.name == "__init__.py"
    found = []

    def visit(node: ast.AST, in_func: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                for mod, imported in _resolve(name, is_pkg, child):
                    found.append((mod, imported, in_func, child.lineno))
            visit(child, in_func or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

    visit(tree, False)
    return found


def _internal(mod: str) -> str | None:
    """The package module ``mod`` refers to (itself or its closest existing parent), if any."""
    while mod:
        if mod in MODULES:
            return mod
        mod = mod.rpartition(".")[0]
    return None


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for m in MODULES:
        for mod, _, _, _ in _imports(m):
            target = _internal(mod)
            if target is not None and target != m:
                graph[m].add(target)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(u: str) -> list[str] | None:
        state[u] = 1
        stack.append(u)
        for v in sorted(graph[u]):
            if state.get(v) == 1:
                return stack[stack.index(v) :] + [v]
            if v not in state:
                found = dfs(v)
                if found:
                    return found
        stack.pop()
        state[u] = 2
        return None

    for u in sorted(graph):
        if u not in state:
            found = dfs(u)
            if found:
                return found
    return None


def _pending(name: str) -> bool:
    return str(MODULES[name].relative_to(ROOT)) in PENDING


def test_import_graph_is_acyclic():
    # pasa_theory/__init__ loads its submodules lazily by name (importlib, no import statement), so it
    # has no edges; pasa_npu/__init__ imports its submodules, and those edges count.
    graph = _graph()
    assert _cycle(graph) is None, f"import cycle: {' -> '.join(_cycle(graph) or [])}"


def test_the_cycle_check_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_pasa_theory_layers_point_one_way():
    rank = {m: i for i, layer in enumerate(THEORY_LAYERS) for m in layer}
    theory = [m for m in MODULES if m.split(".")[0] == "pasa_theory"]
    missing = [m for m in theory if m not in rank]
    assert not missing, f"modules without a layer in THEORY_LAYERS: {missing}"
    upward = []
    for m in theory:
        if m == "pasa_theory":
            continue
        for mod, _, _, line in _imports(m):
            target = _internal(mod)
            if target is None or target == m or target == "pasa_theory":
                continue
            if rank[target] > rank[m]:
                upward.append(f"{m}:{line} imports {target} (a higher layer)")
    assert not upward, "\n".join(upward)


def test_no_imports_inside_functions_except_optional_heavy_ones():
    bad = []
    for m in MODULES:
        if _pending(m):
            continue
        for mod, _, in_func, line in _imports(m):
            if in_func and mod.split(".")[0] not in LAZY_ALLOWED and mod not in LAZY_ALLOWED:
                bad.append(f"{MODULES[m].relative_to(ROOT)}:{line} imports {mod} inside a function")
    assert not bad, "\n".join(bad)


def test_no_private_names_cross_module_boundaries():
    bad = []
    for m in MODULES:
        if _pending(m):
            continue
        for mod, name, _, line in _imports(m):
            if (
                name
                and name.startswith("_")
                and not name.startswith("__")
                and _internal(mod) not in (None, m)
            ):
                bad.append(f"{MODULES[m].relative_to(ROOT)}:{line} imports {name} from {mod}")
    assert not bad, "\n".join(bad)


_PROBE = """
import importlib, sys
bad = []
for name in sys.argv[1:]:
    for loaded in [k for k in sys.modules if k.split(".")[0] in ("pasa_theory", "pasa_npu")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception as exc:
        bad.append(f"{name}: {type(exc).__name__}: {exc}")
    if name.startswith("pasa_theory") and "torch" in sys.modules:
        bad.append(f"{name}: imports torch")
print("\\n".join(bad))
"""


@pytest.mark.parametrize("package", PACKAGES)
def test_every_module_imports_alone(package):
    names = [m for m in MODULES if m.split(".")[0] == package and not m.endswith("__main__")]
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, *names], capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", out.stdout
