"""DFS: cost of scoring layer paths, and how exact the exported fold is against RMSNorm's eps.

1. Speed: a DFS candidate runs every one of its T = M*r slots (unused ones are computed and discarded; that is
   what keeps one compile for the whole search). Timed: model A's plain forward, one path forward, and a vmapped
   population of paths (per candidate), all jitted and warmed up; compilations of the path function counted.
2. Fold exactness: exported plain model (transformers) vs the engine's path logits, max |diff| / max |logit|,
   for random paths with scales in [0.5, 1.5], as the residual stream grows against eps (embeddings x k).

Run: python -m benchmarks.dfs_speed   (writes its section of benchmarks/RESULTS.md)
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from benchmarks import RESULTS_PAGE
from benchmarks.common import page_machine, repeat, write_section
from jaxmerge.params import stack


def random_genes(space, rng, lo=0.5, hi=1.5):
    import jax.numpy as jnp
    shape = space.gene_template()["scales"].shape
    return {"indicator": jnp.asarray(rng.normal(size=space.num_slots), jnp.float32),
            "scales": jnp.asarray(rng.uniform(lo, hi, shape), jnp.float32)}


def speed(root: Path, args) -> str:
    import jax
    from jaxmerge import model
    from jaxmerge.dfs import forward, path_spec, with_path
    from jaxmerge.dfs.sources import pool_params, layout_for
    from jaxmerge.io import load
    from tests.tiny import make_tiny_model
    shape = dict(hidden_size=256, intermediate_size=512, num_hidden_layers=4, num_attention_heads=8,
                 num_key_value_heads=4, head_dim=32, vocab_size=2048)
    a = make_tiny_model(root / "a", "llama", seed=0, **shape)
    models = [load(a), load(make_tiny_model(root / "b", perturb_from=a, seed=1))]
    space = layout_for(models, args.repeats)
    spec, pool = path_spec(models[0].spec, space), pool_params(models)
    tokens = np.random.default_rng(0).integers(3, 2048, (args.batch, args.length)).astype(np.int32)
    rng = np.random.default_rng(1)
    one = jax.jit(lambda g: forward(spec, with_path(pool, space.decode(g)), tokens))
    many = jax.jit(jax.vmap(one))
    population = stack([random_genes(space, rng) for _ in range(args.population)])
    plain = repeat(lambda: model.forward_jit(models[0].spec, models[0].params, tokens).block_until_ready(), 5).mean
    path = repeat(lambda: one(random_genes(space, rng)).block_until_ready(), 5).mean
    pop = repeat(lambda: many(population).block_until_ready(), 3).mean / args.population
    return (f"Model: 2 random Llamas, hidden 256, 4 layers each (M = 8), r = {args.repeats} -> T = "
            f"{space.num_slots} slots + tail; batch {args.batch} x {args.length} tokens, float32.\n\n"
            "| forward | s / batch | vs plain A |\n|---|---|---|\n"
            f"| plain model A (4 layers) | {plain:.4f} | 1.0x |\n"
            f"| DFS path, one candidate ({space.num_steps} steps) | {path:.4f} | {path / plain:.1f}x |\n"
            f"| DFS path, vmapped population of {args.population}, per candidate | {pop:.4f} | {pop / plain:.1f}x |\n"
            f"\nCompilations of the path function over {5 + 1} different candidates: {one._cache_size()}.")


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
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--length", type=int, default=64)
    parser.add_argument("--population", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        body = f"Machine: {page_machine()}.\n\n{speed(Path(tmp), args)}\n\n{fold_exactness(Path(tmp))}"
    write_section(RESULTS_PAGE, "dfs: path forward cost and fold exactness (benchmarks/dfs_speed.py)", body)
    print(body)


if __name__ == "__main__":
    main()
