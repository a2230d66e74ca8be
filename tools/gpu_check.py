"""GPU readiness check: throughput and memory of one generation step on a random-weight Llama, as JSON.

    python tools/gpu_check.py --out gpu_check.json            # on a GPU machine (~0.5B model, population 16)
    python tools/gpu_check.py --dry-run --out /tmp/x.json     # the same code path, tiny, on CPU, seconds

Builds the sources with jaxmerge itself (random weights on the device, no transformers, no downloads): a base
and two "fine-tunes", a task_arithmetic genome with one weight per model and layer, and a teacher-forced
log-likelihood fitness on random tokens. For each memory mode it times the compiled generation step and the
bare forward passes it contains, and reports candidates/s, step/forward ratio, achieved TFLOP/s (forward
FLOPs = 2 x params x tokens per candidate), MFU against --peak-tflops, and the device's peak memory.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SIZES = {  # name -> ArchSpec fields, tokens per candidate (batch, seq)
    "dry": (dict(vocab_size=128, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                 head_dim=8), (2, 16)),
    "cpu": (dict(vocab_size=4096, hidden_size=256, intermediate_size=1024, num_layers=4, num_heads=8,
                 num_kv_heads=4, head_dim=32), (2, 32)),  # benchmarks/memory_modes.py
    "0.5b": (dict(vocab_size=32000, hidden_size=1024, intermediate_size=4096, num_layers=24, num_heads=16,
                  num_kv_heads=8, head_dim=64), (8, 256)),
}


def build(size: str, dtype: str, population: int, mode: str):
    import jax
    import jax.numpy as jnp

    from jaxmerge.arch import ArchSpec
    from jaxmerge.ps.fused import FusedSpec, fused_decoder, unmerged
    from jaxmerge.ps.genome import Gene, GeneSpec
    from jaxmerge.fitness.score import score
    from jaxmerge.merge import METHODS, Sources, init_state, merge_params
    from jaxmerge.params import param_shapes
    fields, (batch, seq) = SIZES[size]
    spec = ArchSpec("llama", **fields)
    shapes = param_shapes(spec)
    is_shape = lambda x: isinstance(x, tuple)  # noqa: E731
    leaves, tree = jax.tree.flatten(shapes, is_leaf=is_shape)
    keys = jax.random.split(jax.random.PRNGKey(0), len(leaves))
    base = tree.unflatten([0.02 * jax.random.normal(k, s, dtype) for k, s in zip(keys, leaves)])
    models = jax.tree.map(lambda b: jnp.stack([b + 0.002 * jax.random.normal(jax.random.PRNGKey(i), b.shape, dtype)
                                               for i in (1, 2)]), base)
    method = METHODS["task_arithmetic"]
    state = init_state(method, Sources(spec, base, models, ("a", "b")))
    del models
    genome = GeneSpec(spec, 2, (Gene("weight", True, 0.5, 0.0, 1.0),), layers_per_group=1,
                      fixed=(("lambda", 1.0, False), ("normalize", 0.0, False)))
    tokens = jax.random.randint(jax.random.PRNGKey(3), (batch, seq), 0, spec.vocab_size)
    ones = jnp.ones_like(tokens)
    if mode == "fused":
        fs, dec = FusedSpec(spec, method, dtype), fused_decoder()
        fitness = lambda raw, key, data: score(fs, unmerged(data["merge"], genome.hparams(raw), key),  # noqa: E731
                                               tokens, ones, ones, decoder=dec).logprob.mean()
    else:
        fitness = lambda raw, key, data: score(spec, merge_params(method, data["merge"], genome.hparams(raw),  # noqa
                                                                  key, jnp.dtype(dtype)), tokens, ones, ones).logprob.mean()
    # each forward on its own copy of the batch (an argument): a mapped function that ignores its input is
    # loop-invariant, and XLA hoists it out of the loop, so the baseline would be one forward, not `population`
    copies = jnp.repeat(tokens[None], population, axis=0)
    mapped = jax.jit(lambda p, tk: jax.lax.map(lambda t: score(spec, p, t, ones, ones).logprob.mean(), tk))
    forward = lambda p: mapped(p, copies)  # noqa: E731
    n_params = sum(int(jnp.prod(jnp.asarray(s))) for s in leaves)
    return spec, genome, {"merge": state}, fitness, forward, base, n_params, batch * seq


def timed(fn, *args, repeats: int):
    import jax
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return out, first, min(times)


def measure(size: str, dtype: str, population: int, batch: int, mode: str, repeats: int, peak_tflops: float):
    import jax

    from jaxmerge.evolve.step import initial_state, make_step
    from jaxmerge.evolve.strategy import make_search
    spec, genome, data, fitness, forward, base, n_params, tokens = build(size, dtype, population, mode)
    search = make_search("Sep_CMA_ES", population, genome.size, 0.1)
    step = make_step(search, fitness, batch)
    state = initial_state(search, genome.initial_raw(), jax.random.PRNGKey(1), None)
    (state, _), first, step_s = timed(lambda s: step(s, data), state, repeats=repeats)
    _, _, forward_s = timed(forward, base, repeats=repeats)
    flops = 2.0 * n_params * tokens * population
    stats = jax.local_devices()[0].memory_stats() or {}
    return {"mode": mode, "population": population, "batch_size": batch, "params": n_params,
            "tokens_per_candidate": tokens, "compile_and_first_step_s": first, "step_s": step_s,
            "forward_s": forward_s, "step_over_forward": step_s / forward_s,
            "candidates_per_s": population / step_s, "achieved_tflops": flops / step_s / 1e12,
            "mfu": flops / step_s / 1e12 / peak_tflops if peak_tflops else None,
            "peak_bytes": stats.get("peak_bytes_in_use"), "compiles": step._cache_size()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--dry-run", action="store_true", help="tiny model on CPU (checks the code path)")
    parser.add_argument("--population", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=1,
                        help="candidates in flight (the engine's memory.batch_size; 0: all; try 0 on a GPU)")
    parser.add_argument("--modes", default="materialize,fused")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--size", choices=sorted(SIZES), help="model size (default: 0.5b; dry with --dry-run)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="device peak (H100/H200 bf16 dense)")
    args = parser.parse_args(argv)
    import jax
    size = args.size or ("dry" if args.dry_run else "0.5b")
    dtype = "float32" if args.dry_run or jax.default_backend() == "cpu" else args.dtype
    report = {"device": str(jax.devices()[0].device_kind), "backend": jax.default_backend(), "size": size,
              "dtype": dtype, "jax": jax.__version__, "runs": []}
    for mode in args.modes.split(","):
        report["runs"].append(measure(size, dtype, args.population, args.batch_size or args.population, mode,
                                      1 if args.dry_run else args.repeats, args.peak_tflops))
        Path(args.out).write_text(json.dumps(report, indent=2))  # after each mode: a timeout keeps the rest
        print(json.dumps(report["runs"][-1]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
