"""The model families: forward time vs transformers per family, a mixture's grouped experts vs every expert
densely, and sliding-window prefill memory at 4x the window.

Forward: one small random model per family (hidden 256, 4 layers, 8 query / 4 kv heads, vocab 4096, every
feature of the family on: tests/tiny.py FULL_FEATURES, windows of 64), a batch of 4 x 256 tokens, float32.
jaxmerge's jitted forward (warm) vs transformers' forward under torch.no_grad at 1 and at 2 threads, the faster
of the two reported (torch slows down at 2 threads when the other core is busy). Logits are checked equal first
(<= 1e-3 at these sizes). Goal: ratio (jaxmerge / transformers) <= 1.0. The load average is written beside the
numbers: the 2 cores are shared. Run: python -m benchmarks.families [--quick]
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from benchmarks import RESULTS_PAGE
from benchmarks.common import module_main, page_machine, repeat, result, write_section

TITLE = "families: forward vs transformers, MoE grouped vs dense, sliding-window memory (benchmarks/families.py)"
DIMS = dict(vocab_size=4096, hidden_size=256, intermediate_size=512, num_hidden_layers=4, num_attention_heads=8,
            num_key_value_heads=4, head_dim=32, max_position_embeddings=4096)
BIGGER = {"moe_intermediate_size": 256, "shared_expert_intermediate_size": 512, "num_experts": 8,
          "num_local_experts": 8, "sliding_window": 64, "original_max_position_embeddings": 128,
          "max_position_embeddings": 4096}


def _config(family: str) -> dict:
    """FULL_FEATURES at benchmark size (the same switches; sizes, windows and experts scaled up)."""
    from tests.tiny import FULL_FEATURES
    cfg = {**DIMS, **{k: v for k, v in FULL_FEATURES[family].items() if k not in ("intermediate_size",)}}
    cfg.update({k: v for k, v in BIGGER.items() if k in cfg})
    if family == "gemma3_text":
        cfg["layer_types"] = ["sliding_attention"] * 3 + ["full_attention"]
    if family == "phi3":  # longrope factors: one per rotated frequency pair (head 32, factor 0.5: 8)
        cfg["rope_parameters"] = {**cfg["rope_parameters"], "short_factor": [1.0] * 8, "long_factor": [4.0] * 8}
    return cfg


def torch_time(hf, tokens, runs: int) -> tuple[float, int]:
    """(best median seconds, its thread count) over torch at 1 and 2 threads."""
    import torch
    best = None
    for threads in (1, 2):
        torch.set_num_threads(threads)
        with torch.no_grad():
            t = repeat(lambda: hf(torch.as_tensor(tokens).long()).logits, runs).median
        best = min(best or (t, threads), (t, threads))
    return best


def forward_rows(quick: bool, root: Path) -> tuple[list[dict], list[str]]:
    import jax
    import torch
    import transformers

    from jaxmerge.io import load
    from jaxmerge.model import forward_jit
    from tests.tiny import FULL_FEATURES, make_tiny_model
    tokens = np.random.default_rng(0).integers(3, DIMS["vocab_size"], (2 if quick else 4, 128 if quick else 256))
    tokens = tokens.astype(np.int32)
    rows, lines, runs = [], [], 2 if quick else 5
    for family in sorted(FULL_FEATURES):
        path = make_tiny_model(root / family, family, seed=0, **_config(family))
        model = load(path)
        params = jax.device_put(model.params)
        ours = repeat(lambda: forward_jit(model.spec, params, tokens).block_until_ready(), runs)
        hf = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        with torch.no_grad():
            err = float(np.abs(hf(torch.as_tensor(tokens).long()).logits.numpy()
                               - np.asarray(forward_jit(model.spec, params, tokens))).max())
        theirs, threads = torch_time(hf, tokens, runs)
        rows.append(result(f"forward: {family} (jaxmerge / transformers)", ours.median, "s", baseline=theirs,
                           goal="ratio <= 1.0", noise=ours.noise, note=f"torch {threads} thread(s); max |dlogit| {err:.1e}"))
        lines.append(f"| {family} | {ours.median * 1e3:.1f} (spread {100 * ours.noise:.0f} %) | {theirs * 1e3:.1f} "
                     f"({threads}) | {ours.median / theirs:.2f} | {err:.1e} |")
    return rows, lines


def moe_rows(quick: bool) -> tuple[list[dict], list[str]]:
    """Grouped vs every-expert compute of one MoE block on T tokens (D 256, expert size 512)."""
    import jax
    import jax.numpy as jnp

    from jaxmerge.arch import ArchSpec
    from jaxmerge.layers import ACTIVATIONS
    from jaxmerge.moe import dense_moe, moe_block
    tokens = 512 if quick else 2048
    rows, lines, act = [], [], ACTIVATIONS["silu"]
    for experts, k in ((8, 2), (64, 8)):
        spec = ArchSpec("mixtral", 1, 256, 512, 1, 8, 4, 32, num_experts=experts, experts_per_token=k,
                        expert_size=512, norm_topk=True)
        rng = np.random.default_rng(0)
        lp = {"router": jnp.asarray(rng.normal(size=(experts, 256)), jnp.float32),
              "experts_gate_up": jnp.asarray(0.05 * rng.normal(size=(experts, 1024, 256)), jnp.float32),
              "experts_down": jnp.asarray(0.05 * rng.normal(size=(experts, 256, 512)), jnp.float32)}
        x = jnp.asarray(rng.normal(size=(tokens, 256)), jnp.float32)
        grouped = jax.jit(lambda x, lp: moe_block(spec, lp, x, act))
        dense = jax.jit(lambda x, lp: dense_moe(spec, lp, x, act))
        err = float(jnp.abs(grouped(x, lp) - dense(x, lp)).max())
        tg = repeat(lambda: grouped(x, lp).block_until_ready(), 3 if quick else 5)
        td = repeat(lambda: dense(x, lp).block_until_ready(), 3 if quick else 5)
        rows.append(result(f"moe: grouped vs dense, {experts} experts top-{k}", tg.median, "s", baseline=td.median,
                           goal="ratio <= 1.0", noise=tg.noise, note=f"{tokens} tokens; max |diff| {err:.1e}"))
        lines.append(f"| {experts} | {k} | {tokens} | {tg.median * 1e3:.1f} | {td.median * 1e3:.1f} | "
                     f"{tg.median / td.median:.2f} | {err:.1e} |")
    return rows, lines


def memory_rows(quick: bool) -> tuple[list[dict], list[str]]:
    """XLA's temporary memory of a prefill of 4 windows, every layer sliding vs every layer full attention."""
    import jax

    from jaxmerge.arch import ArchSpec
    from jaxmerge.model import forward
    from jaxmerge.params import param_shapes
    window = 128 if quick else 512
    spec = ArchSpec("mistral", 4096, 256, 512, 4, 8, 4, 32, sliding_window=window,
                    layer_types=("sliding_attention",) * 4)
    shapes = param_shapes(spec)
    params = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s, np.float32), shapes, is_leaf=lambda s: isinstance(s, tuple))
    tokens = jax.ShapeDtypeStruct((1, 4 * window), np.int32)
    temp = {}
    for name, s in (("sliding", spec), ("full", spec.replace(layer_types=()))):
        compiled = jax.jit(forward, static_argnums=0).lower(s, params, tokens).compile()
        temp[name] = compiled.memory_analysis().temp_size_in_bytes
    rows = [result(f"sliding window: prefill temp memory at 4x the window ({window})", temp["sliding"] / 2**20,
                   "MiB", baseline=temp["full"] / 2**20, goal="ratio <= 1.0")]
    return rows, [f"| {window} | {4 * window} | {temp['sliding'] / 2**20:.1f} | {temp['full'] / 2**20:.1f} | "
                  f"{temp['sliding'] / temp['full']:.2f} |"]


