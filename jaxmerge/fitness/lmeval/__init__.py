"""lm-evaluation-harness tasks as fitness, and a `jaxmerge` model backend for lm-eval (optional extra `lmeval`).

    fitness:
      tasks:
        - {lm_eval: tasks/arc_local.yaml, metric: acc_norm}              # a task YAML (its folder is searched)
        - {lm_eval: gsm8k_local, include_path: tasks/, metric: exact_match, filter: strict-match, num_fewshot: 5}

lm-eval builds the requests on the host, once (doc_to_text / doc_to_target / doc_to_choice, few-shot contexts,
generation_kwargs); jaxmerge tokenises them as lm-eval's `hf` backend does (encode.py) and scores them inside
the compiled step: loglikelihood requests teacher-forced, generate_until requests by greedy decoding. Each
candidate's responses then go back to the host through one `jax.pure_callback`, where lm-eval's own filters
(regex, take_first, ...) and `process_results` turn them into per-document metric values (results.py), so a
number the search sees is the number lm-eval would report for that model. Data are read offline only: local
files, or the local datasets cache (load.py). `backend.py` registers `jaxmerge` with lm-eval, so
`lm_eval.simple_evaluate(model="jaxmerge", model_args="pretrained=DIR")` evaluates any model on jaxmerge's forward.

Nothing here is imported unless a run names an lm-eval task: without the extra installed, that one task is
refused in one line saying what to install.
"""
from __future__ import annotations

import importlib.util
import os

from jaxmerge.errors import expect

EXTRA = "pip install 'jaxmerge[lmeval]'"


def require(what: str) -> None:
    """Refuse `what` in one line when lm-eval is not installed (checked before anything is loaded)."""
    expect(importlib.util.find_spec("lm_eval") is not None,
           f"{what}: expected the lm-eval package for lm-evaluation-harness tasks ({EXTRA}), found it not installed")


def offline() -> None:
    """Datasets and the hub never touch the network: set before `datasets` is imported (it reads the variables at
    import time), and on its config when it already was."""
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    os.environ["HF_HUB_OFFLINE"] = "1"
    import datasets.config
    datasets.config.HF_DATASETS_OFFLINE = True
    datasets.config.HF_HUB_OFFLINE = True
