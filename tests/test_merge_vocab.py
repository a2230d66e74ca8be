"""Vocabularies that disagree, against mergekit 0.1.5 (the oracle): `tokenizer_source` base / union / a model,
the `tokenizer:` block (per-token sources, force, zero rows, another token's row, pad_to_multiple_of), and
`chat_template`. Models: a base with its own BPE tokenizer, a fine-tune whose vocabulary is a permutation of a
subset of the base's plus new and added tokens, one with padding rows (more rows than tokens), and one with other
new tokens (tests.tiny_vocab).

Rows are compared by token (mergekit takes the models of a union in the order of a Python set, so the ids of
tokens two models add can differ from run to run; jaxmerge takes the recipe's order): each token's row within
1e-5 relative in float32, bit for bit in 16 bits with a bit-exact method; padding rows as rows; the output
vocabulary, its size in config.json and the tokenization of a text equal mergekit's.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from jaxmerge.cli import main
from tests.merge_oracle import jaxmerge_merge, mergekit_merge, read_tensors, stable_sorts
from tests.tiny import make_tiny_model
from tests.tiny_vocab import BASE_TOKENS, SPECIALS, add_tokenizer, compare_by_token, tokenizer_of, vocab_variant

CHATML_LIKE = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"


@pytest.fixture(scope="module")
def vocab(tmp_path_factory):
    root = tmp_path_factory.mktemp("vocab")
    base = add_tokenizer(make_tiny_model(root / "base", "llama", seed=0), BASE_TOKENS, template=CHATML_LIKE)
    plain = [t for t in BASE_TOKENS[3:] if t not in ("t5", "t17", "t60")]
    order = list(np.random.default_rng(5).permutation(plain))
    vocab_variant(root / "perm", base, SPECIALS + order + ["n0", "n1", "n2"], seed=1, added=("<|im_start|>",))
    vocab_variant(root / "pad", base, BASE_TOKENS, rows=104, seed=2)
    vocab_variant(root / "other", base, SPECIALS + [t for t in BASE_TOKENS[3:] if t != "t8"] + ["n2", "m0"], seed=3)
    return {n: str(root / n) for n in ("base", "perm", "pad", "other")}


def _both(recipe, tmp_path, **mergekit_options):
    mergekit_merge(recipe, tmp_path / "mergekit", **mergekit_options)
    jaxmerge_merge(recipe, tmp_path / "jaxmerge")
    return tmp_path / "jaxmerge", tmp_path / "mergekit"


@pytest.mark.slow
def test_union_of_permuted_vocabularies(vocab, tmp_path):
    recipe = dict(merge_method="linear", dtype="float32", tokenizer_source="union", models=[
        dict(model=vocab["base"], parameters=dict(weight=0.5)), dict(model=vocab["perm"], parameters=dict(weight=0.3)),
        dict(model=vocab["other"], parameters=dict(weight=0.2))])
    ours, theirs = _both(recipe, tmp_path)
    compare_by_token(ours, theirs)
    tokenizer = tokenizer_of(ours)
    assert len(tokenizer) == 97 + 5 and tokenizer.tokenize("t1 <|im_start|>") == ["t1", "<|im_start|>"]
    # a token only `perm` has keeps perm's row: the merge of three copies of it weighted 0.5 + 0.3 + 0.2
    perm, out = tokenizer_of(vocab["perm"]).get_vocab(), read_tensors(ours)["model.embed_tokens.weight"]
    row = read_tensors(vocab["perm"])["model.embed_tokens.weight"][perm["n0"]]
    np.testing.assert_allclose(out[tokenizer.get_vocab()["n0"]], row, rtol=1e-6, atol=1e-7)


@pytest.mark.slow
def test_tokenizer_block_sources_force_zero_and_padding(vocab, tmp_path):
    block = dict(source="union", pad_to_multiple_of=16, tokens={
        "<|im_start|>": dict(source=vocab["perm"], force=True), "t5": dict(source=dict(kind="zero")),
        "zz": dict(source=dict(kind="model_token", model=vocab["other"], token="m0")),
        "t9": dict(source=dict(kind="model_token", model=vocab["base"], token_id=4), force=True)})
    recipe = dict(merge_method="task_arithmetic", base_model=vocab["base"], dtype="float32", tokenizer=block, models=[
        dict(model=vocab["perm"], parameters=dict(weight=0.7)), dict(model=vocab["other"], parameters=dict(weight=0.4)),
        dict(model=vocab["pad"], parameters=dict(weight=0.2))])
    ours, theirs = _both(recipe, tmp_path)
    compare_by_token(ours, theirs)
    assert read_tensors(ours)["model.embed_tokens.weight"].shape[0] == 112  # 103 tokens rounded up to 16s


@pytest.mark.slow
def test_base_vocabulary_in_bfloat16_with_padded_sources(vocab, tmp_path, monkeypatch):
    """TIES (bit-exact at 16 bits) with the base's vocabulary: `pad` has 104 rows for 97 tokens, `perm` lacks
    tokens (they take the base's row), `other`'s own new tokens are dropped; n2 is in two models, not the base."""
    stable_sorts(monkeypatch)
    recipe = dict(merge_method="ties", base_model=vocab["base"], dtype="bfloat16", tokenizer_source="base", models=[
        dict(model=vocab["perm"], parameters=dict(weight=0.7, density=0.5)),
        dict(model=vocab["pad"], parameters=dict(weight=0.4, density=0.5))])
    ours, theirs = _both(recipe, tmp_path)
    compare_by_token(ours, theirs, ulp=0)
    recipe = {**recipe, "merge_method": "task_arithmetic", "tokenizer_source": "union",
              "models": [dict(model=vocab["perm"], parameters=dict(weight=0.7)),
                         dict(model=vocab["other"], parameters=dict(weight=0.4))]}  # n2's row: the two models' mean
    compare_by_token(*_both(recipe, tmp_path / "mean"), ulp=0)


@pytest.mark.slow
def test_a_models_vocabulary_and_chat_templates(vocab, tmp_path):
    recipe = dict(merge_method="linear", dtype="float32", tokenizer_source=vocab["perm"], chat_template="chatml",
                  models=[dict(model=vocab["other"], parameters=dict(weight=0.5)),
                          dict(model=vocab["perm"], parameters=dict(weight=0.5))])
    ours, theirs = _both(recipe, tmp_path)
    compare_by_token(ours, theirs)
    assert tokenizer_of(ours).chat_template == tokenizer_of(theirs).chat_template and "<|im_start|>" in \
        tokenizer_of(ours).chat_template
    same = dict(merge_method="linear", dtype="float32", models=[  # one vocabulary: the donor's tokenizer is copied
        dict(model=vocab["base"], parameters=dict(weight=0.5)), dict(model=vocab["pad"], parameters=dict(weight=0.5))])
    for i, template in enumerate(("auto", "{% for m in messages %}[{{ m['content'] }}]{% endfor %}")):
        ours, theirs = _both({**same, "chat_template": template, "tokenizer_source": "base"}, tmp_path / f"t{i}",
                             copy_tokenizer=True)
        assert tokenizer_of(ours).chat_template == tokenizer_of(theirs).chat_template
    assert tokenizer_of(tmp_path / "t0" / "jaxmerge").chat_template == CHATML_LIKE  # auto: base's (pad has none)


def _refused(tmp_path, capsys, recipe, *words):
    path = tmp_path / "recipe.yml"
    path.write_text(json.dumps(recipe))
    assert main(["merge", str(path), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and all(w in err for w in words), err
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.tmp-*"))


BAD = {  # recipe changes -> words the one-line error names
    "no tokenizer_source": ({}, ("set tokenizer_source", "different tokenizers")),
    "unknown source token": ({"tokenizer": {"tokens": {"zz": {"source": {"kind": "model_token", "model": "OTHER",
                                                                         "token": "nope"}}}}},
                             ("tokenizer.tokens['zz'].source.token", "'nope'")),
    "token a source lacks": ({"tokenizer": {"tokens": {"n0": {"source": "OTHER", "force": True}}}},
                             ("tokenizer.tokens['n0'].source", "OTHER")),
    "unknown template": ({"tokenizer_source": "base", "chat_template": "chatmlx"}, ("chat_template", "chatmlx")),
    "both": ({"tokenizer_source": "base", "tokenizer": {"source": "base"}}, ("tokenizer_source", "both")),
    "bad kind": ({"tokenizer": {"tokens": {"zz": {"source": {"kind": "ones"}}}}}, ("source.kind", "ones")),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_vocabulary_settings_exit_2_and_write_nothing(vocab, tmp_path, capsys, case):
    changes, words = BAD[case]
    changes = json.loads(json.dumps(changes).replace("OTHER", vocab["other"]))
    recipe = dict(merge_method="linear", dtype="float32", models=[
        dict(model=vocab["perm"], parameters=dict(weight=0.5)), dict(model=vocab["other"], parameters=dict(weight=0.5))])
    _refused(tmp_path, capsys, {**recipe, **changes}, *(w.replace("OTHER", vocab["other"]) for w in words))


def test_row_counts_that_differ_are_refused_with_the_setting_to_use(vocab, tmp_path, capsys):
    recipe = dict(merge_method="linear", models=[dict(model=vocab["base"], parameters=dict(weight=0.5)),
                                                 dict(model=vocab["pad"], parameters=dict(weight=0.5))])
    _refused(tmp_path, capsys, recipe, "97 embedding rows", "104", "set tokenizer_source")


def test_union_adds_tokens_in_each_models_id_order(vocab):
    """The tokens a union adds keep the order of their ids in the model that brings them, on every load: a
    fast tokenizer's get_vocab() comes from a hash map whose order changes between loads, and a union built in
    that order would give a rebuilt merge other ids (other rows) than the first."""
    from jaxmerge.merge.vocab import load_tokenizer, union
    refs = ("base", "perm")
    for _ in range(5):
        toks = {ref: load_tokenizer(Path(vocab[ref]), ref) for ref in refs}
        ids = union(toks["base"], toks, {"base": 97, "perm": 98}).get_vocab()
        assert ids["n0"] < ids["n1"] < ids["n2"]
