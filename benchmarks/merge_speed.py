"""Merge speed: `jaxmerge merge` vs `mergekit-yaml` end to end, against the I/O floor, and jaxmerge's merge
kernel vs the copy bound.

Three random Llama checkpoints (a base and two perturbed copies; ~102M params each, quick: ~1M) are written once.
Per method, on the same recipe, as subprocesses (imports, load, merge, write all counted): `jaxmerge merge` with
a fresh compilation cache (cold, reported in the note) and then warm (the figure: a user's second merge of an
architecture), and `mergekit-yaml` with torch at 1 and at 2 threads (OMP_NUM_THREADS; torch slows down badly
at 2 threads when the other core is busy), the faster reported (--quick: 1 thread only). Start-up (a process
that imports what `jaxmerge merge` imports, then exits) is timed on its own; the merge itself (end to end minus
start-up) is compared with the I/O floor: the bytes it must read (the sources' files) and write (the output's)
over this disk's read and write bandwidth, measured in the same run (reading the source files; writing as many
bytes as the output). Then the jitted `merge_params` alone, warm, against the bytes it must move (state read +
output written) divided by the measured memcpy bandwidth: how close the kernel is to free.

Run: python -m benchmarks.merge_speed [--quick] [--e2e-only]   (prints its Markdown section; --e2e-only: no
kernel timings)
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import NamedTuple

import numpy as np
import yaml

from benchmarks.common import Timing, measured_run, module_main, repeat, result
from jaxmerge.hugepages import without_huge_pages

NEW = ("nearswap", "ram", "ramplus_tl", "sce", "multislerp", "karcher", "arcee_fusion")  # mergekit 0.1.5's additions
SETTINGS = {  # model dimensions, methods timed end to end, methods whose kernel is timed, runs per figure,
    #           mergekit's torch thread counts (the faster is reported)
    False: dict(dims=dict(vocab_size=32000, hidden_size=640, intermediate_size=1792, num_layers=12, num_heads=10,
                          num_kv_heads=10, head_dim=64),
                e2e=("linear", "ties", "dare_ties"), kernel=("linear", "task_arithmetic", "ties", "dare_ties",
                                                             "slerp", *NEW), runs=2, torch_threads=(1, 2)),
    True: dict(dims=dict(vocab_size=1024, hidden_size=128, intermediate_size=256, num_layers=2, num_heads=4,
                         num_kv_heads=4, head_dim=32),
               e2e=("ties",), kernel=("ties",), runs=1, torch_threads=(1,)),  # quick: the code path, not a figure
}
E2E_GOAL = {"ties": "ratio >= 5", "dare_ties": "ratio >= 5"}  # issue #19's goal; linear is the I/O reference
FLOOR_GOAL = "ratio <= 1.5"  # the merge itself (start-up excluded) / the I/O floor
STARTUP = ("import jaxmerge.cli, jaxmerge.commands.merge, jaxmerge.merge.build, jaxmerge.merge.base, "
           "jaxmerge.merge.output, jaxmerge.merge.resolve, rich.progress")
KERNEL_GOAL = "ratio <= 3"
METHOD_PARAMS = {"linear": {}, "task_arithmetic": {}, "ties": {"density": 0.5}, "dare_ties": {"density": 0.5},
                 "slerp": None, "ram": {}, "ramplus_tl": {}, "sce": {}, "multislerp": {}}
SHARED_PARAMS = {"nearswap": {"t": 0.001}, "sce": {"select_topk": 0.5}}  # one value per merge
ONE_MODEL = ("nearswap", "arcee_fusion")  # one model against the base


def make_models(work: Path, dims: dict) -> dict[str, str]:
    from jaxmerge.arch import ArchSpec
    from jaxmerge.io import Model, save
    from jaxmerge.params import param_shapes
    spec = ArchSpec(model_type="llama", **dims)
    rng = np.random.default_rng(0)
    shapes = param_shapes(spec)

    def rand(shape, scale):
        return rng.standard_normal(shape, dtype=np.float32) * scale
    base = {k: rand(v, 0.02) for k, v in shapes.items() if k != "layers"}
    base["layers"] = {k: rand(v, 0.02) for k, v in shapes["layers"].items()}
    paths = {}
    for i, name in enumerate(("base", "ft0", "ft1")):
        paths[name] = str(work / name)
        params = base if i == 0 else {k: (v + rand(v.shape, 0.002) if k != "layers" else
                                          {kk: vv + rand(vv.shape, 0.002) for kk, vv in v.items()})
                                      for k, v in base.items()}
        save(Model(spec, params, None), work / name, max_shard_size="2GB")
    return paths


def recipe(method: str, paths: dict[str, str]) -> dict:
    if method == "slerp":
        return dict(merge_method="slerp", base_model=paths["base"], dtype="float32",
                    models=[dict(model=paths["base"]), dict(model=paths["ft0"])], parameters=dict(t=0.4))
    if method in ONE_MODEL or method == "karcher":  # no weights; karcher merges all three (it has no base)
        names = ("ft0",) if method in ONE_MODEL else ("base", "ft0", "ft1")
        return dict(merge_method=method, dtype="float32", parameters=SHARED_PARAMS.get(method, {}),
                    models=[dict(model=paths[n]) for n in names], **({} if method == "karcher" else
                                                                       {"base_model": paths["base"]}))
    weight = {} if method in ("ram", "ramplus_tl", "sce") else {"weight": 0.5}
    models = [dict(model=paths[n], parameters=dict(**weight, **METHOD_PARAMS[method])) for n in ("ft0", "ft1")]
    if method == "linear":
        return dict(merge_method="linear", dtype="float32",
                    models=[dict(model=paths["base"], parameters=dict(weight=0.5))] + models)
    return dict(merge_method=method, base_model=paths["base"], dtype="float32", models=models,
                parameters=SHARED_PARAMS.get(method, {}))


def timed(cmd: list[str], env: dict, peaks: list[int] | None = None) -> float:
    """Wall seconds of one run of `cmd` in the user's environment (not this benchmark's huge pages); its own
    peak resident memory (bytes, common.measured_run) is appended to `peaks`."""
    seconds, peak = measured_run(cmd, {**without_huge_pages(dict(os.environ)), "HF_HUB_OFFLINE": "1", **env})
    if peaks is not None:
        peaks.append(peak)
    return seconds


def copy_bandwidth() -> float:
    """GB/s of (read + write) bytes for a large np.copyto, best of 5."""
    a = np.ones(50_000_000, np.float32)
    b = np.empty_like(a)
    return 2 * a.nbytes / repeat(lambda: np.copyto(b, a), 5).min / 1e9


def kernel_timing(method: str, rec: dict, runs: int) -> tuple[Timing, int]:
    """Warm timings of the jitted merge_params, and the bytes of state read + output written."""
    import jax
    import jax.numpy as jnp

    from jaxmerge.merge import METHODS, init_state, merge_params, resolve_hparams
    from jaxmerge.merge.build import build_sources, load_models
    from jaxmerge.merge.recipe import parse_recipe
    r = parse_recipe(rec)
    sources = build_sources(r, load_models(r)).stacked()
    m = METHODS[method]
    state = init_state(m, sources)
    hp = resolve_hparams(r, sources.spec, sources.names)
    f = jax.jit(merge_params, static_argnums=(0, 4))
    timing = repeat(lambda: jax.block_until_ready(f(m, state, hp, jax.random.key(1), jnp.float32)), max(runs, 3))
    out = jax.eval_shape(lambda: f(m, state, hp, jax.random.key(0), jnp.float32))
    moved = sum(x.size * 4 for x in jax.tree.leaves(out))
    moved += sum(x.nbytes for x in jax.tree.leaves(state) if x.ndim > 1 or x.size > 1)
    return timing, moved


def tool(name: str) -> str:
    """A console script of this Python's environment (beside sys.executable), not whatever PATH finds first:
    a venv that is not activated must still time its own mergekit."""
    return str(Path(sys.executable).with_name(name))


class EndToEnd(NamedTuple):
    cold: float          # jaxmerge with a fresh compilation cache, seconds
    warm: Timing         # jaxmerge, cache filled
    mergekit: Timing     # mergekit-yaml at its faster torch thread count
    threads: int
    peak_ours: int       # peak RSS bytes, the largest over jaxmerge's warm runs
    peak_theirs: int     # the same for mergekit-yaml at `threads`


def end_to_end(method: str, rpath: Path, work: Path, runs: int, torch_threads: tuple[int, ...]) -> EndToEnd:
    cache = {"JAXMERGE_COMPILATION_CACHE": str(work / f"xla-{method}")}
    ours = [sys.executable, "-m", "jaxmerge.cli", "merge", str(rpath), str(work / f"out-jm-{method}"), "--overwrite"]
    cold = timed(ours, cache)
    peaks: list[int] = []
    warm = repeat(lambda: timed(ours, cache, peaks), runs, warmup=0)
    theirs = [tool("mergekit-yaml"), str(rpath), str(work / f"out-mk-{method}"), "--allow-crimes",
              "--no-copy-tokenizer"]
    their_peaks: dict[int, list[int]] = {n: [] for n in torch_threads}
    by_threads = {n: repeat(lambda n=n: timed(theirs, {"OMP_NUM_THREADS": str(n)}, their_peaks[n]), runs, warmup=0)
                  for n in torch_threads}
    threads = min(by_threads, key=lambda n: by_threads[n].median)
    return EndToEnd(cold, warm, by_threads[threads], threads, max(peaks), max(their_peaks[threads]))


def startup_timing(runs: int) -> Timing:
    """A process that imports what `jaxmerge merge` imports and exits: the part of end to end that is not merging."""
    return repeat(lambda: timed([sys.executable, "-c", STARTUP], {}), runs + 1, warmup=1)


def disk_bandwidth(files: list[Path], work: Path) -> tuple[float, float]:
    """(read, write) bytes/s of this disk as a merge meets it: the source files read whole (as the merge reads
    them: after they were written, so mostly from the page cache, as for the merge), and a third as many bytes
    (one source's worth, the output) written to a new file and closed, not fsynced (neither merge fsyncs)."""
    def read_all():
        for f in files:
            with open(f, "rb") as fh:
                while fh.read(1 << 24):
                    pass
    size = sum(f.stat().st_size for f in files)
    read = repeat(read_all, 3).min
    block = np.ones(1 << 22, np.uint8).tobytes()

    def write(n=size // 3):
        with open(work / "bandwidth.bin", "wb") as fh:
            for _ in range(max(1, n // len(block))):
                fh.write(block)
    wrote = max(1, (size // 3) // len(block)) * len(block)
    t_write = repeat(write, 2).min
    (work / "bandwidth.bin").unlink()
    return size / read, wrote / t_write


def weight_files(path) -> list[Path]:
    return sorted(Path(path).glob("*.safetensors"))


def measure(quick: bool = False, out=None, kernels: bool = True) -> tuple[list[dict], str]:
    """(results.json rows, Markdown section). `out` (for plots) is unused here; `kernels` off: end to end only."""
    s = SETTINGS[quick] if kernels else {**SETTINGS[quick], "kernel": ()}
    load_start = os.getloadavg()
    bandwidth = copy_bandwidth()
    results, e2e_rows, kernel_rows = [], [], []
    with tempfile.TemporaryDirectory(prefix="jaxmerge-merge-speed-") as tmp:
        work = Path(tmp)
        paths = make_models(work, s["dims"])
        params = _count(paths["base"])
        startup = startup_timing(s["runs"])
        read_bw, write_bw = disk_bandwidth([f for p in paths.values() for f in weight_files(p)], work)
        for method in s["e2e"]:
            rpath = work / f"{method}.yml"
            rpath.write_text(yaml.safe_dump(recipe(method, paths)))
            e2e = end_to_end(method, rpath, work, s["runs"], s["torch_threads"])
            warm, mergekit = e2e.warm, e2e.mergekit
            read = sum(f.stat().st_size for m in referenced_paths(recipe(method, paths)) for f in weight_files(m))
            wrote = sum(f.stat().st_size for f in weight_files(work / f"out-jm-{method}"))
            floor = read / read_bw + wrote / write_bw
            merging = warm.median - startup.median
            results.append(result(f"merge end to end: {method} (jaxmerge merge vs mergekit-yaml, merges/min)",
                                  60 / warm.median, "merges/min", baseline=60 / mergekit.median,
                                  goal=E2E_GOAL.get(method), noise=warm.noise,
                                  note=f"cold compile cache {e2e.cold:.1f} s; mergekit at {e2e.threads} torch "
                                       f"thread(s), noise {mergekit.noise:.2f}"))
            results.append(result(f"merge itself: {method} (end to end minus start-up) / I/O floor", merging, "s",
                                  baseline=floor, goal=FLOOR_GOAL if method in E2E_GOAL else None))
            results.append(result(f"merge peak RSS: {method} (jaxmerge merge vs mergekit-yaml)", e2e.peak_ours / 1e9,
                                  "GB", baseline=e2e.peak_theirs / 1e9))
            e2e_rows.append(f"| {method} | {e2e.cold:.1f} | {warm.text()} | {mergekit.text()} ({e2e.threads}) | "
                            f"{mergekit.median / warm.median:.1f}x | {merging:.2f} | {read / 1e9:.2f} + "
                            f"{wrote / 1e9:.2f} | {floor:.2f} | {merging / floor:.1f}x | "
                            f"{e2e.peak_ours / 1e9:.2f} / {e2e.peak_theirs / 1e9:.2f} |")
        results.append(result("merge start-up: a process importing what jaxmerge merge imports", startup.median,
                              "s", noise=startup.noise))
        for method in s["kernel"]:
            timing, moved = kernel_timing(method, recipe(method, paths), s["runs"])
            bound = moved / 1e9 / bandwidth
            results.append(result(f"merge kernel: {method} time / copy bound", timing.median, "s", baseline=bound,
                                  goal=KERNEL_GOAL, noise=timing.noise))
            kernel_rows.append(f"| {method} | {timing.text()} | {moved / 1e9:.2f} | {bound:.3f} | "
                               f"{timing.median / bound:.1f}x |")
    loads = f"load average {load_start[0]:.2f} / {load_start[1]:.2f} (1 / 5 min) at the start, " \
            f"{os.getloadavg()[0]:.2f} / {os.getloadavg()[1]:.2f} at the end"
    return results, section(s, params, bandwidth, e2e_rows, kernel_rows, startup, read_bw, write_bw, loads)


def referenced_paths(rec: dict) -> list[str]:
    names = [m["model"] for m in rec["models"]] + ([rec["base_model"]] if rec.get("base_model") else [])
    return list(dict.fromkeys(names))


def _count(path: str) -> int:
    import jax

    from jaxmerge.io import load
    return sum(x.size for x in jax.tree.leaves(load(path).params))


def section(s, params, bandwidth, e2e_rows, kernel_rows, startup, read_bw, write_bw, loads) -> str:
    kernels = f"""

| method | kernel (jitted merge_params, warm) | GB moved | copy bound s | kernel / copy bound |
|---|---|---|---|---|
{chr(10).join(kernel_rows)}

Copy bound = bytes of merge state read + merged model written at memcpy speed (goal: kernel <= 3x of it; issue
#19 asks <= 2x for dare_ties).""" if kernel_rows else ""
    return f"""Models: 3 x random Llama (hidden {s['dims']['hidden_size']}, {s['dims']['num_layers']} layers, vocab
{s['dims']['vocab_size']}; {params / 1e6:.1f}M params each, float32 safetensors). Recipes: weight 0.5 per model,
density 0.5 where the method has one. Medians over runs, spread = (max - min) / median.

| method | jaxmerge cold cache s | jaxmerge warm s | mergekit-yaml s (torch threads) | speed-up | merge itself s | GB read + written | I/O floor s | merge / floor | peak RSS GB jaxmerge / mergekit |
|---|---|---|---|---|---|---|---|---|---|
{chr(10).join(e2e_rows)}

End to end counts the process start, imports, loading, merging and writing on both sides (goal >= 5x for ties and
dare_ties; linear shows the I/O floor); mergekit's figure is the faster of torch at {' and '.join(map(str, s['torch_threads']))} thread(s). Start-up
(imports of `jaxmerge merge`, no merge): {startup.text()}; the merge itself = end to end minus start-up (goal
<= 1.5x the I/O floor). Disk as the merge meets it: read {read_bw / 1e9:.2f} GB/s (source files, page cache),
write {write_bw / 1e9:.2f} GB/s (page cache, as the merges write). memcpy (read + write): {bandwidth:.1f} GB/s.
This run: {loads}.{kernels}"""


if __name__ == "__main__":
    if "--e2e-only" in sys.argv:  # end to end and start-up only: python -m benchmarks.merge_speed --e2e-only
        sys.argv.remove("--e2e-only")
        module_main(lambda quick, out: measure(quick, out, kernels=False), __doc__)
    else:
        module_main(measure, __doc__)
