"""A tiny merge world for evolve tests: a base, two fine-tunes of it, a char tokenizer, and tasks."""
from __future__ import annotations

import atexit
import json
import shutil
import tempfile
from pathlib import Path

from tests.fitness_tiny import add_char_tokenizer
from tests.tiny import make_tiny_model

CONFIG = """
models: [ft1, ft2]
base_model: base
merge_method: {method}
evolve:
  weight: {{init: 0.5, bounds: [0.0, 1.0]}}
{extra_evolve}
granularity: {{layers_per_group: 1, param_groups: false}}
search: {{strategy: CMA_ES, population: 4, generations: {generations}, sigma: 0.2, seed: 0}}
fitness:
  tasks: [{{task: task/add.yml, split: dev, subset: {subset}}}]
  item_batch: 8
"""


_PRISTINE: dict[int, Path] = {}  # num_layers -> a world built once per test process, copied for every caller


def build_world(root: Path, num_layers: int = 2) -> Path:
    """The world at `root`: a copy of one built once per process (building runs transformers three times; a copy
    takes milliseconds, and identical bits let the compilation cache serve every module that uses it)."""
    if num_layers not in _PRISTINE:
        scratch = Path(tempfile.mkdtemp(prefix="jaxmerge-test-world-"))
        atexit.register(shutil.rmtree, scratch, True)
        _PRISTINE[num_layers] = _build(scratch / "world", num_layers)
    shutil.copytree(_PRISTINE[num_layers], root, dirs_exist_ok=True)
    return Path(root)


def _build(root: Path, num_layers: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    base = make_tiny_model(root / "base", "llama", seed=0, num_hidden_layers=num_layers)
    add_char_tokenizer(base)
    for i in (1, 2):
        add_char_tokenizer(make_tiny_model(root / f"ft{i}", perturb_from=base, seed=i, scale=0.05))
    (root / "task").mkdir(exist_ok=True)
    rows = [{"prompt": f"{a}+{b}=", "answer": str(a + b)} for a in range(6) for b in range(6)]
    (root / "task/dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:24]))
    (root / "task/test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[24:]))
    (root / "task/add.yml").write_text("name: add\nsplits: {dev: dev.jsonl, test: test.jsonl}\n"
                                       "template: '{prompt}'\nmetric: loglik\n")
    return root


def write_config(root: Path, name: str = "evolve.yml", method: str = "dare_ties", generations: int = 3,
                 extra_evolve: str = "  density: {init: 0.7, bounds: [0.1, 1.0]}", subset: int = 8) -> Path:
    path = root / name
    path.write_text(CONFIG.format(method=method, generations=generations, extra_evolve=extra_evolve,
                                  subset=subset))
    return path
