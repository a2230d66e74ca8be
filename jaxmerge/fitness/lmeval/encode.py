"""Tokenisation of lm-eval requests exactly as lm-eval 0.4.13's `hf` backend (HFLM) does it, for a tokenizer.

The fitness and the `jaxmerge` backend both encode through here, so a request scores the same tokens in a
search, in `lm_eval.simple_evaluate(model="jaxmerge")` and in `model="hf"`:
- `tok_encode`: the tokenizer's own special-token rule (HFLM's add_bos_token default, None), except that a
  string already starting with the prefix token's text gets none;
- loglikelihood pairs: TemplateLM's rule: trailing spaces of the context move to the continuation, the pair is
  encoded whole and split at the context's length; an empty context becomes the prefix token (BOS, else EOS);
  the row is left-truncated to max_length + 1 tokens;
- generation contexts: HFLM's batch rule (no special tokens when the text starts with the BOS text), left-
  truncated to max_length - max_gen_toks; `until` gains the EOS text; completions are decoded with special
  tokens skipped and cut at the first stop string (lm-eval's own postprocess).
"""
from __future__ import annotations

from typing import NamedTuple

from jaxmerge.errors import expect

DEFAULT_MAX_GEN_TOKS = 256  # HFLM.max_gen_toks


def prefix_token_id(tokenizer) -> int:
    return tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id


def tok_encode(tokenizer, text: str, add_special_tokens: bool | None = None) -> list[int]:
    kwargs = {} if add_special_tokens is None else {"add_special_tokens": add_special_tokens}
    if add_special_tokens is None and text.startswith(tokenizer.decode(prefix_token_id(tokenizer))):
        kwargs["add_special_tokens"] = False
    return list(tokenizer.encode(text, **kwargs))


def loglikelihood_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """(context tokens, continuation tokens) of one loglikelihood request (TemplateLM.loglikelihood)."""
    if context == "":
        cont = tok_encode(tokenizer, continuation, add_special_tokens=False)
        prefix = prefix_token_id(tokenizer)
        return ([prefix], cont) if prefix != cont[0] else (cont[:1], cont[1:])
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    whole = tok_encode(tokenizer, context + continuation)
    ctx = tok_encode(tokenizer, context)
    return ctx, whole[len(ctx):]


def loglikelihood_row(tokenizer, context: str, continuation: str, max_length: int) -> tuple[list[int], int]:
    """(tokens, continuation length): the row HFLM feeds the model, plus its last token (which it only scores)."""
    return truncated(*loglikelihood_pair(tokenizer, context, continuation), max_length)


def truncated(ctx: list[int], cont: list[int], max_length: int) -> tuple[list[int], int]:
    """HFLM's row `(ctx + cont)[-(max_length + 1):]` (its input is that row without its last token)."""
    expect(0 < len(cont) <= max_length, f"lm_eval request: expected a continuation of 1..{max_length} tokens, "
                                        f"found {len(cont)}")
    return (ctx + cont)[-(max_length + 1):], len(cont)


class Generation(NamedTuple):
    """A generate_until request's settings after HFLM's normalisation."""
    until: tuple[str, ...]
    max_gen_toks: int


def generation(tokenizer, gen_kwargs: dict, where: str) -> Generation:
    """`until` (with the EOS text added) and max_gen_toks; sampling is refused (search fitness is greedy)."""
    from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs
    kwargs = normalize_gen_kwargs(dict(gen_kwargs), DEFAULT_MAX_GEN_TOKS)
    expect(not kwargs.get("do_sample") and not kwargs.get("temperature"),
           f"{where}: expected greedy generation (do_sample: false, temperature: 0), found {gen_kwargs}")
    eos = tokenizer.decode(tokenizer.eos_token_id, skip_special_tokens=False) \
        if tokenizer.eos_token_id is not None else None
    until = handle_stop_sequences(kwargs.get("until"), eos=eos)
    return Generation(tuple(until), int(kwargs["max_gen_toks"]))


def generation_context(tokenizer, context: str, max_length: int, max_gen_toks: int) -> list[int]:
    """The prompt tokens HFLM.tok_batch_encode gives one context, left-truncated to max_length - max_gen_toks."""
    expect(max_gen_toks < max_length, f"lm_eval request: expected max_gen_toks ({max_gen_toks}) below the "
                                      f"model's maximum length {max_length}")
    bos = tokenizer.bos_token
    kwargs = {"add_special_tokens": False} if bos is not None and context.startswith(bos) else {}
    return list(tokenizer(context, **kwargs)["input_ids"])[-(max_length - max_gen_toks):]


def completion(tokenizer, tokens, until: tuple[str, ...]) -> str:
    """The response lm-eval records: generated tokens decoded (special tokens skipped), cut at the stops."""
    from lm_eval.models.utils import postprocess_generated_text
    text = tokenizer.decode(list(tokens), skip_special_tokens=True)
    return postprocess_generated_text(generation=text, stop=list(until), think_end_token=None)
