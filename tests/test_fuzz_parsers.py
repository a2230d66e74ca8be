"""Property-based fuzzing of the three user-facing parsers: recipe, evolve config, task (YAML + JSONL).

Property: whatever the document, the parser returns a result or raises `JaxmergeError` (which the CLI turns into
one line and exit 2) — never another exception. Documents are drawn near the real schemas (known keys, values
of every YAML type, NaN/Inf, odd strings) so that the fuzzer reaches deep into validation, not just the first
type check. A fixed, derandomized profile keeps CI time and results stable.
"""
from __future__ import annotations

import math
import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jaxmerge.errors import JaxmergeError
from jaxmerge.config import TOP_KEYS, parse_config
from jaxmerge.fitness.tasks import KEYS as TASK_KEYS
from jaxmerge.fitness.tasks import load_items, load_task, read_jsonl
from jaxmerge.merge.recipe import TOP_KEYS as RECIPE_KEYS
from jaxmerge.merge.recipe import parse_recipe

settings.register_profile("jaxmerge-fuzz", max_examples=60, derandomize=True, deadline=None, database=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
FUZZ = settings.get_profile("jaxmerge-fuzz")

ROOT = Path(tempfile.mkdtemp(prefix="jaxmerge-fuzz-"))  # where relative paths and task files point
(ROOT / "model").mkdir(exist_ok=True)

NESTED_KEYS = ["model", "parameters", "layer_range", "sources", "weight", "density", "filter", "value", "init",
               "bounds", "strategy", "population", "generations", "sigma", "seed", "tasks", "task", "split",
               "subset", "batch_size", "mode", "pop", "layers_per_group", "param_groups", "item_batch"]
VALUES = ["linear", "ties", "dare_ties", "slerp", "task_arithmetic", "model", "../model", "CMA_ES", "SNES",
          "dev", "test", "float32", "bfloat16", "base", "union", "auto", "fused", "dfs", "hybrid", "ps", "a+b",
          "nope/absent", "{prompt}", "x\x00y", "\ud800"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10, 10), st.integers(), st.floats(allow_nan=True),
                    st.sampled_from(VALUES), st.text(max_size=8))


def documents(top_keys) -> st.SearchStrategy:
    """Mappings whose keys are mostly real schema keys, with values that nest a few levels."""
    keys = st.one_of(st.sampled_from(sorted(top_keys) + NESTED_KEYS), st.text(max_size=6))
    values = st.recursive(scalars, lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=5)), max_leaves=20)
    return st.one_of(st.dictionaries(keys, values, max_size=8), values)


def only_jaxmerge_errors(fn, *args) -> None:
    try:
        fn(*args)
    except JaxmergeError as e:
        assert str(e) and "\n" not in str(e).strip(), repr(str(e))


@FUZZ
@given(documents(RECIPE_KEYS), st.sampled_from([None, ROOT]))
def test_recipe_parser_returns_or_raises_jaxmerge_error(doc, root):
    only_jaxmerge_errors(parse_recipe, doc, root)


@FUZZ
@given(st.fixed_dictionaries({"merge_method": st.sampled_from(["linear", "ties", "slerp", "dare_ties"])},
                             optional={"models": st.lists(st.fixed_dictionaries(
                                 {"model": st.sampled_from(VALUES)}, optional={"parameters": scalars}), max_size=3),
                                 "slices": documents({"sources"}), "base_model": scalars, "dtype": scalars,
                                 "tokenizer_source": scalars, "parameters": documents({"weight"})}))
def test_recipe_parser_near_valid_documents(doc):
    only_jaxmerge_errors(parse_recipe, doc, ROOT)


@FUZZ
@given(documents(TOP_KEYS))
def test_config_parser_returns_or_raises_jaxmerge_error(doc):
    only_jaxmerge_errors(parse_config, doc, ROOT)


MODES = ["auto", "fused", "materialize", "ps", "dfs", "hybrid", "union", None, 3]


