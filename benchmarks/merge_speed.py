"""Merge speed: jaxmerge vs mergekit-yaml end to end, and jaxmerge's merge kernel vs the copy bound.

    python benchmarks/merge_speed.py [--methods linear,ties,...] [--workdir DIR]

Three ~100M-parameter random Llama checkpoints (a base and two perturbed copies) are written once. Per method:
`jaxmerge merge` and `mergekit-yaml` run as subprocesses on the same recipe (load + merge + write, imports
included); then the jitted `merge_params` alone, warm, against bytes moved (state read + output written)
divided by the measured memcpy bandwidth. Writes a section of benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
DIMS = dict(vocab_size=32000, hidden_size=640, intermediate_size=1792, num_layers=12, num_heads=10,
            num_kv_heads=10, head_dim=64)
METHOD_PARAMS = {
    "linear": {}, "task_arithmetic": {}, "ties": {"density": 0.5}, "dare_ties": {"density": 0.5},
    "breadcrumbs_ties": {"density": 0.5}, "della": {"density": 0.5, "epsilon": 0.1}, "slerp": None,
}


def make_models(work: Path) -> dict[str, str]:
    from jaxmerge.arch import ArchSpec
    from jaxmerge.io import Model, save
    from jaxmerge.params import param_shapes
    spec = ArchSpec(model_type="llama", **DIMS)
    rng = np.random.default_rng(0)
    shapes = param_shapes(spec)
    rand = lambda s, scale: (rng.standard_normal(s, dtype=np.float32) * scale)
    base = {k: rand(v, 0.02) for k, v in shapes.items() if k != "layers"}
    base["layers"] = {k: rand(v, 0.02) for k, v in shapes["layers"].items()}
    paths = {}
    for i, name in enumerate(("base", "ft0", "ft1")):
        path = work / name
        paths[name] = str(path)
        if path.exists():
            continue
        params = base if i == 0 else {k: (v + rand(v.shape, 0.002) if k != "layers" else
                                          {kk: vv + rand(vv.shape, 0.002) for kk, vv in v.items()})
                                      for k, v in base.items()}
        save(Model(spec, params, None), path, max_shard_size="2GB")
    return paths


def recipe(method: str, paths: dict[str, str]) -> dict:
    if method == "slerp":
        return dict(merge_method="slerp", base_model=paths["base"], dtype="float32",
                    models=[dict(model=paths["base"]), dict(model=paths["ft0"])], parameters=dict(t=0.4))
    extra = METHOD_PARAMS[method]
    models = [dict(model=paths[n], parameters=dict(weight=0.5, **extra)) for n in ("ft0", "ft1")]
    if method == "linear":
        return dict(merge_method="linear", dtype="float32", models=[dict(model=paths["base"], parameters=dict(
            weight=0.5))] + models)
    return dict(merge_method=method, base_model=paths["base"], dtype="float32", models=models)


def timed(cmd: list[str]) -> float:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed: {done.stderr[-2000:]}")
    return time.perf_counter() - start


def copy_bandwidth() -> float:
    """GB/s of (read + write) bytes for a large np.copyto, best of 5."""
    a = np.ones(100_000_000, np.float32)
    b = np.empty_like(a)
    best = min(_once(lambda: np.copyto(b, a)) for _ in range(5))
    return 2 * a.nbytes / best / 1e9


def _once(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def kernel_seconds(method: str, rec: dict) -> tuple[float, int]:
    """Warm time of the jitted merge_params (best of 3), and bytes of state read + output written."""
    import jax
    import jax.numpy as jnp
    from jaxmerge.merge import METHODS, init_state, merge_params, resolve_hparams
    from jaxmerge.merge.build import build_sources, load_models
    from jaxmerge.merge.recipe import parse_recipe
    r = parse_recipe(rec)
    sources = build_sources(r, load_models(r))
    m = METHODS[method]
    state = init_state(m, sources)
    hp = resolve_hparams(r, sources.spec, sources.names)
    f = jax.jit(merge_params, static_argnums=(0, 4))
    jax.block_until_ready(f(m, state, hp, jax.random.key(0), jnp.float32))
    best = min(_once(lambda: jax.block_until_ready(f(m, state, hp, jax.random.key(1), jnp.float32)))
               for _ in range(3))
    out_bytes = sum(x.size * 4 for x in jax.tree.leaves(jax.eval_shape(
        lambda: f(m, state, hp, jax.random.key(0), jnp.float32))))
    read = sum(x.nbytes for x in jax.tree.leaves(state) if x.ndim > 1 or x.size > 1)
    return best, read + out_bytes


def machine() -> str:
    cpu = platform.processor()
    try:
        cpu = re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text())[1]
    except (OSError, TypeError):
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    import jax
    return (f"{cpu}; {os.cpu_count()} cores visible; {mem:.0f} GiB RAM; jax {jax.__version__}; "
            f"load average at start {os.getloadavg()[0]:.1f} (machine shared with other jobs)")


def write_results(lines: list[str]) -> None:
    path = ROOT / "benchmarks" / "RESULTS.md"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    head = "## merge_speed (merge methods, issue #3)"
    text = re.sub(rf"\n{re.escape(head)}\n.*?(?=\n## |\Z)", "", text, flags=re.S)
    path.write_text(text.rstrip() + "\n\n" + head + "\n" + "\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--methods", default="linear,task_arithmetic,ties,dare_ties,slerp")
    ap.add_argument("--workdir", default="/tmp/jaxmerge-merge-speed")
    args = ap.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    lines = [f"Machine: {machine()}", "", f"Models: 3 x random Llama {DIMS} (~102M params each, float32).", "",
             f"memcpy bandwidth (read+write): {copy_bandwidth():.1f} GB/s", "",
             "| method | jaxmerge e2e s | mergekit-yaml e2e s | speedup | kernel s | kernel GB moved | "
             "copy-bound s | kernel / copy bound |", "|---|---|---|---|---|---|---|---|"]
    bw = float(lines[4].split(": ")[1].split()[0])
    paths = make_models(work)
    for method in args.methods.split(","):
        rec = recipe(method, paths)
        rpath = work / f"{method}.yml"
        rpath.write_text(yaml.safe_dump(rec))
        ours = timed([sys.executable, "-m", "jaxmerge.cli", "merge", str(rpath), str(work / f"out-jm-{method}"),
                      "--overwrite"])
        mergekit = timed(["mergekit-yaml", str(rpath), str(work / f"out-mk-{method}"), "--allow-crimes",
                          "--no-copy-tokenizer"])
        secs, moved = kernel_seconds(method, rec)
        bound = moved / 1e9 / bw
        lines.append(f"| {method} | {ours:.1f} | {mergekit:.1f} | {mergekit / ours:.1f}x | {secs:.3f} | "
                     f"{moved / 1e9:.2f} | {bound:.3f} | {secs / bound:.1f}x |")
        print(lines[-1], flush=True)
    write_results(lines)


if __name__ == "__main__":
    main()
