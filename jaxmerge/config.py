"""The evolve run config: strict YAML -> frozen sections, every value validated at parse time (one-line errors).

    mode: ps                             # ps | dfs | hybrid
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
                                         # attention: explicit (default) | xla | cudnn (jaxmerge.kernels)
    mesh: {pop: 0, model: 1}             # device mesh (0: every device not on the model axis)
    dfs: {repeats: 3, w_mode: matrix}    # mode dfs / hybrid; a hybrid's DFS stage may set generations / sigma
    dtype: bfloat16                      # candidates' dtype (scored and written); default: the sources' dtype

Unknown keys anywhere are refused by name: a typo must never silently fall back to a default. Every number
has a range (a population of 10**15 or a seed of 2**70 is refused here, before anything is allocated). The
config is never rewritten afterwards: what a run resolves (its mesh, a stage's search settings, the dtype)
lives in `jaxmerge.evolve.space.RunSettings`.
"""
from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Any

from jaxmerge.arch import EXPLICIT, IMPLEMENTATIONS
from jaxmerge.dfs.layout import W_MODES
from jaxmerge.errors import expect, expect_keys
from jaxmerge.evolve.space import Search
from jaxmerge.fitness.suite import TaskSpec
from jaxmerge.yamlfile import read_yaml

MODES = ("ps", "dfs", "hybrid")
MEMORY_MODES = ("materialize", "fused", "auto")
DTYPE_NAMES = ("float32", "bfloat16", "float16")
BOUND_LIMIT = 1e6  # evolved bounds beyond this are refused: the unit-cube map needs a finite hi - lo
TOP_KEYS = {"models", "base_model", "merge_method", "evolve", "parameters", "granularity", "search", "fitness",
            "memory", "dtype", "mode", "dfs", "mesh", "tokenizer_source", "tokenizer"}


@dataclasses.dataclass(frozen=True)
class EvolvedParam:
    init: float
    lo: float
    hi: float


@dataclasses.dataclass(frozen=True)
class Fitness:
    tasks: tuple[TaskSpec, ...]
    allow_test_split: bool = False
    item_batch: int = 16


@dataclasses.dataclass(frozen=True)
class Memory:
    mode: str = "auto"     # materialize | fused | auto (see jaxmerge.ps.fused)
    batch_size: int = 1    # candidates in flight per pop shard; 0: the shard's whole share (see README)
    attention: str = EXPLICIT  # explicit | xla | cudnn: the fitness's attention kernel (jaxmerge.kernels)

    def with_attention(self, spec):
        """`spec` attending with this run's kernel: what every search space scores with (ArchSpec.attention_impl
        is not read from config.json, so the run's setting is put on each source's spec here, in one place)."""
        return spec.replace(attention_impl=self.attention)


@dataclasses.dataclass(frozen=True)
class MeshShape:
    pop: int = 0    # 0: every device not used by the model axis
    model: int = 1


@dataclasses.dataclass(frozen=True)
class Granularity:
    layers_per_group: int = 0  # 0: one layer group spanning all layers
    param_groups: bool = False


@dataclasses.dataclass(frozen=True)
class DFSSection:
    repeats: int = 3
    w_mode: str = "matrix"
    generations: int | None = None  # a hybrid's DFS stage (None: the search's)
    sigma: float | None = None


@dataclasses.dataclass(frozen=True)
class EvolveConfig:
    models: tuple[str, ...]
    fitness: Fitness
    mode: str = "ps"
    base_model: str | None = None
    merge_method: str = "task_arithmetic"
    evolve: dict[str, EvolvedParam] = dataclasses.field(default_factory=dict)
    parameters: dict[str, Any] = dataclasses.field(default_factory=dict)
    granularity: Granularity = Granularity()
    search: Search = Search()
    memory: Memory = Memory()
    mesh: MeshShape = MeshShape()
    dfs: DFSSection = DFSSection()
    dtype: str | None = None  # None: the sources' storage dtype
    tokenizer: Any = None  # a TokenizerSpec (jaxmerge.merge.tokenspec): sources' vocabularies aligned at load
    raw: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False)  # the YAML as read
    root: str = dataclasses.field(default="", compare=False)  # the directory its relative paths start from


