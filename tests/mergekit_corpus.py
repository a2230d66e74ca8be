"""mergekit's own recipes as a corpus: every recipe in its examples/ and every merge configuration its tests build
(test_basic_merges, test_tokenizer, test_chat_template; test_sparsify and test_modelref call functions, see
tests/test_mergekit_corpus.py), translated onto tiny models of our families with their structure kept (slices and
layer ranges scaled to 3 layers, gradients, filters, dtypes, tokenizer blocks), from arcee-ai/mergekit at the
commit the mirror holds (its tests are mergekit 0.1.4's plus the 0.1.5 methods; the installed oracle is 0.1.5).

A case: `recipe(models) -> dict` (models: the fixture's name -> path), `check(out, models)`: mergekit's own
assertions on an output (run on mergekit's and on jaxmerge's), `random`: compared by statistics, not tensors;
`mergekit_fails`: the error mergekit 0.1.5 raises on it (then jaxmerge must refuse it too, with `refused`'s
words, or merge it, `refused` None); `listed`: why the case cannot run on jaxmerge's families (not run).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Callable

import numpy as np

from tests.merge_oracle import read_tensors


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    recipe: Callable[[dict], dict] | None = None
    check: Callable[[Path, dict], None] | None = None
    random: bool = False
    mergekit_fails: str | None = None
    refused: tuple[str, ...] | None = None
    listed: str | None = None


def _m(ref, **params):
    return dict(model=ref, parameters=params) if params else dict(model=ref)


# ---- examples/ (fine-tunes of one base: fam base, ft0, ft1, ft2; 40-layer ranges scaled to 3 layers) ----

EXAMPLES = [
    Case("examples/arcee_fusion.yml", lambda m: dict(
        models=[_m(m["ft0"]), _m(m["ft1"])], merge_method="arcee_fusion", base_model=m["ft0"], dtype="bfloat16")),
    Case("examples/bio-merge.yml", lambda m: dict(
        models=[_m(m["ft0"], density=0.5, weight=0.5), _m(m["ft1"], density=0.5, weight=0.5)], merge_method="ties",
        base_model=m["base"], parameters=dict(normalize=False, int8_mask=True), dtype="float16")),
    Case("examples/gradient-slerp.yml", lambda m: dict(
        slices=[dict(sources=[dict(model=m["ft0"], layer_range=[0, 3]), dict(model=m["ft1"], layer_range=[0, 3])])],
        merge_method="slerp", base_model=m["ft0"], dtype="float16", parameters=dict(t=[
            dict(filter="self_attn", value=[0, 0.5, 0.3, 0.7, 1]), dict(filter="mlp", value=[1, 0.5, 0.7, 0.3, 0]),
            dict(value=0.5)]))),
    Case("examples/linear.yml", lambda m: dict(
        models=[_m(m["ft0"], weight=1.0), _m(m["ft1"], weight=0.3), _m(m["ft2"], weight=0.5)], merge_method="linear",
        dtype="float16")),
    Case("examples/orcamini-platy-44layer.yml", lambda m: dict(  # 24 + 20 of 40 layers -> 2 + 2 of 3
        slices=[dict(sources=[dict(model=m["ft0"], layer_range=[0, 2])]),
                dict(sources=[dict(model=m["ft1"], layer_range=[1, 3])])], merge_method="passthrough",
        dtype="float16"), check=lambda out, m: _layers(out, 4)),
    Case("examples/ties.yml", lambda m: dict(
        models=[_m(m["ft0"], density=[1, 0.7, 0.1], weight=1.0), _m(m["ft1"], density=0.5, weight=[0, 0.3, 0.7, 1]),
                _m(m["ft2"], density=0.33, weight=[dict(filter="mlp", value=0.5), dict(value=0)])],
        merge_method="ties", base_model=m["base"], parameters=dict(normalize=True, int8_mask=True), dtype="float16")),
]


def _layers(out: Path, n: int) -> None:
    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == n


# ---- tests/test_basic_merges.py (three independent random models a, b, c; bf16, weights 0.6 / 0.4) ----

def _two(method, base=None, first="a", second="b", **params):
    def recipe(m):
        out = dict(merge_method=method, models=[_m(m[first], weight=0.6), _m(m[second], weight=0.4)],
                   dtype="bfloat16")
        if base:
            out["base_model"] = m[base]
        return {**out, **({"parameters": params} if params else {})}
    return recipe


def _o_proj_zero(out: Path, models) -> None:
    """test_passthrough_scale's check: every o_proj is zero, lm_head is not."""
    tensors = read_tensors(out)
    assert any("o_proj" in k for k in tensors)
    assert all((v == 0).all() for k, v in tensors.items() if "o_proj" in k)
    assert np.count_nonzero(tensors["lm_head.weight"]) > 0


