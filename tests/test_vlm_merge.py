"""`jaxmerge merge` with a VLM among text models: the language models merge (mergekit 0.1.5 on the text copies
is the oracle), the vision tower and projector come through unchanged, and the output is a LLaVA that
transformers and AutoProcessor load offline and that generates what jaxmerge generates. Bad input: a language
model that does not match, two VLMs -> one line, exit 2, nothing written."""
import json

import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
import yaml
from safetensors.numpy import save_file

from jaxmerge.cli import main
from jaxmerge.fitness.generate import greedy_jit
from jaxmerge.vlm.checkpoint import load_vlm
from jaxmerge.vlm.model import VLM_DECODER, LanguageSpec
from jaxmerge.vlm.processor import encode, load_processor
from jaxmerge.vlm.vision import image_features_jit
from tests.merge_oracle import mergekit_merge, read_tensors, worst_relative
from tests.vlm_tiny import images, make_tiny_llava_next, make_tiny_vlm, text_sibling


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("vlm-merge")
    vlm = make_tiny_vlm(root / "vlm")
    return {"vlm": vlm, "vlm_lm": text_sibling(vlm, root / "vlm-lm", scale=0.0),  # its LM as a text model
            "ja": text_sibling(vlm, root / "ja", seed=1), "math": text_sibling(vlm, root / "math", seed=2)}


def recipe(base, a, b):
    return {"merge_method": "task_arithmetic", "base_model": str(base), "dtype": "float32",
            "models": [{"model": str(a), "parameters": {"weight": 0.7}},
                       {"model": str(b), "parameters": {"weight": 0.4}}]}


@pytest.fixture(scope="module")
def merged(world, tmp_path_factory):
    root = tmp_path_factory.mktemp("merged")
    (root / "recipe.yml").write_text(yaml.safe_dump(recipe(world["vlm"], world["ja"], world["math"])))
    assert main(["merge", str(root / "recipe.yml"), str(root / "out")]) == 0
    return root / "out"


def test_merge_keeps_the_tower_and_merges_the_language_model(world, merged, tmp_path):
    ours, source = read_tensors(merged), read_tensors(world["vlm"])
    theirs = mergekit_merge(recipe(world["vlm_lm"], world["ja"], world["math"]), tmp_path / "mergekit")
    lm = {n[len("language_model."):]: t for n, t in ours.items() if n.startswith("language_model.")}
    worst, where = worst_relative(lm, theirs)
    assert lm.keys() == theirs.keys() and worst <= 1e-5, f"{where} differs by {worst:.2e}"
    tower = {n: t for n, t in ours.items() if not n.startswith("language_model.")}
    assert tower.keys() == {n for n in source if not n.startswith("language_model.")} and tower
    for name, t in tower.items():
        np.testing.assert_array_equal(t, source[name], err_msg=name)
    assert not np.allclose(lm["model.layers.0.mlp.up_proj.weight"],
                           source["language_model.model.layers.0.mlp.up_proj.weight"])


def test_merged_vlm_runs_in_transformers_as_jaxmerge_runs_it(merged):
    out = merged
    processor = transformers.AutoProcessor.from_pretrained(str(out), local_files_only=True)
    pixels, ids, _ = encode(load_processor(out), images(1, 20)[0], "USER: <image>\ncolour? ASSISTANT:")
    pixels = pixels[None]
    assert processor(images=images(1, 20), text=["USER: <image>\ncolour? ASSISTANT:"],
                     return_tensors="np")["input_ids"][0].tolist() == ids
    hf = transformers.LlavaForConditionalGeneration.from_pretrained(out, dtype=torch.float32,
                                                                    local_files_only=True).eval()
    with torch.no_grad():
        want = hf.generate(input_ids=torch.as_tensor([ids]), pixel_values=torch.as_tensor(pixels), do_sample=False,
                           max_new_tokens=6, pad_token_id=0, eos_token_id=2)[0, len(ids):].numpy()
    vlm = load_vlm(out)
    feats = image_features_jit(vlm.spec, vlm.tower.vision, vlm.tower.projector, jnp.asarray(pixels))
    got = greedy_jit(LanguageSpec(vlm.spec.text, vlm.spec.image_token), {"lm": vlm.lm.params, "features": feats},
                     jnp.asarray([ids]), jnp.ones((1, len(ids)), jnp.int32), jnp.asarray([2]), max_new_tokens=6,
                     decoder=VLM_DECODER)
    np.testing.assert_array_equal(np.asarray(got.tokens)[0, :len(want)], want)


