"""The evolve run config: strict YAML -> frozen dataclasses, validated on the host with one-line errors.

    models: [math-model, code-model]     # paths (relative to this file) or repo ids in the local HF cache
    base_model: base-model               # when the method takes task vectors
    merge_method: dare_ties              # any jaxmerge/mergekit method with evolvable hyper-parameters
    evolve:                              # which hyper-parameters evolve: initial value and bounds
      weight: {init: 0.5, bounds: [0.0, 1.0]}
      density: {init: 0.7, bounds: [0.1, 1.0]}
    parameters: {normalize: true}        # fixed hyper-parameters (mergekit names and defaults otherwise)
    granularity: {layers_per_group: 0, param_groups: false}   # 0: one value per model for all layers
    search: {strategy: CMA_ES, population: 16, generations: 20, sigma: 0.15, seed: 0}
    fitness:
      tasks: [{task: tasks/target.yml, split: dev, weight: 1.0, subset: 64}]
    memory: {mode: auto, batch_size: 1}  # materialize | fused | auto; candidates in flight per pop shard (0: all)
    mesh: {pop: 0, model: 1}             # device mesh (0: every device not on the model axis)
    dtype: float32

Unknown keys anywhere are refused by name: a typo must never silently fall back to a default.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any


from jaxmerge.errors import expect
from jaxmerge.yamlfile import read_yaml

MODES = ("ps", "dfs", "hybrid")
DFS_KEYS = frozenset({"repeats", "w_mode", "generations", "sigma"})  # checked in jaxmerge.dfs.search


@dataclasses.dataclass(frozen=True)
class EvolvedParam:
    init: float
    lo: float
    hi: float


@dataclasses.dataclass(frozen=True)
class TaskRef:
    task: Path
    split: str = "dev"
    weight: float = 1.0
    subset: int = 0  # 0: every item of the split


@dataclasses.dataclass(frozen=True)
class EvolveConfig:
    models: tuple[str, ...]
    merge_method: str
    evolve: dict[str, EvolvedParam]
    tasks: tuple[TaskRef, ...]
    base_model: str | None = None
    parameters: dict[str, Any] = dataclasses.field(default_factory=dict)
    layers_per_group: int = 0
    param_groups: bool = False
    strategy: str = "CMA_ES"
    population: int = 16
    generations: int = 20
    sigma: float = 0.15
    learning_rate: float = 0.05
    seed: int = 0
    batch_size: int = 1        # candidates in flight per pop shard; 0: the shard's whole share (see README)
    memory_mode: str = "auto"  # materialize | fused | auto (see jaxmerge.evolve.fused)
    mesh_pop: int = 0          # 0: every device not used by the model axis
    mesh_model: int = 1
    item_batch: int = 16
    allow_test_split: bool = False
    dtype: str = "float32"
    mode: str = "ps"
    dfs: dict[str, Any] = dataclasses.field(default_factory=dict)
    raw: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False)  # the YAML as read


def _section(doc: dict, key: str, allowed: set[str], where: str) -> dict:
    value = doc.get(key) or {}
    expect(isinstance(value, dict), f"{where}: expected '{key}' to be a mapping, found {type(value).__name__}")
    unknown = sorted(set(value) - allowed)
    expect(not unknown, f"{where}: unknown key(s) {unknown} in '{key}' (allowed: {sorted(allowed)})")
    return value


def is_real(value) -> bool:
    """A finite int or float from YAML (a bool is not a number here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _number(value, what: str, where: str, kind=float):
    ok = is_real(value)
    expect(ok and (kind is float or float(value).is_integer()),
           f"{where}: expected {what} to be {'a number' if kind is float else 'an integer'}, found {value!r}")
    return kind(value)


def _evolved(name: str, spec: Any, where: str) -> EvolvedParam:
    expect(isinstance(spec, dict) and set(spec) <= {"init", "bounds"} and "init" in spec,
           f"{where}: expected evolve.{name} as {{init: x, bounds: [lo, hi]}}, found {spec!r}")
    bounds = spec.get("bounds", [0.0, 1.0])
    expect(isinstance(bounds, list) and len(bounds) == 2, f"{where}: expected evolve.{name}.bounds as [lo, hi], "
                                                          f"found {bounds!r}")
    lo, hi = (_number(b, f"evolve.{name}.bounds", where) for b in bounds)
    init = _number(spec["init"], f"evolve.{name}.init", where)
    expect(lo < hi, f"{where}: expected evolve.{name}.bounds lo < hi, found [{lo}, {hi}]")
    expect(lo <= init <= hi, f"{where}: expected evolve.{name}.init within bounds [{lo}, {hi}], found {init}")
    return EvolvedParam(init, lo, hi)


def _task(entry: Any, root: Path, where: str) -> TaskRef:
    allowed = {"task", "split", "weight", "subset"}
    expect(isinstance(entry, dict) and "task" in entry and set(entry) <= allowed,
           f"{where}: expected each fitness task as a mapping with keys {sorted(allowed)} ('task' required), "
           f"found {entry!r}")
    subset = _number(entry.get("subset", 0), "subset", where, int)
    expect(subset >= 0, f"{where}: expected subset >= 0, found {subset}")
    return TaskRef(root / str(entry["task"]), str(entry.get("split", "dev")),
                   _number(entry.get("weight", 1.0), "task weight", where), subset)


TOP_KEYS = {"models", "base_model", "merge_method", "evolve", "parameters", "granularity", "search", "fitness",
            "memory", "dtype", "mode", "dfs", "mesh"}
MEMORY_MODES = ("materialize", "fused", "auto")


def parse_config(doc: Any, root: Path, where: str = "config") -> EvolveConfig:
    """Validate a loaded YAML document; paths are resolved against `root` (the config file's directory)."""
    expect(isinstance(doc, dict), f"{where}: expected a YAML mapping, found {type(doc).__name__}")
    unknown = sorted(set(doc) - TOP_KEYS)
    expect(not unknown, f"{where}: unknown key(s) {unknown} (allowed: {sorted(TOP_KEYS)})")
    models = doc.get("models")
    expect(isinstance(models, list) and models and all(isinstance(m, str) for m in models),
           f"{where}: expected 'models' as a non-empty list of paths, found {models!r}")
    search = _section(doc, "search", {"strategy", "population", "generations", "sigma", "seed", "learning_rate"},
                      where)
    gran = _section(doc, "granularity", {"layers_per_group", "param_groups"}, where)
    fitness = _section(doc, "fitness", {"tasks", "allow_test_split", "item_batch"}, where)
    memory = _section(doc, "memory", {"batch_size", "mode"}, where)
    mesh = _section(doc, "mesh", {"pop", "model"}, where)
    expect(memory.get("mode", "auto") in MEMORY_MODES,
           f"{where}: expected memory.mode in {MEMORY_MODES}, found {memory.get('mode')!r}")
    tasks = fitness.get("tasks")
    expect(isinstance(tasks, list) and tasks, f"{where}: expected fitness.tasks as a non-empty list, found {tasks!r}")
    evolve = _section(doc, "evolve", set(doc.get("evolve") or {}), where)
    parameters = _section(doc, "parameters", set(doc.get("parameters") or {}), where)
    mode = doc.get("mode", "ps")
    expect(mode in MODES, f"{where}: expected mode in {MODES}, found {mode!r}")
    expect(mode == "dfs" or evolve, f"{where}: expected at least one hyper-parameter under 'evolve', found none")
    cfg = EvolveConfig(
        models=tuple(_path(m, root) for m in models),
        base_model=_path(doc["base_model"], root) if doc.get("base_model") else None,
        merge_method=str(doc.get("merge_method", "task_arithmetic")),
        evolve={name: _evolved(name, spec, where) for name, spec in evolve.items()},
        parameters=dict(parameters),
        tasks=tuple(_task(t, root, where) for t in tasks),
        layers_per_group=_number(gran.get("layers_per_group", 0), "layers_per_group", where, int),
        param_groups=bool(gran.get("param_groups", False)),
        strategy=str(search.get("strategy", "CMA_ES")),
        population=_number(search.get("population", 16), "population", where, int),
        generations=_number(search.get("generations", 20), "generations", where, int),
        sigma=_number(search.get("sigma", 0.15), "sigma", where),
        learning_rate=_number(search.get("learning_rate", 0.05), "learning_rate", where),
        seed=_number(search.get("seed", 0), "seed", where, int),
        batch_size=_number(memory.get("batch_size", 1), "batch_size", where, int),
        memory_mode=str(memory.get("mode", "auto")),
        mesh_pop=_number(mesh.get("pop", 0), "mesh.pop", where, int),
        mesh_model=_number(mesh.get("model", 1), "mesh.model", where, int),
        item_batch=_number(fitness.get("item_batch", 16), "item_batch", where, int),
        allow_test_split=bool(fitness.get("allow_test_split", False)),
        dtype=str(doc.get("dtype", "float32")),
        mode=mode,
        dfs=_section(doc, "dfs", set(DFS_KEYS), where),
        raw=doc,
    )
    expect(cfg.generations >= 1, f"{where}: expected generations >= 1, found {cfg.generations}")
    expect(cfg.layers_per_group >= 0, f"{where}: expected layers_per_group >= 0, found {cfg.layers_per_group}")
    expect(0 <= cfg.batch_size, f"{where}: expected memory.batch_size >= 0, found {cfg.batch_size}")
    expect(cfg.mesh_pop >= 0 and cfg.mesh_model >= 1,
           f"{where}: expected mesh.pop >= 0 and mesh.model >= 1, found {cfg.mesh_pop} and {cfg.mesh_model}")
    expect(cfg.item_batch >= 1, f"{where}: expected fitness.item_batch >= 1, found {cfg.item_batch}")
    return cfg


def _path(value: str, root: Path) -> str:
    """Relative paths are relative to the config file; anything else (a repo id) is left as written."""
    candidate = root / value
    return str(candidate.absolute()) if not Path(value).is_absolute() and candidate.exists() else value


def load_config(path: str | Path) -> EvolveConfig:
    path = Path(path)
    return parse_config(read_yaml(path, "a run config"), path.parent.absolute(), str(path))