def _nuslerp(base, row_wise, flatten):
    return Case(f"test_basic_merges::test_nuslerp_merges[base={base}, row_wise={row_wise}, flatten={flatten}]",
                _two("nuslerp", base, nuslerp_row_wise=row_wise, nuslerp_flatten=flatten))


def _zero_sum(m):
    recipe = _two("nuslerp", "c", nuslerp_row_wise=False, nuslerp_flatten=False)(m)
    recipe["models"][0]["parameters"]["weight"], recipe["models"][1]["parameters"]["weight"] = -0.5, 0.5
    return recipe


OTHER_FAMILY = "jaxmerge has no {} family record (architecture not supported by this branch)"
BASIC = [
    *[Case(f"test_basic_merges::TestGraniteMerges::{n}", listed=OTHER_FAMILY.format("Granite"))
      for n in ("test_granite_copy", "test_granite_linear_merge", "test_granite_slerp")],
    *[Case(f"test_basic_merges::{n}", listed=OTHER_FAMILY.format("GPT-2")) for n in ("test_gpt2_copy",
                                                                                     "test_gpt2_stack")],
    Case("test_basic_merges::test_passthrough_scale", lambda m: dict(merge_method="passthrough", models=[
        _m(m["a"], scale=[dict(filter="o_proj", value=0), dict(value=1)])]), check=_o_proj_zero),
    Case("test_basic_merges::test_linear_merge", _two("linear")),
    Case("test_basic_merges::test_slerp_merge", _two("slerp", "a", t=0.35)),
    *[_nuslerp(b, r, f) for b in (None, "c") for r in (False, True) for f in (False, True)],
    Case("test_basic_merges::test_nuslerp_merges[weights summing to zero]", _zero_sum),
    Case("test_basic_merges::test_task_arithmetic_merge", _two("task_arithmetic", "c")),
    Case("test_basic_merges::test_breadcrumbs_merge", _two("breadcrumbs", "c")),
    Case("test_basic_merges::test_ties_merge", _two("ties", "c", density=0.3)),
    Case("test_basic_merges::test_sce_merge", _two("sce", "c", select_topk=0.5)),
    Case("test_basic_merges::test_ram_merge", _two("ram", "c")),
    Case("test_basic_merges::test_ramplus_tl_merge", _two("ramplus_tl", "c", r=0.05, alpha=1.0)),
    Case("test_basic_merges::test_multislerp_merge", _two("multislerp", "c")),
    Case("test_basic_merges::test_dare_ties_merge", _two("dare_ties", "c", density=0.66), random=True),
    Case("test_basic_merges::test_model_stock_merge", _two("model_stock", "a", "b", "c")),
    Case("test_basic_merges::test_model_stock_filterwise_merge", _two("model_stock", "a", "b", "c", filter_wise=True)),
    Case("test_basic_merges::test_arcee_fusion_merge", _two("arcee_fusion", "a")),
    Case("test_basic_merges::test_nearswap_merge", _two("nearswap", "a", t=0.0001)),
    Case("test_basic_merges::test_della_merge", _two("della", "c", density=0.66, epsilon=0.05, **{"lambda": 0.5}),
         random=True),
    Case("test_basic_merges::test_della_invalid_epsilon", _two("della", "c", density=0.66, epsilon=1.35,
                                                               **{"lambda": 0.5}),
         mergekit_fails="density +/- epsilon is in (0, 1)", refused=("epsilon", "1.35")),
    Case("test_basic_merges::test_karcher_merge", _two("karcher", "c", max_iter=5, tol=1e-5)),
    *[Case(f"test_basic_merges::{n}", listed=OTHER_FAMILY.format("Llava (vision-language)")) for n in (
        "test_linear_VLM_merge", "test_slerp_VLM_merge", "test_nuslerp_VLM_merges", "test_task_arithmetic_VLM_merge",
        "test_breadcrumbs_VLM_merge", "test_ties_VLM_merge", "test_dare_ties_VLM_merge", "test_model_stock_VLM_merge",
        "test_model_stock_filterwise_VLM_merge")],
]


# ---- tests/test_tokenizer.py and tests/test_chat_template.py (their tokenizers: tests.tiny_vocab) ----

def tokenizer_check(size: int, added: int | None = None, has=(), lacks=()):
    """test_tokenizer's check_tokenizer: vocabulary size, added-token count, tokens present and absent."""
    def check(out: Path, models) -> None:
        import transformers
        tokenizer = transformers.LlamaTokenizerFast.from_pretrained(str(out))
        vocab = tokenizer.get_vocab()
        assert len(vocab) == size, len(vocab)
        assert added is None or len(tokenizer.added_tokens_decoder) == added
        assert all(t in vocab for t in has) and not any(t in vocab for t in lacks)
    return check


