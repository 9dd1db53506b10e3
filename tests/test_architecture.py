"""The dependency rules of docs/architecture.md, checked on every import in hw/, sw/ and
boards/ (module level and inside functions), parsed from the source."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("hw", "sw", "boards")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


MODULES = _modules()


def _imports(path: Path) -> list[tuple[str, int, bool]]:
    """(imported module, line, at module level) for every import statement of a file; a
    `from package import name` naming a submodule counts as importing that submodule."""
    tree = ast.parse(path.read_text(), str(path))
    top = {id(n) for n in tree.body}
    for node in tree.body:     # imports under a module-level `if` / `try` are module level
        if isinstance(node, ast.If | ast.Try):
            top |= {id(n) for n in ast.walk(node)}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno, id(node) in top) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                out.append((sub if sub in MODULES else node.module, node.lineno, id(node) in top))
    return out


GRAPH = {m: _imports(p) for m, p in MODULES.items()}


def _layer(module: str) -> str:
    if module.startswith("hw.spec"):
        return "contract"
    if module.startswith("hw"):
        return "gateware"
    if module.startswith("boards"):
        return "boards"
    for layer in ("runtime", "quant", "eval"):
        if module.startswith(f"sw.{layer}"):
            return layer
    return "cli"     # sw/host.py, sw/__init__.py


def _is(target: str, *prefixes: str) -> bool:
    return any(target == p or target.startswith(p + ".") for p in prefixes)


def _gateware(target: str) -> bool:
    return _is(target, "hw") and not _is(target, "hw.spec") and target != "hw"


#: Per layer: what its modules may not import (top level or in functions), and why.
FORBIDDEN = {
    "contract": (lambda t: _is(t, "amaranth", "torch", "sw", "boards") or _gateware(t),
                 "the contract imports only the standard library, NumPy and hw.spec"),
    "gateware": (lambda t: _is(t, "sw", "torch"), "gateware never imports the host software"),
    "boards": (lambda t: _is(t, "sw", "torch"), "board files never import the host software"),
    "runtime": (lambda t: _is(t, "torch", "amaranth", "amaranth_boards", "boards", "sw.quant",
                              "sw.eval") or _gateware(t),
                "the runtime needs neither torch nor Amaranth nor the layers above it"),
    "quant": (lambda t: _is(t, "sw.eval", "amaranth", "boards") or _gateware(t),
              "quantization tooling sits below evaluation and beside the gateware"),
    "eval": (lambda t: _is(t, "amaranth", "boards") or _gateware(t),
             "evaluation uses the runtime and the quantizer, not the gateware"),
    "cli": (lambda t: _is(t, "amaranth") or _gateware(t), "the CLI runs bundles, not gateware"),
}


def test_every_module_parses_and_is_classified() -> None:
    assert len(MODULES) > 40
    assert {_layer(m) for m in MODULES} == set(FORBIDDEN)


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layer_imports(layer: str) -> None:
    bad, why = FORBIDDEN[layer]
    found = [f"{MODULES[m].relative_to(ROOT)}:{line} imports {t}"
             for m, imps in GRAPH.items() if _layer(m) == layer
             for t, line, _ in imps if bad(t)]
    assert not found, f"{why}:\n" + "\n".join(found)


def test_cli_imports_torch_only_in_functions() -> None:
    """sw/host.py starts without torch: the float / fake-quant backends and quantizing a
    custom bundle import it when asked for."""
    found = [f"sw/host.py:{line} imports {t} at module level"
             for t, line, top in GRAPH["sw.host"] if top and _is(t, "torch", "sw.quant", "sw.eval")]
    assert not found, "\n".join(found)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module, or a self import."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph[v]:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles() -> None:
    graph = {m: {t for t, _, _ in imps if t in MODULES and t != m} for m, imps in GRAPH.items()}
    assert _cycles(graph) == []


def test_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
