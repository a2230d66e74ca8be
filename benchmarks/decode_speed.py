"""Greedy decoding speed: jaxmerge (jitted prefill + scanned KV-cache decode) vs transformers generate.

One run on the same small random Llama and the same left-padded prompts; both warmed up once (compilation
and first-call costs excluded), then timed over `--repeats` runs. Tokens are checked equal, then tokens/s
goes into benchmarks/RESULTS.md under its own heading. Run: python -m benchmarks.decode_speed
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from benchmarks import RESULTS_PAGE
from benchmarks.common import page_machine, repeat, result, write_section


def measure(quick: bool = False, out=None, batch: int = 8, new_tokens: int = 64, repeats: int = 3):
    """(results.json rows, Markdown section); the `jaxmerge bench` entry point. Quick: a smaller batch."""
    if quick:
        batch, new_tokens, repeats = 2, 8, 2
    args = argparse.Namespace(batch=batch, new_tokens=new_tokens, repeats=repeats)
    where = page_machine()
    import jax
    import jax.numpy as jnp
    import torch
    import transformers

    from jaxmerge.fitness import greedy_jit
    from jaxmerge.fitness.tokenize import left_pad
    from jaxmerge.io import load
    from tests.tiny import make_tiny_model

    dims = dict(vocab_size=2048, hidden_size=256, intermediate_size=704, num_hidden_layers=4,
                num_attention_heads=8, num_key_value_heads=4, head_dim=32, eos_token_id=None)
    path = make_tiny_model(Path(tempfile.mkdtemp()) / "small", "llama", seed=0, **dims)
    rng = np.random.default_rng(0)
    rows = [rng.integers(3, dims["vocab_size"], size=int(n)).tolist() for n in rng.integers(8, 48, args.batch)]
    tokens, mask = left_pad(rows, 48, 0)
    model = load(path)
    params = jax.device_put(model.params)
    eos = jnp.asarray([-1])

    def ours():
        return jax.block_until_ready(greedy_jit(model.spec, params, tokens, mask, eos, max_new_tokens=args.new_tokens))

    hf = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()

    def theirs():
        with torch.no_grad():
            return hf.generate(torch.as_tensor(tokens).long(), attention_mask=torch.as_tensor(mask).long(),
                               do_sample=False, max_new_tokens=args.new_tokens, pad_token_id=0)

    same = np.array_equal(np.asarray(ours().tokens), theirs()[:, tokens.shape[1]:].numpy())
    t_ours, t_hf = repeat(ours, args.repeats).mean, repeat(theirs, args.repeats).mean
    n = args.batch * args.new_tokens
    body = f"""Machine: {where}.
Model: random Llama, hidden 256, 4 layers, 8 heads / 4 kv heads, vocab 2048, float32. Batch {args.batch}
left-padded prompts of 8-47 tokens (padded to 48), {args.new_tokens} new tokens each, greedy, no EOS; mean of
{args.repeats} warm runs each, the two engines back to back. Tokens identical: {same}.

| engine | s / batch | tokens/s |
|---|---|---|
| jaxmerge greedy_jit (KV cache, lax.scan) | {t_ours:.3f} | {n / t_ours:,.0f} |
| transformers generate(do_sample=False) | {t_hf:.3f} | {n / t_hf:,.0f} |

Speed-up: {t_hf / t_ours:.1f}x (goal >= 3x)."""
    row = result("decode: greedy tokens/s (jaxmerge vs transformers generate)", n / t_ours, "tokens/s",
                 baseline=n / t_hf, goal="ratio >= 3", note=f"tokens identical: {same}")
    return [row], body


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    _, body = measure(False, None, args.batch, args.new_tokens, args.repeats)
    print(body)
    write_section(RESULTS_PAGE, "fitness: greedy decode speed (benchmarks/decode_speed.py)", body)


if __name__ == "__main__":
    main()
