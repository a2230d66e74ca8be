"""DFS: cost of scoring layer paths, and how exact the exported fold is against RMSNorm's eps.

1. Speed: a DFS candidate computes only the steps its path uses (jaxmerge.dfs.path: an unused step is a
   `lax.cond` that passes the stream through), with one compile for the whole search. Timed, jitted and warm:
   model A's plain forward; paths that use 50 %, 100 % and 200 % of A's depth, one candidate at a time as the
   engine scores them (`memory.batch_size: 1`, jaxmerge.evolve.mesh.map_candidates), against the same paths
   with every step computed (the cost before unused steps were skipped); a vmapped population (per candidate:
   under vmap the loop over used steps runs the longest path among them). Goal: a candidate costs <= 1.1 x
   (used steps / A's layers) of A's forward.
2. Fold exactness: exported plain model (transformers) vs the engine's path logits, max |diff| / max |logit|,
   for random paths with scales in [0.5, 1.5], as the residual stream grows against eps (embeddings x k).

Run: python -m benchmarks.dfs_speed   (writes both sections of benchmarks/RESULTS.md); `jaxmerge bench` runs
part 1.
"""
from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np

from benchmarks import RESULTS_PAGE
from benchmarks.common import page_machine, repeat, result, write_section
from jaxmerge.params import stack

TITLE = "dfs: path forward cost (benchmarks/dfs_speed.py)"
FOLD_TITLE = "dfs: fold exactness against RMSNorm's eps (benchmarks/dfs_speed.py)"
SHARES = (0.5, 1.0, 2.0)  # used steps / A's layers


def random_genes(space, rng, lo=0.5, hi=1.5):
    import jax.numpy as jnp
    shape = space.gene_template()["scales"].shape
    return {"indicator": jnp.asarray(rng.normal(size=space.num_slots), jnp.float32),
            "scales": jnp.asarray(rng.uniform(lo, hi, shape), jnp.float32)}


def genes_using(space, steps: int, rng):
    """Random genes whose path uses exactly `steps` steps (slot 0 and the tail always; steps - 2 other slots)."""
    import jax.numpy as jnp
    genes = random_genes(space, rng)
    on = np.zeros(space.num_slots, bool)
    on[0] = True
    on[1 + rng.choice(space.num_slots - 1, steps - 2, replace=False)] = True
    return {**genes, "indicator": jnp.asarray(np.where(on, 0.5, -0.5), jnp.float32)}


