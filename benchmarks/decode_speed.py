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
    if quick:  # the generation-heavy task takes minutes: `jaxmerge bench --quick` keeps the rows above only
        return [row], body
    rows, heavy = generation_heavy(path)
    memory_rows, memory = prefill_memory(model.spec)
    return [row, *rows, *memory_rows], body + "\n\n" + heavy + "\n\n" + memory


def prefill_memory(spec, length: int = 4096, new_tokens: int = 64, batch: int = 1):
    """Temporaries of a long prompt's prefill as the fitness runs it (forward_cached into a cache of prompt +
    new tokens), from XLA's memory analysis of the compiled program (no run): attention in query blocks (now)
    vs every query at once (before: the [B, heads, S, S] float32 scores of a layer alive together), and through
    jax.nn.dot_product_attention (XLA's implementation) in blocks."""
    from unittest import mock

    import jax
    import jax.numpy as jnp

    from jaxmerge import kernels, model
    from jaxmerge.params import param_shapes
    shapes = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s, jnp.float32), param_shapes(spec),
                          is_leaf=lambda s: isinstance(s, tuple))
    tokens = jax.ShapeDtypeStruct((batch, length), jnp.int32)
    cache = jax.eval_shape(lambda: model.init_cache(spec, batch, length + new_tokens, jnp.float32))

    def temp(spec) -> int:
        def prefill(p, t, c):
            mask = jnp.ones(t.shape, jnp.int32)
            return model.forward_cached(spec, p, t, mask, model.default_positions(mask), c, 0)
        return jax.jit(prefill).lower(shapes, tokens, cache).compile().memory_analysis().temp_size_in_bytes
    now, library = temp(spec), temp(spec.replace(attention_impl=kernels.XLA))
    with mock.patch.object(kernels, "LONG_QUERIES", 10 ** 9):
        before = temp(spec)
    scores = batch * spec.num_heads * length * (length + new_tokens) * 4
    mib = lambda b: f"{b / 2**20:,.0f}"  # noqa: E731
    text = f"""Prefill of a {length:,}-token prompt (batch {batch}, cache of {length + new_tokens} slots, the same model,
float32): XLA's temporaries of the compiled prefill (`compile().memory_analysis().temp_size_in_bytes`; no run).
One layer's [B, heads, S, S + new] float32 scores are {mib(scores)} MiB.

| attention | temporaries MiB |
|---|---|
| every query at once (before) | {mib(before)} |
| query blocks of {kernels.QUERY_BLOCK} above {kernels.LONG_QUERIES} queries (now, the explicit kernel) | {mib(now)} |
| query blocks, jax.nn.dot_product_attention (XLA implementation) | {mib(library)} |

Blocks vs before: {before / now:.1f}x less."""
    row = result(f"prefill: temporaries of a {length}-token prefill, query blocks vs all at once", now / 2**20,
                 "MiB", baseline=before / 2**20, goal="ratio <= 0.25")
    return [row], text


def counting_model(path: Path, out: Path) -> Path:
    """The random Llama at `path` made to count: its head scores token t + 1 by token t's embedding, and its
    layers write 100x less into the stream, so greedy decoding emits last + 1, last + 2, ... (modulo the vocab)
    while every layer still runs in full. An item's answer length is then (EOS - its last prompt token) mod V:
    a generation task whose answers end where the benchmark wants (a random model's own greedy text falls into
    the same few-token loop for every prompt)."""
    from jaxmerge.io import Model, load, save
    model = load(path)
    params = {**model.params, "lm_head": np.roll(model.params["embed"], 1, axis=0),
              "layers": {k: v * np.float32(0.01) if k in ("o_proj", "down_proj") else v
                         for k, v in model.params["layers"].items()}}
    save(Model(model.spec, params, None), out)
    return out


