"""The import graph of jaxmerge, read from the source (every import, module-level or inside a function):
no circles, and every import points down the layers DESIGN.md names.

    cli / commands / demo / modes         run a mode; the only code that names the search spaces
    config                                the run config (sections), above the spaces
    ps, dfs (their space / export)        search spaces: built from a config, handed to the engine
    evolve (engine)                       runs any space; imports no space, no config
    hot path                              pure math: no io, evolve, config, modes or CLI
"""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "jaxmerge"
HOT_PATH = ("jaxmerge.model", "jaxmerge.layers", "jaxmerge.rope", "jaxmerge.moe", "jaxmerge.window", "jaxmerge.params",
            "jaxmerge.arch", "jaxmerge.families", "jaxmerge.families.record", "jaxmerge.families.keys",
            "jaxmerge.families.rope", "jaxmerge.families.llama", "jaxmerge.families.gemma", "jaxmerge.families.phi3",
            "jaxmerge.families.moe", "jaxmerge.merge.base", "jaxmerge.merge.gta", "jaxmerge.merge.interp",
            "jaxmerge.merge.ram", "jaxmerge.merge.sce", "jaxmerge.merge.spherical", "jaxmerge.merge.fusion",
            "jaxmerge.merge.sparsify", "jaxmerge.dfs.layout", "jaxmerge.dfs.path", "jaxmerge.dfs.fold",
            "jaxmerge.ps.genome", "jaxmerge.ps.fused", "jaxmerge.fitness.score", "jaxmerge.fitness.generate",
            "jaxmerge.fitness.fitness", "jaxmerge.vlm.view", "jaxmerge.vlm.config", "jaxmerge.vlm.vision",
            "jaxmerge.vlm.model")
NEVER_FROM_HOT_PATH = ("jaxmerge.io", "jaxmerge.evolve", "jaxmerge.config", "jaxmerge.modes", "jaxmerge.cli",
                       "jaxmerge.commands")
NEVER_FROM_ENGINE = ("jaxmerge.ps", "jaxmerge.dfs", "jaxmerge.modes", "jaxmerge.config", "jaxmerge.cli",
                     "jaxmerge.commands", "jaxmerge.demo")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in ROOT.rglob("*.py")}


def imports(name: str) -> set[str]:
    """The jaxmerge modules `name` imports anywhere in its source (a `from pkg import sub` names pkg.sub)."""
    found = set()
    for node in ast.walk(ast.parse(MODULES[name].read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else node.module
                      for a in node.names}
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: imports(name) for name in MODULES}


def test_no_import_circles():
    """Tarjan-free check: a depth-first search that meets a module still on its stack has found a circle."""
    state, circles = {}, []

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(GRAPH[node]):
            if state.get(nxt) == "open":
                circles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"
    for name in sorted(GRAPH):
        if name not in state:
            visit(name, [name])
    assert not circles, circles


@pytest.mark.parametrize("name", HOT_PATH)
def test_hot_path_imports_no_host_layer(name):
    bad = sorted(m for m in GRAPH[name] if m.startswith(NEVER_FROM_HOT_PATH))
    assert not bad, f"{name} imports {bad}"


@pytest.mark.parametrize("name", sorted(m for m in MODULES if m.startswith("jaxmerge.evolve")))
def test_engine_imports_no_search_space(name):
    bad = sorted(m for m in GRAPH[name] if m.startswith(NEVER_FROM_ENGINE))
    assert not bad, f"{name} imports {bad}"


def test_the_graph_is_read():
    """The checks above see real edges (a parser that found nothing would pass them all)."""
    assert "jaxmerge.evolve.step" in GRAPH["jaxmerge.evolve.engine"]
    assert "jaxmerge.evolve.engine" in GRAPH["jaxmerge.modes"]
    assert "jaxmerge.ps.space" in GRAPH["jaxmerge.modes"] and "jaxmerge.dfs.space" in GRAPH["jaxmerge.modes"]