def _near_valid_config():
    valid = st.one_of(st.integers(1, 40), st.floats(0.05, 1.0))
    invalid = st.one_of(st.integers(-3, 0), st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
                        st.none(), st.text(max_size=3))
    number = st.one_of(valid, valid, valid, invalid)  # mostly plausible, so some documents parse all the way
    task = st.fixed_dictionaries({"task": st.sampled_from(["t.yml", "t.yml", "x\x00"])},
                                 optional={"split": scalars, "weight": number, "subset": number})
    gene = st.fixed_dictionaries({"init": number}, optional={"bounds": st.lists(number, max_size=3)})
    search = st.fixed_dictionaries({}, optional={k: number for k in ("population", "generations", "sigma", "seed")})
    return st.fixed_dictionaries(
        {"models": st.one_of(st.just(["model", "model"]), st.just(["model", "nope/absent"]),
                             st.lists(scalars, max_size=3)),
         "fitness": st.fixed_dictionaries({"tasks": st.lists(task, min_size=1, max_size=2)}),
         "evolve": st.dictionaries(st.sampled_from(["weight", "density", "t"]), gene, min_size=1, max_size=2)},
        optional={"search": search, "mode": st.sampled_from(MODES), "dtype": scalars,
                  "memory": st.fixed_dictionaries({}, optional={"batch_size": number, "mode": st.sampled_from(MODES)}),
                  "mesh": st.fixed_dictionaries({}, optional={"pop": number, "model": number})})


@FUZZ
@given(_near_valid_config())
def test_config_parser_near_valid_documents(doc):
    try:
        cfg = parse_config(doc, ROOT)
    except JaxmergeError:
        return
    assert cfg.search.generations >= 1 and cfg.fitness.item_batch >= 1 and all(t.subset >= 0 for t in cfg.fitness.tasks)
    assert 0 <= cfg.search.seed < 2**32 and 1 <= cfg.search.population <= 2**16
    assert all(p.lo < p.hi and p.lo <= p.init <= p.hi for p in cfg.evolve.values())


def _write_task(text: str) -> Path:
    path = Path(tempfile.mkstemp(suffix=".yml", dir=ROOT)[1])
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    return path


@FUZZ
@given(documents(TASK_KEYS))
def test_task_yaml_parser_returns_or_raises_jaxmerge_error(doc):
    try:
        text = yaml.safe_dump(doc, allow_unicode=True)
    except yaml.YAMLError:
        return  # not representable as YAML: nothing a user could write
    path = _write_task(text)
    try:
        only_jaxmerge_errors(_task_and_items, path)
    finally:
        path.unlink()


def _task_and_items(path: Path):
    task = load_task(path)
    for split, _ in task.splits:
        load_items(task, split)


@FUZZ
@given(st.text(max_size=80))
def test_task_yaml_raw_text(text):
    path = _write_task(text)
    try:
        only_jaxmerge_errors(load_task, path)
    finally:
        path.unlink()


jsonl_rows = st.one_of(
    st.binary(max_size=40),
    st.builds(lambda d: yaml.safe_dump(d, default_flow_style=True, width=math.inf).strip().encode(
        "utf-8", "surrogatepass"), st.dictionaries(st.sampled_from(["prompt", "answer", "choices", "x"]), scalars)),
    st.sampled_from([b'{"prompt": "a", "answer": "b"}', b'{"prompt": "a", "answer": "b", "choices": ["b"]}',
                     b"[1]", b"null", b'{"prompt": 1}', b"\xff\xfe", b'{"prompt": "a", "answer": NaN}']))


@FUZZ
@given(st.lists(jsonl_rows, max_size=6), st.booleans())
def test_jsonl_reader_returns_items_or_raises_jaxmerge_error(rows, needs_choices):
    path = Path(tempfile.mkstemp(suffix=".jsonl", dir=ROOT)[1])
    path.write_bytes(b"\n".join(rows))
    try:
        only_jaxmerge_errors(read_jsonl, path, needs_choices)
    finally:
        path.unlink()