def generation_heavy(path: Path, items: int = 16, batch: int = 4, steps: int = 256, longest: int = 200,
                     repeats: int = 2):
    """A fitness-shaped generation task: prompts of 8-200 tokens, answers ending (EOS) after 8-256 tokens, run
    as the fitness runs it now (per group of prompt widths, a queue of item_batch rows, each row taking the next
    item when its answer ends: greedy_queue); as before the queue (chunks of item_batch under lax.map, each
    decoding until its rows are done, grouped by prompt length) and, before that, every chunk padded to the
    longest prompt; as when issue #19 was filed (every chunk padded and decoding all `steps` steps: an EOS
    id that no token has keeps every row going, and the answers' tokens are the same `n`); transformers generate
    on the same chunks (item order, stops when all rows end)."""
    import jax
    import jax.numpy as jnp
    import torch
    import transformers

    from jaxmerge.fitness.chunking import QUEUE_CHUNKS, chunks, flattened, padded_fraction
    from jaxmerge.fitness.generate import greedy, greedy_queue
    from jaxmerge.fitness.prepare import Prepared
    from jaxmerge.fitness.tasks import Task
    from jaxmerge.fitness.tokenize import left_pad, padded_length
    from jaxmerge.io import load
    counting = counting_model(path, path.parent / "counting")
    model = load(counting)
    params = jax.device_put(model.params)
    hf = transformers.AutoModelForCausalLM.from_pretrained(counting, dtype=torch.float32).eval()
    rng = np.random.default_rng(1)
    vocab, eos = model.spec.vocab_size, model.spec.vocab_size // 2  # counting up to it never meets pad 0
    answers = rng.integers(9, steps + 1, items)  # the step that emits EOS: answers of 8 to steps - 1 tokens
    rows = [rng.integers(4, vocab, size=int(n) - 1).tolist() + [int((eos - a) % vocab)]
            for n, a in zip(rng.integers(8, longest + 1, items), answers)]
    tokens, mask = left_pad(rows, padded_length(max(map(len, rows))), 0)
    eos = np.asarray([eos], np.int32)
    task = Task("heavy", (("dev", "-"),), template="{prompt}", metric="exact_match", max_new_tokens=steps)
    prepared = Prepared(task, tuple(range(items)), {"tokens": tokens, "mask": mask,
                        "index": np.arange(items, dtype=np.int32)}, np.ones(items, np.float32), batch, 0,
                        tuple(int(e) for e in eos))
    grouped = chunks(prepared, min_chunks=1).groups  # every width its own group, as before the queue
    queued = chunks(prepared).groups  # as the fitness groups them now: few chunks join a wider group
    whole = ({k: v.reshape(-1, batch, *v.shape[1:]) for k, v in prepared.arrays.items()},)

    def run(groups, stop=eos):
        def one(chunk):
            return greedy(model.spec, params, chunk["tokens"], chunk["mask"], jnp.asarray(stop),
                          max_new_tokens=steps).lengths
        return jax.jit(lambda: [jax.lax.map(one, g) for g in groups])

    def queue(groups):  # as the fitness runs it now: per group, `batch` rows each taking the next item
        flat = [flattened(g) for g in groups]
        return jax.jit(lambda: [greedy_queue(model.spec, params, f, jnp.asarray(eos), rows=batch,
                                             max_new_tokens=steps).lengths for f in flat])
    now, new, old, filed = queue(queued), run(grouped), run(whole), run(whole, np.asarray([-1], np.int32))
    lengths = np.sort(np.concatenate([np.asarray(x).reshape(-1) for x in jax.block_until_ready(old())]))
    same = all(np.array_equal(lengths, np.sort(np.concatenate([np.asarray(x).reshape(-1) for x in f()])))
               for f in (new, now))
    t_now = repeat(lambda: jax.block_until_ready(now()), repeats)
    t_new, t_old = repeat(lambda: jax.block_until_ready(new()), repeats), repeat(lambda: jax.block_until_ready(
        old()), repeats)
    t_filed = repeat(lambda: jax.block_until_ready(filed()), repeats)  # repeat's warm-up call compiles it

    def theirs():
        with torch.no_grad():
            return [hf.generate(torch.as_tensor(tokens[c:c + batch]).long(), max_new_tokens=steps, do_sample=False,
                                attention_mask=torch.as_tensor(mask[c:c + batch]).long(), pad_token_id=0,
                                eos_token_id=eos.tolist())[:, tokens.shape[1]:].numpy() for c in range(0, items, batch)]
    hf_lengths = np.sort([int(np.argmax(np.append(row, eos[0]) == eos[0])) for out in theirs() for row in out])
    by_threads = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        by_threads[threads] = repeat(theirs, repeats)
    best = min(by_threads, key=lambda t: by_threads[t].median)
    t_hf = by_threads[best]
    # answer tokens the fitness reports (EOS not counted), the same for every engine
    n = float(lengths.sum())
    text = f"""Generation-heavy task: {items} prompts of 8-{longest} random tokens, item_batch {batch}, max_new_tokens
{steps}; a random Llama made to count (`counting_model`), so answers end at EOS after {int(lengths.min())}-{int(lengths.max())} tokens (median
{int(np.median(lengths))}; {int(n)} answer tokens in all); every chunk decodes until all its rows have ended.
Same lengths in every jaxmerge form: {same}; as planned: {np.array_equal(lengths, np.sort(answers - 1))};
transformers' the same: {np.array_equal(lengths, hf_lengths)}. Padded share of the prompt slots: {padded_fraction(prepared, False):.0%}
padded to the longest prompt, {padded_fraction(prepared, min_chunks=1):.0%} grouped by length ({len(grouped)} widths),
{padded_fraction(prepared):.0%} in the queue's groups ({len(queued)}: a width of fewer than {QUEUE_CHUNKS} chunks joins a wider one).

| engine | s / task | answer tokens/s |
|---|---|---|
| jaxmerge fitness: a queue of {batch} rows per prompt width, a row refilled when its answer ends (now) | {t_now.text()} | {n / t_now.median:,.0f} |
| jaxmerge fitness chunks, grouped by prompt length (before the queue) | {t_new.text()} | {n / t_new.median:,.0f} |
| jaxmerge fitness chunks, every chunk at the longest prompt (before the grouping) | {t_old.text()} | {n / t_old.median:,.0f} |
| the same, every chunk decoding all {steps} steps (as when #19 was filed) | {t_filed.text()} | {n / t_filed.median:,.0f} |
| transformers generate on the same chunks (torch {best} thread(s), the faster of 1 and 2) | {t_hf.text()} | {n / t_hf.median:,.0f} |

Now vs as filed: {t_filed.median / t_now.median:.2f}x (goal >= 2x); the queue vs grouped chunks:
{t_new.median / t_now.median:.2f}x; grouped vs padded, both stopping early: {t_old.median / t_new.median:.2f}x;
now vs transformers: {t_hf.median / t_now.median:.2f}x (goal >= 1.5x)."""
    rows = [result("decode: generation-heavy task, answer tokens/s, now vs as #19 was filed (padded, all steps)",
                   n / t_now.median, "tokens/s", baseline=n / t_filed.median, goal="ratio >= 2", noise=t_now.noise),
            result("decode: generation-heavy task, answer tokens/s, queue vs chunks grouped by prompt length",
                   n / t_now.median, "tokens/s", baseline=n / t_new.median),
            result("decode: generation-heavy task, answer tokens/s, grouped vs padded to the longest prompt",
                   n / t_new.median, "tokens/s", baseline=n / t_old.median),
            result("decode: generation-heavy task, answer tokens/s, jaxmerge vs transformers generate",
                   n / t_now.median, "tokens/s", baseline=n / t_hf.median, goal="ratio >= 1.5")]
    return rows, text


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
