"""Training the world's models: a base on the mixture of all skills (and the composed op at 3-4 letters), then
one specialist per single skill from it."""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import jax
import numpy as np

from jaxmerge.demo import training, vocab
from jaxmerge.demo.tasks import COMPOSED, make_splits
from jaxmerge.demo.train import encode, init_params, train
from jaxmerge.io import Model, save


def training_data(seed: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """skill -> (tokens, loss weights) of its train split (disjoint from the dev and test splits by construction),
    and COMPOSED -> the base's composed rows (3-4 letters; the target's 5-letter rows are never drawn here)."""
    sizes = training.SPLIT_SIZES
    splits = make_splits(seed, {"test": sizes["test"], "dev": sizes["dev"], "train": training.TRAIN_ROWS},
                         training.SKILLS)
    data = {s: encode(splits[s]["train"], training.SEQ_LEN) for s in training.SKILLS}
    composed = make_splits(seed, {"train": training.COMPOSED_ROWS}, (COMPOSED,))[COMPOSED]["train"]
    return {**data, COMPOSED: encode(composed, training.SEQ_LEN)}


def short_rows(tokens: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rows whose prompts are shorter than the longest: what the base is pretrained on.

    A base that never saw a skill's longest inputs does every skill partly and generalises only so far, so each
    specialist has something to add, and adds it by a small step from the base (merges need both).
    """
    length = np.argmax(weights > 0, axis=1)  # prompt tokens before the answer
    keep = length < length.max() if training.BASE_SEES_SHORT_ONLY else np.ones(len(length), bool)
    return tokens[keep], weights[keep]


def mixture(parts: list[tuple[np.ndarray, np.ndarray]], rows: int, rng: np.random.Generator):
    """`rows` rows drawn without replacement from the union of `parts`."""
    tokens, weights = (np.concatenate([p[i] for p in parts]) for i in (0, 1))
    idx = rng.permutation(len(tokens))[:rows]
    return tokens[idx], weights[idx]


def save_model(out_dir: Path, params) -> None:
    """A HF checkpoint: float32 safetensors, config.json and the world's tokenizer files."""
    model = Model(training.spec(), jax.tree.map(lambda x: np.asarray(x, np.float32), params))
    with tempfile.TemporaryDirectory() as tok_dir:
        vocab.save_tokenizer(tok_dir)
        save(model, out_dir, tokenizer_from=tok_dir)


def train_all(out_dir: Path, seed: int, progress=None) -> dict:
    """Write base/ and one directory per skill under out_dir; returns timings and final losses."""
    say = progress or (lambda msg: None)
    spec, data, info = training.spec(), training_data(seed), {"seconds": {}, "final_loss": {}}
    key, rng = jax.random.key(seed), np.random.default_rng([seed, 7])
    base_data = [*(short_rows(*data[s]) for s in training.SKILLS), data[COMPOSED]]  # COMPOSED is short already
    pretrain = mixture(base_data, sum(len(t) for t, _ in base_data), rng)
    jobs = [("base", pretrain, training.BASE)]
    for s in training.SKILLS:  # own skill plus a replay share of the base's data, as fine-tunes usually mix in
        replay = mixture(base_data, int(training.REPLAY * training.TRAIN_ROWS), rng)
        jobs.append((s, mixture([data[s], replay], training.TRAIN_ROWS + len(replay[0]), rng), training.SPECIALISTS[s]))
    base = init_params(spec, jax.random.fold_in(key, 0))
    for job_id, (name, (tokens, weights), hyper) in enumerate(jobs):
        say(f"training {name} ({hyper['steps']} steps)")
        start = time.perf_counter()
        params, losses = train(spec, base, tokens, weights, steps=hyper["steps"], lr=hyper["lr"],
                               batch=training.BATCH, key=jax.random.fold_in(key, 1 + job_id))
        base = params if name == "base" else base
        save_model(out_dir / name, params)
        info["seconds"][name] = round(time.perf_counter() - start, 1)
        info["final_loss"][name] = round(losses[-1], 4)
    return info
