"""Peak host memory of loading sources onto a mesh whose model axis spans 2 processes: sliced vs full copies.

Random Llama sources are written as safetensors (float32) into a temporary directory. Then, for each way of
loading, 2 processes x 1 CPU device on localhost (jax.distributed, as a multi-host run) build a (pop 1, model 2)
mesh and load the stacked sources [M, ...] / [M, L, ...] onto it, and each reports its own peak RSS (VmHWM):

- full: the old way: `jaxmerge.io.load` of every source (numpy), `np.stack`, then `place` onto the mesh;
- sliced: `jaxmerge.evolve.sliced`: each process reads only the blocks its device holds.

The figure is a process's peak RSS above its resident memory just before loading (JAX up, mesh built), as a fraction of the sources' total bytes; the goal is that a
process holds about its half: sliced <= 0.6 of the total. Each process also counts the tensor bytes it read.

Run: python -m benchmarks.load_rss [--quick]   (prints its Markdown section)
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.common import result
from jaxmerge.params import stack

SIZES = {  # per source: (hidden, intermediate, layers, heads, vocab)
    False: dict(hidden=512, intermediate=1536, layers=8, heads=8, vocab=32000),  # 59.8M params, 239 MB f32
    True: dict(hidden=256, intermediate=768, layers=2, heads=4, vocab=8192),     # 5.9M params, 24 MB f32
}
NUM_SOURCES = 3
GOAL = "ratio <= 0.6"


def hf_config(hidden: int, intermediate: int, layers: int, heads: int, vocab: int) -> dict:
    return {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": hidden,
            "intermediate_size": intermediate, "num_hidden_layers": layers, "num_attention_heads": heads,
            "num_key_value_heads": heads, "vocab_size": vocab, "rms_norm_eps": 1e-5, "max_position_embeddings": 512,
            "tie_word_embeddings": False, "dtype": "float32"}


def write_sources(root: Path, size: dict, count: int = NUM_SOURCES) -> tuple[list[Path], int]:
    """`count` random float32 Llama checkpoints (2 shards each); (their paths, their total tensor bytes)."""
    from jaxmerge.arch import ArchSpec
    from jaxmerge.io import Model, save
    from jaxmerge.params import param_shapes
    spec = ArchSpec.from_hf_config(hf_config(**size), "benchmark")
    shapes = param_shapes(spec)
    paths, total = [], 0
    for i in range(count):
        rng = np.random.default_rng(i)

        def rand(shape):
            return rng.standard_normal(shape, dtype=np.float32) * 0.02
        params = {k: rand(s) for k, s in shapes.items() if k != "layers"}
        params["layers"] = {k: rand(s) for k, s in shapes["layers"].items()}
        model = Model(spec, params)
        total += sum(x.nbytes for x in (*[v for k, v in params.items() if k != "layers"],
                                        *params["layers"].values()))
        half = model.num_parameters * 4 // 2 + 1
        paths.append(save(model, root / f"source{i}", max_shard_size=half))
        del params, model
    return paths, total


def worker(mode: str, paths: list[str], coordinator: str, process_id: int, report: Path, verify: bool = False):
    """One of the 2 processes: join the run, load the sources `mode`'s way, write peak RSS and bytes read (and
    with `verify`, afterwards, whether its shards equal `jaxmerge.io.load` + stack)."""
    import jax
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=2, process_id=process_id)
    from jaxmerge.evolve import sliced
    from jaxmerge.evolve.mesh import build_mesh, data_shardings, place
    from jaxmerge.io import load
    mesh = build_mesh(1, 2, 1)
    warm = {"embed": np.zeros((2, 2), np.float32)}
    jax.block_until_ready(place(warm, data_shardings(mesh, warm)))
    idle = resident()
    read = [0]
    real = sliced.read_slice

    def counting(file, name, index):
        part = real(file, name, index)
        read[0] += part.nbytes
        return part
    sliced.read_slice = counting  # every byte read from a file goes through read_slice
    if mode == "sliced":
        checkpoints = [sliced.open_checkpoint(p) for p in paths]
        held = sliced.load_table(stack([c.table for c in checkpoints]), checkpoints[0].spec, mesh,
                                 "float32")
    else:
        stacked = stack([load(p, dtype="float32").params for p in paths])
        read[0] = sum(x.nbytes for x in jax.tree.leaves(stacked))
        held = place(stacked, data_shardings(mesh, stacked))
        del stacked
    jax.block_until_ready(held)
    local = sum(s.data.nbytes for x in jax.tree.leaves(held) for s in x.addressable_shards)
    found = {"idle_rss": idle, "peak_rss": rss(), "bytes_read": read[0], "device_bytes": local}
    if verify:
        want = stack([load(p, dtype="float32").params for p in paths])
        found["equal"] = all(np.array_equal(np.asarray(s.data), w[s.index]) for x, w in
                             zip(jax.tree.leaves(held), jax.tree.leaves(want)) for s in x.addressable_shards)
    report.write_text(json.dumps(found))


def rss() -> int:
    """This process's peak resident memory so far, bytes: VmHWM (Linux /proc), not ru_maxrss, which execve keeps
    from the parent (a worker started by a big `jaxmerge bench` process would report the parent's peak)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def resident() -> int:
    """This process's resident memory now, bytes (Linux /proc)."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def launch(mode: str, paths: list[Path], tmp: Path, timeout: float = 600, verify: bool = False) -> list[dict]:
    """Run `mode` in 2 processes x 1 CPU device; each one's report."""
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1", "JAX_PLATFORMS": "cpu"}
    coordinator = f"localhost:{free_port()}"
    reports = [tmp / f"{mode}{i}.json" for i in range(2)]
    procs = [subprocess.Popen([sys.executable, "-m", "benchmarks.load_rss", "--worker", mode, "--coordinator",
                               coordinator, "--process-id", str(i), "--report", str(reports[i]),
                               *(["--verify"] if verify else []), *map(str, paths)], env=env, cwd=Path(__file__).resolve().parents[1],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    for p in procs:
        out, _ = p.communicate(timeout=timeout)
        assert p.returncode == 0, f"{mode} worker failed:\n{out[-3000:]}"
    return [json.loads(r.read_text()) for r in reports]


def measure(quick: bool, out: Path) -> tuple[list[dict], str]:
    size = SIZES[quick]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths, total = write_sources(tmp, size)
        runs = {mode: launch(mode, paths, tmp) for mode in ("full", "sliced")}
    above = {mode: max(r["peak_rss"] - r["idle_rss"] for r in runs[mode]) for mode in runs}
    rows = [result("load: sliced, peak RSS above idle per process / sources' bytes", above["sliced"] / 2**20, "MiB",
                   baseline=total / 2**20, goal=GOAL, note="2 processes x 1 CPU device, model axis over both"),
            result("load: full host copies, peak RSS above idle per process / sources' bytes",
                   above["full"] / 2**20, "MiB", baseline=total / 2**20, note="io.load + np.stack + place")]
    return rows, markdown(size, total, runs, above)


def markdown(size: dict, total: int, runs: dict, above: dict) -> str:
    mib = 2**20
    ratio = above["sliced"] / total
    lines = [f"{NUM_SOURCES} random float32 Llama sources (hidden {size['hidden']}, {size['layers']} layers, vocab "
             f"{size['vocab']}; 2 safetensors shards each), {total / mib:.0f} MiB in all, loaded as the stacked "
             f"sources onto a (pop 1, model 2) mesh over 2 processes x 1 CPU device (jax.distributed on "
             f"localhost). Peak RSS (VmHWM) of each process, and how much of it came with the load: idle = the same "
             f"process's resident memory just before loading (JAX up, modules imported, mesh built).", "",
             "| way | process | idle MiB | peak MiB | above idle MiB | / sources' bytes | tensor bytes read MiB | "
             "on its device MiB |", "|---|---|---|---|---|---|---|---|"]
    for mode in ("full", "sliced"):
        for i, r in enumerate(runs[mode]):
            extra = r["peak_rss"] - r["idle_rss"]
            lines.append(f"| {mode} | {i} | {r['idle_rss'] / mib:.0f} | {r['peak_rss'] / mib:.0f} | {extra / mib:.0f} | "
                         f"{extra / total:.2f} | "
                         f"{r['bytes_read'] / mib:.0f} | {r['device_bytes'] / mib:.0f} |")
    met = "met" if ratio <= 0.6 else "**not met**"
    lines += ["", f"Goal: a process's peak RSS above idle <= 0.6 of the sources' bytes when loading sliced: "
              f"{ratio:.2f} ({met}); the full-copy way: {above['full'] / total:.2f}."]
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--worker", choices=("full", "sliced"))
    parser.add_argument("--coordinator")
    parser.add_argument("--process-id", type=int)
    parser.add_argument("--report", type=Path)
    parser.add_argument("--verify", action="store_true")
    parser.add_argument("paths", nargs="*")
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.worker, args.paths, args.coordinator, args.process_id, args.report, args.verify)
    rows, body = measure(args.quick, Path("."))
    print(body)
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