def measure(quick: bool = False, out=None):
    where = page_machine()
    with tempfile.TemporaryDirectory() as tmp:
        fwd, fwd_lines = forward_rows(quick, Path(tmp))
    moe, moe_lines = moe_rows(quick)
    mem, mem_lines = memory_rows(quick)
    load = [round(x, 2) for x in os.getloadavg()]
    body = f"""Machine: {where}; load average at the end {load[0]} / {load[1]} / {load[2]}.
{__doc__.split(chr(10) + chr(10), 1)[1].split("Run:")[0].strip()}

| family | jaxmerge ms | transformers ms (threads) | ratio | max abs logit diff |
|---|---|---|---|---|
{chr(10).join(fwd_lines)}

Mixture of experts, one block (hidden 256, expert size 512): experts grouped by expert (jaxmerge.moe) vs every
expert on every token weighted by the routing (the reference), jitted, warm, median.

| experts | top-k | tokens | grouped ms | dense ms | ratio | max abs diff |
|---|---|---|---|---|---|---|
{chr(10).join(moe_lines)}

Sliding-window prefill: XLA's temporary buffers of a jitted forward (Mistral-shaped, hidden 256, 4 layers, batch
1) over 4 windows of tokens, every layer sliding vs every layer full attention (memory_analysis of the compiled
program).

| window | tokens | sliding MiB | full MiB | ratio |
|---|---|---|---|---|
{chr(10).join(mem_lines)}"""
    return fwd + moe + mem, body


def main() -> None:
    module_main(measure, __doc__)


if __name__ == "__main__":
    import sys
    if "--record" in sys.argv:
        sys.argv.remove("--record")
        rows, text = measure("--quick" in sys.argv)
        write_section(RESULTS_PAGE, TITLE, text)
        print(text)
    else:
        main()