def speed(root: Path, quick: bool, layers: int = 8, repeats: int = 5, batch: int = 4, length: int = 64,
          population: int = 4):
    """(rows, Markdown) of part 1."""
    import jax
    from jaxmerge import model
    from jaxmerge.dfs import path_spec, with_path
    from jaxmerge.dfs.path import path_stack
    from jaxmerge.dfs.sources import pool_params, layout_for
    from jaxmerge.evolve.mesh import map_candidates
    from jaxmerge.io import load
    from tests.tiny import make_tiny_model
    if quick:
        layers, batch, length, population, repeats = 4, 2, 16, 2, 2
    shape = dict(hidden_size=256, intermediate_size=512, num_hidden_layers=layers, num_attention_heads=8,
                 num_key_value_heads=4, head_dim=32, vocab_size=2048)
    a = make_tiny_model(root / "a", "llama", seed=0, **shape)
    models = [load(a), load(make_tiny_model(root / "b", perturb_from=a, seed=1))]
    space = layout_for(models, 3)
    spec, pool = path_spec(models[0].spec, space), pool_params(models)
    tokens = np.random.default_rng(0).integers(3, 2048, (batch, length)).astype(np.int32)
    rng = np.random.default_rng(1)

    def path_fn(every_step: bool):
        def one(genes):
            params = with_path(pool, space.decode(genes))
            steps = path_stack(params)._replace(runs=None) if every_step else path_stack(params)
            return model.run(spec, params, steps, tokens)[0]
        return one
    skip, every = (jax.jit(lambda p, f=path_fn(e): map_candidates(f, p, 1)) for e in (False, True))
    vmapped = jax.jit(jax.vmap(path_fn(False)))
    a_spec, a_params = models[0].spec, models[0].params
    plain_map = jax.jit(lambda p, batches: map_candidates(lambda tk: model.forward(a_spec, p, tk), batches, 1))
    # A's forward `population` times in the same harness as the candidates, each on its own copy of the batch: a
    # mapped function that ignores its input is loop-invariant, and XLA hoists it out of the loop (it ran once)
    batches = np.repeat(tokens[None], population, axis=0)
    plain = repeat(lambda: plain_map(a_params, batches).block_until_ready(), repeats)
    plain = plain._replace(runs=tuple(t / population for t in plain.runs))
    table = ["| path (used steps) | skip unused, s / candidate | every step, s / candidate | "
             "skip / (used/L x plain A) | goal |", "|---|---|---|---|---|"]
    rows = []
    for share in SHARES:
        used = int(share * layers)
        pop = stack([genes_using(space, used, rng) for _ in range(population)])
        t_skip = repeat(lambda: skip(pop).block_until_ready(), repeats)
        t_every = None if quick else repeat(lambda: every(pop).block_until_ready(), repeats).min / population
        per = t_skip.min / population  # fastest warm run: the least disturbed by the machine's other jobs
        ratio = per / (share * plain.min)
        table.append(f"| {share:.0%} of A ({used}) | {per:.4f} | {'-' if quick else f'{t_every:.4f}'} | "
                     f"{ratio:.2f} | <= 1.1: {'met' if ratio <= 1.1 else '**not met**'} |")
        rows.append(result(f"dfs: candidate forward / (used steps / A's layers x A's forward), path {share:.0%} of A",
                           per, "s", baseline=share * plain.min, goal="ratio <= 1.1", noise=t_skip.noise))
    mixed = stack([genes_using(space, int(SHARES[i % 3] * layers), rng) for i in range(population)])
    t_vmap = float("nan") if quick else repeat(lambda: vmapped(mixed).block_until_ready(), repeats).min / population
    rows.append(result("dfs: compilations of the path function over every candidate timed", skip._cache_size(),
                       "compiles", goal="value == 1"))
    if not quick:
        row, decoding = decoding_cost(space, spec, pool, rng, repeats)
        rows.append(row)
    load_now = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    body = (f"Model: 2 random Llamas, hidden 256, {layers} layers each (M = {2 * layers}), r = 3 -> T = "
            f"{space.num_slots} slots + tail; batch {batch} x {length} tokens, float32; {population} candidates "
            f"per path length, fastest of {repeats} warm runs (the machine is shared: the fastest run is the least "
            f"disturbed); load average at the end {load_now}.\n\n"
            f"Plain model A ({layers} layers), timed the same way (lax.map over {population} forwards): "
            f"{plain.min:.4f} s / batch (spread of its runs {100 * plain.noise:.0f} %).\n\n"
            + "\n".join(table) +
            f"\n\nVmapped population of {population} mixed paths (each runs the longest path among them): "
            f"{t_vmap:.4f} s per candidate ({t_vmap / plain.min:.1f}x plain A). Compilations of the "
            f"one-at-a-time path function over all {len(SHARES)} x {population} candidates: {skip._cache_size()}."
            + ("" if quick else decoding))
    return rows, body


