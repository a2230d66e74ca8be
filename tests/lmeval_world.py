"""A tiny lm-eval world: a model with the char tokenizer and two local lm-eval task YAMLs (offline JSON data).

- `tiny_mc`: multiple choice, metrics acc and acc_norm (choices of different lengths, so they differ);
- `tiny_gen`: generate_until with 2-shot contexts from a train split, `until` and `max_gen_toks`, and two
  filters: `first-letter` (regex + take_first) and lm-eval's implicit none-free `whole` (take_first only).
"""
from __future__ import annotations

import json
from pathlib import Path

MC = """task: tiny_mc
dataset_path: json
dataset_kwargs:
  data_files:
    validation: {data}/mc.jsonl
validation_split: validation
output_type: multiple_choice
doc_to_text: "Q: {{{{question}}}}\\nA:"
doc_to_target: label
doc_to_choice: choices
metric_list:
  - metric: acc
  - metric: acc_norm
"""
GEN = """task: tiny_gen
dataset_path: json
dataset_kwargs:
  data_files:
    validation: {data}/gen.jsonl
    train: {data}/gen_train.jsonl
validation_split: validation
fewshot_split: train
num_fewshot: 2
output_type: generate_until
doc_to_text: "Q: {{{{question}}}}\\nA:"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["\\n\\n", "Q:"]
  max_gen_toks: 8
  do_sample: false
filter_list:
  - name: first-letter
    filter:
      - function: regex
        regex_pattern: "([a-z])"
      - function: take_first
  - name: whole
    filter:
      - function: take_first
metric_list:
  - metric: exact_match
"""


def write_tasks(root: Path, docs: int = 8) -> Path:
    """Data and task YAMLs under root/tasks; returns that folder (lm-eval's include_path)."""
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    mc = [{"question": f"what is {a} plus {b}?", "choices": [str(a + b), f"{a + b + 1} or so", "no"],
           "label": (a + b) % 3} for a in range(4) for b in range(3)][:docs]
    gen = [{"question": f"{a}+{b}=", "answer": "g" if (a + b) % 2 else "k"} for a in range(4) for b in range(3)]
    _jsonl(data / "mc.jsonl", mc)
    _jsonl(data / "gen.jsonl", gen[:docs])
    _jsonl(data / "gen_train.jsonl", [{"question": f"{a}*{a}=", "answer": str(a * a)} for a in range(5)])
    tasks = root / "tasks"
    tasks.mkdir(exist_ok=True)
    (tasks / "mc.yaml").write_text(MC.format(data=data))
    (tasks / "gen.yaml").write_text(GEN.format(data=data))
    return tasks


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def samples_by_filter(results: dict, task: str) -> dict[str, list[dict]]:
    """lm-eval's logged samples of `task`, per filter, in document order."""
    out: dict[str, list[dict]] = {}
    for sample in results["samples"][task]:
        out.setdefault(sample["filter"], []).append(sample)
    return {k: sorted(v, key=lambda s: s["doc_id"]) for k, v in out.items()}


def simple_evaluate(model: str, model_dir, tasks_dir, tasks) -> dict:
    """lm-eval's own run (the oracle with model="hf"), offline, on the CPU, with per-document samples."""
    import os

    import lm_eval
    from lm_eval.tasks import TaskManager
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    args = f"pretrained={model_dir},dtype=float32"
    return lm_eval.simple_evaluate(model=model, model_args=args, tasks=list(tasks), device="cpu", batch_size=1,
                                   task_manager=TaskManager(include_path=str(tasks_dir), include_defaults=False),
                                   log_samples=True)