def embedding(out, token: str | None = None, row: int | None = None) -> np.ndarray:
    """test_tokenizer's ModelEmbeddings: a token's (or a row's) embedding in a model directory."""
    import transformers
    table = read_tensors(Path(out))["model.embed_tokens.weight"]
    return table[row if token is None else transformers.LlamaTokenizerFast.from_pretrained(str(out)).get_vocab()[token]]


def _tok(models, base="base", method="linear", source=None, block=None, **params):
    def recipe(m):
        out = dict(merge_method=method, base_model=m[base], dtype="float32",
                   models=[_m(m[name], weight=1.0) for name in models])
        named = source if source in (None, "base", "union") else m[source]
        out.update({k: v for k, v in (("tokenizer_source", named),
                                      ("tokenizer", block and block(m)), ("parameters", params or None)) if v})
        return out
    return recipe


def _union_rows(out, m):
    tokenizer_check(66, 5, ("<|im_start|>", "<|im_end|>"), [f"<UNUSED_{i}>" for i in range(4)])(out, m)
    assert np.allclose(embedding(out, "<|im_start|>"), embedding(m["chatml"], "<|im_start|>"))
    assert np.allclose(embedding(out, "<|im_end|>"), embedding(m["chatml"], "<|im_end|>"), atol=1e-3, rtol=1e-4)


def _forced_rows(out, m):
    tokenizer_check(66, has=("<|im_start|>", "<|im_end|>"))(out, m)
    assert np.allclose(embedding(out, "_tok_10"), embedding(m["chatml"], "_tok_10"))
    assert np.allclose(embedding(out, "_tok_11"), embedding(m["base"], "_tok_11"))


def _token_rows(out, m):
    tokenizer_check(64, has=("_tok_10",))(out, m)
    assert np.allclose(embedding(out, "_tok_20"), embedding(m["chatml"], row=64))
    assert np.allclose(embedding(out, "_tok_21"), embedding(m["base"], "<s>"))


def _padded(out, m):
    assert json.loads((Path(out) / "config.json").read_text())["vocab_size"] == 80  # (66 // 16 + 1) * 16
    tokenizer_check(66, has=("<|im_start|>", "<|im_end|>"))(out, m)
    assert read_tensors(Path(out))["model.embed_tokens.weight"].shape[0] == 80


def _template(needle):
    def check(out, m):
        import transformers
        template = transformers.AutoTokenizer.from_pretrained(str(out)).chat_template
        assert template and needle in template
    return check


ALL = ("base", "padded", "chatml")
TOKENIZER = [
    Case("test_tokenizer::test_legacy_mode", _tok(ALL), check=tokenizer_check(64, 3),
         mergekit_fails="Tensor size mismatch", refused=("64 embedding rows", "set tokenizer_source")),
    Case("test_tokenizer::test_source_base", _tok(ALL, source="base"), check=tokenizer_check(64, 3)),
    Case("test_tokenizer::test_source_union", _tok(ALL, source="union"), check=_union_rows),
    Case("test_tokenizer::test_source_model", _tok(ALL, source="chatml"),
         check=tokenizer_check(66, has=("<|im_start|>", "<|im_end|>"))),
    Case("test_tokenizer::test_slerp_union", _tok(("base", "chatml"), source="union", method="slerp", t=0.5),
         check=tokenizer_check(66, has=("<|im_start|>", "<|im_end|>"))),
    Case("test_tokenizer::test_force_token", _tok(("base", "chatml"), block=lambda m: dict(source="union", tokens={
        "_tok_10": dict(source=m["chatml"], force=True), "_tok_11": dict(source=m["base"], force=True)})),
        check=_forced_rows),
    Case("test_tokenizer::test_model_token_id", _tok(("base", "chatml"), block=lambda m: dict(source="base", tokens={
        "_tok_20": dict(source=dict(kind="model_token", model=m["chatml"], token_id=64), force=True),
        "_tok_21": dict(source=dict(kind="model_token", model=m["base"], token="<s>"), force=True)})),
        check=_token_rows),
    Case("test_tokenizer::test_pad_to_multiple_of", _tok(("chatml",), base="chatml", block=lambda m: dict(
        source="base", pad_to_multiple_of=16)), check=_padded),
    Case("test_chat_template::test_template_chatml", lambda m: dict(
        merge_method="linear", base_model=m["base"], dtype="bfloat16", chat_template="chatml",
        models=[_m(m["base"], weight=0.5), _m(m["plain"], weight=0.5)]), check=_template("<|im_start|>")),
    Case("test_chat_template::test_template_literal_jinja", lambda m: dict(
        merge_method="linear", base_model=m["base"], dtype="bfloat16", chat_template="{{messages[0]['content']}}",
        models=[_m(m["base"], weight=0.5), _m(m["plain"], weight=0.5)]),
        check=_template("{{messages[0]['content']}}")),
]
CORPUS = EXAMPLES + BASIC + TOKENIZER