def decoding_cost(space, spec, pool, rng, repeats: int, items: int = 8, rows: int = 4, length: int = 128,
                  new_tokens: int = 128):
    """Greedy decoding of one candidate whose path uses A's depth (the fitness's queue, no EOS): its used steps
    only with the cache carried (one candidate in flight, the engine's default), against the scan of every step
    handing each cache entry through (what a decoding path ran before, and still runs when vmapped)."""
    import jax
    import jax.numpy as jnp
    from jaxmerge import model
    from jaxmerge.dfs import with_path
    from jaxmerge.dfs.decoder import DFS_DECODER
    from jaxmerge.fitness.generate import greedy_queue
    tokens = rng.integers(3, 2048, (items, length)).astype(np.int32)
    batch = {"tokens": tokens, "mask": np.ones_like(tokens)}
    params = with_path(pool, space.decode(genes_using(space, space.num_slots // 6, rng)))

    def decode():
        return jax.jit(lambda p: greedy_queue(spec, p, batch, jnp.asarray([-1]), rows=rows, max_new_tokens=new_tokens,
                                              decoder=DFS_DECODER).tokens)
    used = decode()
    with model.candidates_in_flight(2):  # traced as when several candidates are in flight
        every = decode()
        every(params).block_until_ready()
    same = np.array_equal(np.asarray(used(params)), np.asarray(every(params)))
    t_used = repeat(lambda: used(params).block_until_ready(), repeats)
    t_every = repeat(lambda: every(params).block_until_ready(), repeats)
    steps = int(np.asarray(params["included"]).sum())
    row = result("dfs: decoding a candidate, its used steps with the cache carried vs the scan of every step",
                 t_used.min, "s", baseline=t_every.min, noise=t_used.noise)
    return row, (f"\n\nDecoding one candidate ({steps} of {space.num_slots + 1} steps used; {items} prompts of "
                 f"{length} tokens, {rows} rows, {new_tokens} new tokens each, no EOS): its used steps with the "
                 f"cache carried {t_used.min:.3f} s, the scan of every step {t_every.min:.3f} s "
                 f"({t_every.min / t_used.min:.1f}x); tokens identical: {same}.")


def measure(quick: bool = False, out=None):
    """The `jaxmerge bench` entry point: part 1 only (the fold check runs transformers per path)."""
    where = page_machine()
    with tempfile.TemporaryDirectory() as tmp:
        rows, body = speed(Path(tmp), quick)
    return rows, f"Machine: {where}.\n\n{body}"


def fold_exactness(root: Path) -> str:
    import jax
    from jaxmerge.dfs import forward, path_spec, with_path
    from jaxmerge.dfs.export import export_path
    from jaxmerge.dfs.sources import pool_params, layout_for
    from jaxmerge.io import Model, load
    from tests.tiny import hf_logits, make_tiny_model
    a = make_tiny_model(root / "ta", "llama", seed=0, rms_norm_eps=1e-5)
    base = [load(a), load(make_tiny_model(root / "tb", perturb_from=a, seed=1, scale=0.05))]
    tokens = np.random.default_rng(0).integers(3, 97, (2, 9)).astype(np.int32)
    rows = ["| embeddings x | mean(h^2) at layer 0 | rel. diff, 5 random paths (max) |", "|---|---|---|"]
    for k in (1.0, 10.0, 100.0):
        a_k = Model(base[0].spec, {**base[0].params, "embed": base[0].params["embed"] * k}, base[0].path)
        space = layout_for([a_k, base[1]], 2)
        spec, pool = path_spec(a_k.spec, space), pool_params([a_k, base[1]])
        engine = jax.jit(lambda g: forward(spec, with_path(pool, space.decode(g)), tokens))
        worst = 0.0
        for seed in range(5):
            genes = random_genes(space, np.random.default_rng(seed))
            want = np.asarray(engine(genes))
            got = hf_logits(export_path(space, [a_k, base[1]], genes, root / f"x{k}-{seed}"), tokens)
            worst = max(worst, float(np.abs(got - want).max() / np.abs(want).max()))
        ms = float(np.mean(np.asarray(a_k.params["embed"], np.float64)[tokens] ** 2))
        rows.append(f"| {k:g} | {ms:.2e} | {worst:.1e} |")
    return ("Tiny Llamas (hidden 32), rms_norm_eps 1e-5, r = 2, scales U(0.5, 1.5). The fold is exact up to eps "
            "(jaxmerge/dfs/fold.py); the effect scales like eps * |C^2 - 1| / mean(h^2).\n\n" + "\n".join(rows))


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        where = page_machine()
        _, part1 = speed(Path(tmp), quick=False)
        write_section(RESULTS_PAGE, TITLE, f"Machine: {where}.\n\n{part1}")
        print(part1)
        part2 = f"Machine: {page_machine()}.\n\n{fold_exactness(Path(tmp))}"
    write_section(RESULTS_PAGE, FOLD_TITLE, part2)
    print(part2)


if __name__ == "__main__":
    main()
