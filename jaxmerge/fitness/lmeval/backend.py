"""`jaxmerge` as an lm-eval model backend: any model (a source, a winner) evaluated by lm-eval on the JAX forward.

    import jaxmerge.fitness.lmeval.backend   # registers "jaxmerge" with lm-eval
    lm_eval.simple_evaluate(model="jaxmerge", model_args="pretrained=DIR,dtype=float32", tasks=[...])

It is a `TemplateLM`, so lm-eval's own request encoding runs; tokenisation, truncation, stop handling and
decoding follow the `hf` backend (encode.py, shared with the fitness), and the numbers come from the functions
the fitness compiles: teacher-forced scoring (summed log-probability, is_greedy) and greedy decoding. Requests
run in fixed-size batches padded to one length per call, so a call compiles once per shape.
"""
from __future__ import annotations

import jax
import numpy as np
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model

from jaxmerge.fitness.generate import greedy_jit
from jaxmerge.fitness.lmeval import encode, offline
from jaxmerge.fitness.prepare import stop_patterns
from jaxmerge.fitness.score import score_jit
from jaxmerge.fitness.tokenize import eos_ids, left_pad, pad_id, padded_length


def batches(rows: list, size: int):
    """Fixed-size batches of `rows`, the last one filled by repeating its last row; yields (batch, real count)."""
    for start in range(0, len(rows), size):
        part = rows[start:start + size]
        yield part + [part[-1]] * (size - len(part)), len(part)


@register_model("jaxmerge")
class JaxmergeLM(TemplateLM):
    def __init__(self, pretrained: str, dtype: str | None = None, batch_size: int | str | None = 8,
                 max_length: int | None = None, **_ignored):
        """`device`, `max_batch_size` and other arguments lm-eval passes to every backend are ignored (JAX
        places the model on its default device)."""
        super().__init__()
        offline()
        from jaxmerge.fitness.tokenize import load_tokenizer
        from jaxmerge.io import load
        model = load(pretrained, dtype)
        self.spec, self.params = model.spec, jax.device_put(model.params)
        self.tokenizer = load_tokenizer(model.path)
        self.batch = int(batch_size) if str(batch_size).isdigit() and int(batch_size) > 0 else 8
        self.max_length = int(max_length) if max_length else self.spec.max_position_embeddings

    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        return encode.prefix_token_id(self.tokenizer)

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        return encode.tok_encode(self.tokenizer, string, add_special_tokens)

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        rows = [encode.truncated(ctx, cont, self.max_length) for _, ctx, cont in requests]
        length, pad, out = padded_length(max(len(r) for r, _ in rows)), pad_id(self.tokenizer), []
        for batch, real in batches(rows, self.batch):
            tokens, mask = left_pad([r for r, _ in batch], length, pad)
            target, _ = left_pad([[0] * (len(r) - n) + [1] * n for r, n in batch], length, 0)
            got = jax.device_get(score_jit(self.spec, self.params, tokens, mask, target))
            out += [(float(lp), bool(g)) for lp, g in zip(got.logprob[:real], got.greedy[:real])]
        return out

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        out: list = [None] * len(requests)
        groups: dict = {}
        for i, request in enumerate(requests):
            gen = encode.generation(self.tokenizer, request.args[1], "lm_eval request")
            groups.setdefault(gen, []).append(i)
        for gen, members in groups.items():
            for i, text in zip(members, self._generate([requests[i].args[0] for i in members], gen)):
                out[i] = text
        return out

    def _generate(self, contexts: list[str], gen: encode.Generation) -> list[str]:
        rows = [encode.generation_context(self.tokenizer, c, self.max_length, gen.max_gen_toks) for c in contexts]
        length, pad, out = padded_length(max(map(len, rows))), pad_id(self.tokenizer), []
        eos = np.asarray(eos_ids(self.tokenizer) or (-1,), np.int32)
        stops = stop_patterns(self.tokenizer, gen.until)
        for batch, real in batches(rows, self.batch):
            tokens, mask = left_pad(batch, length, pad)
            got = jax.device_get(greedy_jit(self.spec, self.params, tokens, mask, eos,
                                            max_new_tokens=gen.max_gen_toks, pad=pad, stops=stops))
            out += [encode.completion(self.tokenizer, t[:n], gen.until) for t, n in zip(got.tokens[:real],
                                                                                         got.lengths[:real])]
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Perplexity requests: HFLM's disjoint rolling windows of max_length tokens, summed."""
        from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
        out = []
        for (text,) in (r.args for r in requests):
            windows = [make_disjoint_window(w) for w in get_rolling_token_windows(
                token_list=self.tok_encode(text), prefix_token=self.prefix_token_id, max_seq_len=self.max_length,
                context_len=1)]
            scores = self._loglikelihood_tokens([(None, ctx, cont) for ctx, cont in windows])
            out.append(sum(lp for lp, _ in scores))
        return out