def refused(tmp_path, capsys, doc) -> str:
    file = tmp_path / "recipe.yml"
    file.write_text(yaml.safe_dump(doc))
    capsys.readouterr()  # the fixtures' own output
    assert main(["merge", str(file), str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists()
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_a_language_model_of_another_shape_is_refused_naming_both(world, tmp_path, capsys):
    from tests.tiny import make_tiny_model
    wide = make_tiny_model(tmp_path / "wide", hidden_size=48)
    err = refused(tmp_path, capsys, {"merge_method": "linear", "models": [
        {"model": str(world["vlm"]), "parameters": {"weight": 0.5}},
        {"model": str(wide), "parameters": {"weight": 0.5}}]})
    assert "hidden_size = 32" in err and "found 48" in err and "language model of its Llava" in err, err


def test_two_vlms_are_refused(world, tmp_path, capsys):
    other = make_tiny_vlm(tmp_path / "vlm2", seed=3)
    err = refused(tmp_path, capsys, {"merge_method": "linear", "models": [
        {"model": str(world["vlm"]), "parameters": {"weight": 0.5}},
        {"model": str(other), "parameters": {"weight": 0.5}}]})
    assert "at most one vision-language model" in err, err


@pytest.mark.slow
def test_llava_next_merges_and_runs_in_transformers(tmp_path):
    """LLaVA-Next: the image newline comes through with the tower; transformers generates what jaxmerge does on a
    wide image (tiles and unpadding)."""
    from jaxmerge.vlm.anyres import image_tokens
    vlm = make_tiny_llava_next(tmp_path / "next")
    ja = text_sibling(vlm, tmp_path / "ja", seed=1)
    (tmp_path / "r.yml").write_text(yaml.safe_dump({"merge_method": "linear", "models": [
        {"model": str(vlm), "parameters": {"weight": 0.6}}, {"model": str(ja), "parameters": {"weight": 0.4}}]}))
    assert main(["merge", str(tmp_path / "r.yml"), str(tmp_path / "out")]) == 0
    out, source = read_tensors(tmp_path / "out"), read_tensors(vlm)
    np.testing.assert_array_equal(out["image_newline"], source["image_newline"])
    picture = np.random.default_rng(3).integers(0, 256, (14, 37, 3), dtype=np.uint8)
    pixels, ids, size = encode(load_processor(tmp_path / "out"), picture, "<image> what? ")
    hf = transformers.LlavaNextForConditionalGeneration.from_pretrained(tmp_path / "out", dtype=torch.float32,
                                                                        local_files_only=True).eval()
    with torch.no_grad():
        want = hf.generate(input_ids=torch.as_tensor([ids]), pixel_values=torch.as_tensor(pixels[None]),
                           image_sizes=torch.as_tensor([size]), do_sample=False, max_new_tokens=6, pad_token_id=0,
                           eos_token_id=2)[0, len(ids):].numpy()
    merged = load_vlm(tmp_path / "out")
    feats = jnp.asarray(image_tokens(merged.tower, pixels, size)[None])
    got = greedy_jit(LanguageSpec(merged.spec.text, merged.spec.image_token),
                     {"lm": merged.lm.params, "features": feats},
                     jnp.asarray([ids]), jnp.ones((1, len(ids)), jnp.int32), jnp.asarray([2]), max_new_tokens=6,
                     decoder=VLM_DECODER)
    np.testing.assert_array_equal(np.asarray(got.tokens)[0, :len(want)], want)


def _edit_config(path, **changes):
    cfg = json.loads((path / "config.json").read_text())
    cfg.update(changes)
    (path / "config.json").write_text(json.dumps(cfg))


def _edit_tensors(path, edit):
    tensors = read_tensors(path)
    edit(tensors)
    save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})


BROKEN = {  # name -> (edit of a copy of the VLM, words the one-line error must hold)
    "unknown key": (lambda p: _edit_config(p, vision_feature_pooling="max"), "vision_feature_pooling"),
    "vision act": (lambda p: _edit_config(p, vision_config={**json.loads((p / "config.json").read_text())[
        "vision_config"], "hidden_act": "relu"}), "hidden_act"),
    "missing tensor": (lambda p: _edit_tensors(p, lambda t: t.pop("vision_tower.encoder.layers.1.mlp.fc2.bias")),
                       "encoder.layers.1.mlp.fc2.bias"),
    "projector shape": (lambda p: _edit_tensors(p, lambda t: t.update(
        {"multi_modal_projector.linear_2.weight": np.zeros((32, 31), np.float32)})), "linear_2.weight"),
    "stray tensor": (lambda p: _edit_tensors(p, lambda t: t.update({"extra_head.weight": np.zeros(3, np.float32)})),
                     "extra_head.weight"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_vlm_is_refused_in_one_line(world, tmp_path, capsys, case):
    import shutil
    broken = tmp_path / "broken"
    shutil.copytree(world["vlm"], broken)
    edit, words = BROKEN[case]
    edit(broken)
    err = refused(tmp_path, capsys, recipe(broken, world["ja"], world["math"]))
    assert words in err, err


def test_a_vlm_intermediate_of_a_chain_needs_an_intermediate_dir(world, tmp_path, capsys):
    """A multi-document recipe whose first document merges the VLM: kept in memory it would lose its tower."""
    first = yaml.safe_dump({"name": "step", **recipe(world["vlm"], world["ja"], world["math"])})
    last = yaml.safe_dump({"merge_method": "linear", "models": [
        {"model": "step", "parameters": {"weight": 0.5}}, {"model": str(world["ja"]), "parameters": {"weight": 0.5}}]})
    (tmp_path / "chain.yml").write_text(first + "---\n" + last)
    capsys.readouterr()
    assert main(["merge", str(tmp_path / "chain.yml"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--intermediate-dir" in err, err
    assert not (tmp_path / "out").exists()
    assert main(["merge", str(tmp_path / "chain.yml"), str(tmp_path / "out"), "--intermediate-dir",
                 str(tmp_path / "mid")]) == 0
    assert "vision_tower.embeddings.class_embedding" in read_tensors(tmp_path / "out")