def is_real(value) -> bool:
    """A finite int or float from YAML (a bool is not a number here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def number(value, what: str, where: str, kind=float, lo=None, hi=None):
    """A finite number (an integer when kind is int) within [lo, hi] where given, else one line."""
    ok = is_real(value) and (kind is float or float(value).is_integer())
    expect(ok, f"{where}: expected {what} to be {'a number' if kind is float else 'an integer'}, found {value!r}")
    expect((lo is None or value >= lo) and (hi is None or value <= hi),
           f"{where}: expected {what} in [{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}], "
           f"found {value!r}")
    return kind(value)


def _evolved(name: str, spec: Any, where: str) -> EvolvedParam:
    spec = expect_keys(spec, {"init", "bounds"}, f"{where}: evolve.{name}", required=("init",))
    bounds = spec.get("bounds", [0.0, 1.0])
    expect(isinstance(bounds, list) and len(bounds) == 2, f"{where}: expected evolve.{name}.bounds as [lo, hi], "
                                                          f"found {bounds!r}")
    lo, hi = (number(b, f"evolve.{name}.bounds", where, float, -BOUND_LIMIT, BOUND_LIMIT) for b in bounds)
    init = number(spec["init"], f"evolve.{name}.init", where)
    expect(lo < hi, f"{where}: expected evolve.{name}.bounds lo < hi, found [{lo}, {hi}]")
    expect(lo <= init <= hi, f"{where}: expected evolve.{name}.init within bounds [{lo}, {hi}], found {init}")
    return EvolvedParam(init, lo, hi)


TASK_KEYS = {"task", "split", "weight", "subset"}
LMEVAL_KEYS = {"lm_eval", "include_path", "metric", "filter", "num_fewshot", "split", "weight", "subset"}


def _task(entry: Any, root: Path, where: str) -> TaskSpec:
    if isinstance(entry, dict) and "lm_eval" in entry:
        return _lmeval_task(entry, root, where)
    entry = expect_keys(entry, TASK_KEYS, f"{where}: fitness task", required=("task",))
    expect(isinstance(entry["task"], str) and entry["task"], f"{where}: expected a task file path, "
                                                            f"found {entry['task']!r}")
    split = entry.get("split", "dev")
    expect(isinstance(split, str) and split, f"{where}: expected a split name, found {split!r}")
    return TaskSpec(root / entry["task"], split, *_weight_subset(entry, where))


def _weight_subset(entry: dict, where: str) -> tuple[float, int]:
    return (number(entry.get("weight", 1.0), "task weight", where, float, 1e-9, 1e9),
            number(entry.get("subset", 0), "subset", where, int, 0, 10**7))


def _lmeval_task(entry: dict, root: Path, where: str) -> TaskSpec:
    """`{lm_eval: NAME or FILE.yaml, include_path?, metric?, filter?, num_fewshot?, split?, weight?, subset?}`;
    refused at once (one line naming the extra) when lm-eval is not installed."""
    from jaxmerge.fitness.lmeval import require
    from jaxmerge.fitness.lmeval.load import LmEvalRef
    entry = expect_keys(entry, LMEVAL_KEYS, f"{where}: fitness task")
    name = entry["lm_eval"]
    expect(isinstance(name, str) and name, f"{where}: expected lm_eval as a task name or YAML path, found {name!r}")
    for key in ("include_path", "metric", "filter", "split"):
        value = entry.get(key)
        expect(value is None or (isinstance(value, str) and value), f"{where}: expected {key} as a string, "
                                                                  f"found {value!r}")
    require(f"{where}: fitness task lm_eval {name}")
    task = root / name if name.endswith((".yaml", ".yml")) else Path(name)
    include = root / entry["include_path"] if entry.get("include_path") else None
    fewshot = entry.get("num_fewshot")
    ref = LmEvalRef(str(task), include, entry.get("metric"), entry.get("filter"),
                    None if fewshot is None else number(fewshot, "num_fewshot", where, int, 0, 10**4),
                    entry.get("split"))
    return TaskSpec(task, entry.get("split"), *_weight_subset(entry, where), lm_eval=ref)


def _search(doc: dict, where: str) -> Search:
    s = expect_keys(doc.get("search"), {f.name for f in dataclasses.fields(Search)}, f"{where}: search")
    objectives = _objectives(s.get("objectives"), where)
    strategy = s.get("strategy", "NSGA2" if objectives else "CMA_ES")
    expect(isinstance(strategy, str), f"{where}: expected search.strategy as a name, found {strategy!r}")
    expect((strategy == "NSGA2") == bool(objectives), f"{where}: expected search.objectives with strategy NSGA2 "
           f"(and NSGA2 only with objectives), found strategy {strategy} and {len(objectives)} objective(s)")
    expect(not objectives or doc.get("mode", "ps") != "hybrid", f"{where}: expected search.objectives with mode "
                                                                "ps or dfs, found mode hybrid")
    return Search(strategy, number(s.get("population", 16), "search.population", where, int, 1, 2**16),
                  number(s.get("generations", 20), "search.generations", where, int, 1, 10**6),
                  number(s.get("sigma", 0.15), "search.sigma", where, float, 1e-12, 100.0),
                  number(s.get("learning_rate", 0.05), "search.learning_rate", where, float, 1e-12, 100.0),
                  number(s.get("seed", 0), "search.seed", where, int, 0, 2**32 - 1), objectives)


def _objectives(value: Any, where: str) -> tuple[str, ...]:
    """search.objectives: task names, or {length: TASK} (its mean answer length in tokens, minimised), as
    `TASK` / `length:TASK`; at least two, none twice."""
    if value is None:
        return ()
    expect(isinstance(value, list), f"{where}: expected search.objectives as a list, found {value!r}")
    names = []
    for entry in value:
        if isinstance(entry, dict):
            entry = expect_keys(entry, {"length"}, f"{where}: search.objectives entry", required=("length",))
            expect(isinstance(entry["length"], str) and entry["length"], f"{where}: expected length: TASK, found "
                                                                         f"{entry!r}")
            names.append(f"length:{entry['length']}")
        else:
            expect(isinstance(entry, str) and entry, f"{where}: expected an objective as a task name or "
                                                     f"{{length: TASK}}, found {entry!r}")
            names.append(entry)
    expect(len(names) >= 2 and len(set(names)) == len(names), f"{where}: expected at least two different "
                                                              f"search.objectives, found {names}")
    return tuple(names)


def _fitness(doc: dict, root: Path, where: str) -> Fitness:
    f = expect_keys(doc.get("fitness"), {"tasks", "allow_test_split", "item_batch"}, f"{where}: fitness",
                    required=("tasks",))
    tasks = f["tasks"]
    expect(isinstance(tasks, list) and tasks, f"{where}: expected fitness.tasks as a non-empty list, found {tasks!r}")
    allow = f.get("allow_test_split", False)
    expect(isinstance(allow, bool), f"{where}: expected fitness.allow_test_split true/false, found {allow!r}")
    return Fitness(tuple(_task(t, root, where) for t in tasks), allow,
                   number(f.get("item_batch", 16), "fitness.item_batch", where, int, 1, 4096))


def _memory(doc: dict, where: str, population: int) -> Memory:
    m = expect_keys(doc.get("memory"), {"batch_size", "mode", "attention"}, f"{where}: memory")
    mode, attention = m.get("mode", "auto"), m.get("attention", EXPLICIT)
    expect(mode in MEMORY_MODES, f"{where}: expected memory.mode in {MEMORY_MODES}, found {mode!r}")
    expect(attention in IMPLEMENTATIONS, f"{where}: expected memory.attention in {IMPLEMENTATIONS}, found "
                                         f"{attention!r}")
    return Memory(mode, number(m.get("batch_size", 1), "memory.batch_size", where, int, 0, population), attention)


def _mesh(doc: dict, where: str) -> MeshShape:
    m = expect_keys(doc.get("mesh"), {"pop", "model"}, f"{where}: mesh")
    return MeshShape(number(m.get("pop", 0), "mesh.pop", where, int, 0, 2**16),
                     number(m.get("model", 1), "mesh.model", where, int, 1, 2**16))


def _granularity(doc: dict, where: str) -> Granularity:
    g = expect_keys(doc.get("granularity"), {"layers_per_group", "param_groups"}, f"{where}: granularity")
    groups = g.get("param_groups", False)
    expect(isinstance(groups, bool), f"{where}: expected granularity.param_groups true/false, found {groups!r}")
    return Granularity(number(g.get("layers_per_group", 0), "granularity.layers_per_group", where, int, 0, 10**6),
                       groups)


def _dfs(doc: dict, where: str) -> DFSSection:
    d = expect_keys(doc.get("dfs"), {f.name for f in dataclasses.fields(DFSSection)}, f"{where}: dfs")
    w_mode = d.get("w_mode", "matrix")
    expect(w_mode in W_MODES, f"{where}: expected dfs.w_mode in {W_MODES}, found {w_mode!r}")
    generations, sigma = d.get("generations"), d.get("sigma")
    return DFSSection(number(d.get("repeats", 3), "dfs.repeats", where, int, 1, 64), w_mode,
                      None if generations is None else number(generations, "dfs.generations", where, int, 1, 10**6),
                      None if sigma is None else number(sigma, "dfs.sigma", where, float, 1e-12, 100.0))


def parse_config(doc: Any, root: Path, where: str = "config") -> EvolveConfig:
    """Validate a loaded YAML document; paths are resolved against `root` (the config file's directory)."""
    doc = expect_keys(doc, TOP_KEYS, where, required=("models", "fitness"))
    models = doc["models"]
    expect(isinstance(models, list) and models and all(isinstance(m, str) and m for m in models),
           f"{where}: expected 'models' as a non-empty list of paths, found {models!r}")
    mode = doc.get("mode", "ps")
    expect(mode in MODES, f"{where}: expected mode in {MODES}, found {mode!r}")
    evolve = expect_keys(doc.get("evolve"), set(doc.get("evolve") or {}), f"{where}: evolve")
    expect(mode == "dfs" or evolve, f"{where}: expected at least one hyper-parameter under 'evolve', found none")
    method = doc.get("merge_method", "task_arithmetic")
    expect(isinstance(method, str), f"{where}: expected merge_method as a name, found {method!r}")
    dtype = doc.get("dtype")
    expect(dtype is None or dtype in DTYPE_NAMES, f"{where}: expected dtype in {DTYPE_NAMES}, found {dtype!r}")
    base = doc.get("base_model")
    expect(base is None or (isinstance(base, str) and base), f"{where}: expected base_model as a path, found {base!r}")
    search = _search(doc, where)
    return EvolveConfig(
        models=tuple(_path(m, root) for m in models), fitness=_fitness(doc, root, where), mode=mode,
        base_model=_path(base, root) if base else None, merge_method=method,
        evolve={str(name): _evolved(name, spec, where) for name, spec in evolve.items()},
        parameters=dict(expect_keys(doc.get("parameters"), set(doc.get("parameters") or {}), f"{where}: parameters")),
        granularity=_granularity(doc, where), search=search, memory=_memory(doc, where, search.population),
        mesh=_mesh(doc, where), dfs=_dfs(doc, where), dtype=dtype, tokenizer=_tokenizer(doc, root, mode, where),
        raw=doc, root=str(root))


def _tokenizer(doc: dict, root: Path, mode: str, where: str):
    """`tokenizer_source` / `tokenizer:` as jaxmerge merge reads them (PS only: a layer path runs one model's
    embeddings, and the hybrid's DFS stage would meet the sources' own vocabularies again)."""
    from jaxmerge.merge.tokenspec import parse
    def model(ref, key: str) -> str:
        expect(isinstance(ref, str) and ref != "", f"{where}: {key}: expected a model path, found {ref!r}")
        return _path(ref, root)
    spec = parse(doc, model)
    expect(spec is None or mode == "ps", f"{where}: expected tokenizer_source / tokenizer only with mode: ps, "
                                         f"found mode: {mode}")
    return spec


def _path(value: str, root: Path) -> str:
    """Relative paths are relative to the config file; anything else (a repo id) is left as written."""
    candidate = root / value
    return os.path.abspath(candidate) if not Path(value).is_absolute() and candidate.exists() else value


def load_config(path: str | Path) -> EvolveConfig:
    path = Path(path)
    return parse_config(read_yaml(path, "a run config"), path.parent.absolute(), str(path))
