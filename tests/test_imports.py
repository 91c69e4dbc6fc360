"""Every module of the package imports on its own, in a fresh interpreter (no module that only works after
another was imported); no two modules import each other, even lazily (the old gate.py <-> train/align.py
cycle); the registry and the gate's decision never import torch at import time."""
from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

import teamtr_adapters

REPO = Path(__file__).resolve().parent.parent
NO_TORCH = ("teamtr_adapters.registry", "teamtr_adapters.gate", "teamtr_adapters.runtime.open",
            "teamtr_adapters.runtime.rows", "teamtr_adapters.runtime.engine", "teamtr_adapters.cli.app")


def _modules() -> list[str]:
    """Every module except `__main__` (importing it runs the CLI)."""
    return sorted(m.name for m in pkgutil.walk_packages(teamtr_adapters.__path__, "teamtr_adapters.")
                  if not m.name.endswith("__main__"))


def _import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports (at any depth of the file, lazy imports included;
    package `__init__` re-exports are left out)."""
    root = Path(teamtr_adapters.__file__).parent
    files = {".".join(f.relative_to(root.parent).with_suffix("").parts): f for f in root.rglob("*.py")
             if f.name != "__init__.py"}
    graph: dict[str, set[str]] = {m: set() for m in files}
    for m, f in files.items():
        here = m.split(".")[:-1]
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = here[: len(here) - (node.level - 1)] if node.level else []
                name = ".".join(base + (node.module.split(".") if node.module else []))
                targets = [name] + [f"{name}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            graph[m].update(t for t in targets if t in files and t != m)
    return graph


def test_no_import_cycle_between_modules():
    graph = _import_graph()

    def reaches(a: str, b: str) -> bool:
        seen, todo = set(), [a]
        while todo:
            for y in graph[todo.pop()]:
                if y == b:
                    return True
                if y not in seen:
                    seen.add(y)
                    todo.append(y)
        return False

    cycles = sorted({tuple(sorted((a, b))) for a in graph for b in graph[a] if reaches(b, a)})
    assert not cycles, cycles
    assert not any(m.startswith("teamtr_adapters.registry") for m in graph["teamtr_adapters.gate.stats"])


def test_every_module_imports_alone_in_a_fresh_interpreter():
    mods = _modules()
    assert "teamtr_adapters.gate.stats" in mods and "teamtr_adapters.registry.candidates" in mods
    code = "import importlib, sys\nimportlib.import_module(sys.argv[1])\nprint('torch' in sys.modules)"
    failed, torchy = [], []
    for m, out, err, rc in _run_all(code, mods, parallel=4):
        if rc != 0:
            failed.append(f"{m}: {err.strip().splitlines()[-1] if err.strip() else rc}")
        elif out.strip() == "True" and m.startswith(NO_TORCH):
            torchy.append(m)
    assert not failed, failed
    assert not torchy, f"these modules import torch at import time: {torchy}"


def _run_all(code: str, mods: list[str], parallel: int):
    """(module, stdout, stderr, exit code) of `python -c code module` for every module, `parallel` at a time."""
    for i in range(0, len(mods), parallel):
        chunk = {m: subprocess.Popen([sys.executable, "-c", code, m], cwd=REPO, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True) for m in mods[i:i + parallel]}
        for m, p in chunk.items():
            out, err = p.communicate(timeout=300)
            yield m, out, err, p.returncode
