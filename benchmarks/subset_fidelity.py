"""Does the cheap subset fitness rank candidates like the full-set accuracy? Spearman rho over random merges.

Setup (tiny, synthetic, CPU): a random base Llama and 3 perturbed "fine-tunes"; a teacher close to source 0
writes the answers (its 1-token greedy completions of random prompts), so a merge's exact-match accuracy
depends on how it weighs the sources. Candidates are random linear merges (Dirichlet weights). Every
candidate's per-item correctness on the full split comes from one vmapped `fit.per_item`; a subset fitness is
the weighted mean over the subset's items (what `make_fitness(..., weights=subset.weights)` computes, checked
once below). For each n, 100 seeds of a uniform subset and of the stratified subset (strata from the
sources' per-item scores) give the rank correlation with full-set accuracy. Run: python -m benchmarks.subset_fidelity
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from jaxmerge.params import stack

SIZES = (10, 20, 40, 80)
SEEDS = 100


def build(root: Path, n_items: int):
    import jax

    from jaxmerge.fitness import load_tokenizer, make_fitness, prepare
    from jaxmerge.fitness.tasks import Item, Task
    from jaxmerge.io import load
    from tests.fitness_tiny import CHARS, add_char_tokenizer
    from tests.tiny import make_tiny_model

    base = make_tiny_model(root / "base", "llama", seed=0, num_hidden_layers=2)
    srcs = [load(make_tiny_model(root / f"s{i}", "llama", seed=10 + i, perturb_from=base, scale=0.04))
            for i in range(3)]
    teacher = add_char_tokenizer(make_tiny_model(root / "t", "llama", seed=20, perturb_from=root / "s0", scale=0.01))
    tok = load_tokenizer(teacher)
    rng = np.random.default_rng(0)
    prompts = ["".join(rng.choice(list(CHARS[:62]), int(k))) for k in rng.integers(3, 12, n_items)]
    task = Task("synthetic", (("dev", "x"),), template="{prompt}", metric="exact_match", max_new_tokens=1)
    t = load(teacher)
    gen = make_fitness(t.spec, prepare(task, [Item(p, "") for p in prompts], tok, item_batch=32), tok)
    from jaxmerge.fitness.evaluate import evaluate
    _, rows = evaluate(gen, t.params, tok)
    items = [Item(p, r["completion"]) for p, r in zip(prompts, rows)]
    stacked = stack([s.params for s in srcs])
    return t.spec, stacked, items, tok, task


def main() -> None:
    import jax
    import jax.numpy as jnp
    from scipy.stats import spearmanr

    from benchmarks import RESULTS_PAGE
    from benchmarks.common import page_machine, write_section
    from jaxmerge.fitness import make_fitness, prepare
    from jaxmerge.fitness.subset import estimate, random_subset, stratified_subset, subset_items

    where = page_machine()
    spec, stacked, items, tok, task = build(Path(tempfile.mkdtemp()), n_items=256)
    fit = make_fitness(spec, prepare(task, items, tok, item_batch=32), tok)

    def merged(w):
        return jax.tree.map(lambda x: jnp.tensordot(w, x, axes=1), stacked)

    per_item = jax.jit(jax.vmap(lambda w: fit.per_item(merged(w))))
    weights = np.random.default_rng(1).dirichlet(np.ones(3), size=48).astype(np.float32)
    scores = np.asarray(per_item(jnp.asarray(weights)))               # [candidates, items]
    source_scores = np.asarray(per_item(jnp.eye(3, dtype=jnp.float32)))  # [3, items]
    full = scores.mean(1)
    check = stratified_subset(source_scores, 20, seed=0)
    cheap = make_fitness(spec, prepare(task, subset_items(items, check), tok, item_batch=32), tok,
                         weights=check.weights)
    assert abs(float(jax.jit(cheap.fitness)(merged(jnp.asarray(weights[0])))) - estimate(check, scores[0, check.indices])) < 1e-6
    lines = []
    for n in SIZES:
        row = []
        for make in (lambda s: random_subset(len(items), n, s), lambda s: stratified_subset(source_scores, n, s)):
            subs = [make(s) for s in range(SEEDS)]
            rho = [spearmanr(estimate(sub, scores[:, sub.indices]), full).statistic for sub in subs]
            err = [np.abs(estimate(sub, scores[:, sub.indices]) - full).mean() for sub in subs]
            row += [f"{np.nanmean(rho):.3f} ± {np.nanstd(rho):.3f}", f"{np.mean(err):.3f}"]
        lines.append(f"| {n} | " + " | ".join(row) + " |")
    body = f"""Machine: {where}.
{len(full)} random linear merges of 3 perturbed tiny Llamas; task: {len(items)} items, exact match of a
teacher's 1-token greedy completions. Full-set accuracy over candidates: min {full.min():.3f}, mean
{full.mean():.3f}, max {full.max():.3f}; sources {[round(float(x), 3) for x in source_scores.mean(1)]}. Spearman rho
(subset fitness vs full-set accuracy) and mean |estimate - full accuracy|, mean ± sd over {SEEDS} subset seeds.

| n | uniform rho | uniform abs err | stratified rho | stratified abs err |
|---|---|---|---|---|
""" + "\n".join(lines)
    print(body)
    write_section(RESULTS_PAGE, "fitness: subset fitness fidelity (benchmarks/subset_fidelity.py)", body)


if __name__ == "__main__":
    main()
