"""Load/save of HF checkpoints: transformers reads what we write, bytes survive, bad input is named, no half-writes."""
import json
import os
import shutil

import ml_dtypes
import numpy as np
import pytest
import torch
import transformers
from safetensors import safe_open

import jaxmerge
from jaxmerge.arch import ArchSpec
from jaxmerge.errors import JaxmergeError
from jaxmerge.io import hf_cache_dir
from tests.tiny import BREAKERS, broken_copy, hf_logits, make_tiny_model

ORACLE_TOL = 1e-4  # float32 logits, ours vs transformers
# bf16 vs f32 run of the same bf16 weights: bf16 keeps 8 significant bits (relative step 2**-8 = 0.4%); each of
# ~10 roundings per layer (projections, norms, residual adds) over 3 layers can add that much again, so a few
# percent of the logit scale (observed: 0.10 on logits up to 3.4, i.e. 3%). We bound the max abs diff by 5% of
# max |logit| and check it is not exact (i.e. the bf16 path really computed in bf16).
BF16_REL_TOL = 0.05
# The same error measured on transformers' own bf16 run (observed 0.105 with sdpa): ours may not be worse than 1.5x.
BF16_VS_HF = 1.5


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("io")
    big = {"initializer_range": 0.15}
    return {
        "llama": make_tiny_model(root / "llama", "llama", seed=1, **big),
        "qwen2-tied": make_tiny_model(root / "qwen2", "qwen2", seed=2, tie_word_embeddings=True, **big),
        "bf16": make_tiny_model(root / "bf16", "qwen3", seed=3, dtype=torch.bfloat16, **big),
    }


def stored(path):
    """Every tensor of a saved checkpoint (all shards), as numpy."""
    out = {}
    for file in sorted(path.glob("*.safetensors")):
        with safe_open(str(file), framework="np") as f:
            out.update({k: f.get_tensor(k) for k in f.keys()})
    return out


def leftovers(parent):
    return sorted(p.name for p in parent.iterdir() if ".tmp-" in p.name)


TOKENS = np.random.default_rng(0).integers(3, 97, (2, 10)).astype(np.int32)


@pytest.mark.parametrize("name", ["llama", "qwen2-tied"])
def test_saved_model_loads_in_transformers_with_same_logits(models, tmp_path, name):
    model = jaxmerge.load(models[name])
    out = jaxmerge.save(model, tmp_path / "out")
    ours = jaxmerge.logits(model, TOKENS)
    assert np.abs(ours - hf_logits(models[name], TOKENS)).max() <= ORACLE_TOL
    assert np.abs(hf_logits(out, TOKENS) - ours).max() <= ORACLE_TOL
    assert ("lm_head.weight" in stored(out)) == (name == "llama")  # tied: head not duplicated


@pytest.mark.parametrize("name", ["llama", "bf16"])
def test_load_save_is_bit_exact_per_tensor(models, tmp_path, name):
    model = jaxmerge.load(models[name])
    before, after = stored(models[name]), stored(jaxmerge.save(model, tmp_path / "out"))
    assert sorted(before) == sorted(after)
    for key in before:
        assert before[key].dtype == after[key].dtype and before[key].shape == after[key].shape, key
        assert before[key].tobytes() == after[key].tobytes(), key
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["dtype"] == model.dtype == ("bfloat16" if name == "bf16" else "float32")
    assert ArchSpec.from_dir(tmp_path / "out").replace(inert=()) == model.spec.replace(inert=())


def test_sharded_save_writes_shards_and_index_and_loads_back(models, tmp_path):
    model = jaxmerge.load(models["llama"])
    out = jaxmerge.save(model, tmp_path / "out", max_shard_size="50KB")
    shards = sorted(p.name for p in out.glob("*.safetensors"))
    assert len(shards) > 2 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    index = json.loads((out / "model.safetensors.index.json").read_text())
    tensors = stored(out)
    assert set(index["weight_map"]) == set(tensors) and set(index["weight_map"].values()) == set(shards)
    assert index["metadata"]["total_size"] == sum(t.nbytes for t in tensors.values())
    assert all((out / f).stat().st_size < 50_000 + 10_000 for f in shards)  # shard bytes + a header
    back = jaxmerge.load(out)
    for key, t in stored(models["llama"]).items():
        assert np.array_equal(tensors[key], t)
    assert back.spec == jaxmerge.load(models["llama"]).spec.replace(inert=back.spec.inert)
    hf = transformers.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    assert all(np.array_equal(v.numpy(), tensors[k]) for k, v in hf.state_dict().items())


def test_transformers_sharded_checkpoint_loads(models, tmp_path):
    hf = transformers.AutoModelForCausalLM.from_pretrained(models["llama"], dtype=torch.float32)
    hf.save_pretrained(tmp_path / "hf", max_shard_size="50KB")
    assert len(list((tmp_path / "hf").glob("*.safetensors"))) > 2
    assert (tmp_path / "hf" / "model.safetensors.index.json").is_file()
    model = jaxmerge.load(tmp_path / "hf")
    ref = jaxmerge.load(models["llama"])
    assert all(np.array_equal(a, b) for a, b in zip(leaves(model.params), leaves(ref.params)))


def leaves(tree):
    return [tree[k] if k != "layers" else tree[k][j] for k in sorted(tree) for j in
            (sorted(tree[k]) if k == "layers" else [None])]


def test_bf16_model_runs_close_to_its_f32_upcast(models):
    model = jaxmerge.load(models["bf16"])
    assert model.dtype == "bfloat16"
    assert {np.dtype(x.dtype) for x in leaves(model.params)} == {np.dtype(ml_dtypes.bfloat16)}
    bf16 = jaxmerge.logits(model, TOKENS)
    f32 = jaxmerge.logits(jaxmerge.load(models["bf16"], dtype="float32"), TOKENS)
    assert np.isfinite(bf16).all() and bf16.dtype == np.float32
    diff = np.abs(bf16 - f32).max()
    assert 0 < diff <= BF16_REL_TOL * np.abs(f32).max()
    assert np.abs(f32 - hf_logits(models["bf16"], TOKENS)).max() <= ORACLE_TOL  # HF upcasts bf16 weights too
    hf = transformers.AutoModelForCausalLM.from_pretrained(models["bf16"], dtype=torch.bfloat16).eval()
    with torch.no_grad():
        hf_bf16 = hf(torch.as_tensor(TOKENS)).logits.float().numpy()
    assert diff <= BF16_VS_HF * np.abs(hf_bf16 - f32).max()  # no worse than transformers' own bf16 run


def test_dtype_casts_every_tensor(models):
    ref = jaxmerge.load(models["llama"])
    cast = jaxmerge.load(models["llama"], dtype="bfloat16")
    assert cast.dtype == "bfloat16"
    for a, b in zip(leaves(ref.params), leaves(cast.params)):
        assert b.dtype == ml_dtypes.bfloat16 and np.array_equal(a.astype(ml_dtypes.bfloat16), b)
    with pytest.raises(JaxmergeError, match="float64"):
        jaxmerge.load(models["llama"], dtype="float64")


def test_repo_id_resolves_from_local_hf_cache_offline(models, tmp_path, monkeypatch):
    """HF cache layout: blobs + snapshots/<rev> of symlinks + refs/main; HF_HUB_CACHE read at call time."""
    repo = tmp_path / "hub" / "models--tiny-org--tiny-llama"
    snapshot = repo / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    for file in models["llama"].iterdir():
        blob = repo / "blobs" / f"blob-{file.name}"
        shutil.copy(file, blob)
        (snapshot / file.name).symlink_to(os.path.relpath(blob, snapshot))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    model = jaxmerge.load("tiny-org/tiny-llama")
    assert model.path == snapshot
    assert all(np.array_equal(a, b) for a, b in zip(leaves(model.params),
                                                    leaves(jaxmerge.load(models["llama"]).params)))
    with pytest.raises(JaxmergeError, match="tiny-org/absent.*cache"):
        jaxmerge.load("tiny-org/absent")


def test_hf_cache_location_follows_huggingface_hub_env_rules(tmp_path, monkeypatch):
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert hf_cache_dir() == tmp_path / ".cache" / "huggingface" / "hub"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hf_cache_dir() == tmp_path / "xdg" / "huggingface" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert hf_cache_dir() == tmp_path / "home" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert hf_cache_dir() == tmp_path / "hub"


@pytest.mark.parametrize("how", BREAKERS)
def test_bad_checkpoints_are_refused_naming_the_problem(models, tmp_path, how):
    word = broken_copy(models["llama"], tmp_path / "bad", how)
    with pytest.raises(JaxmergeError) as info:
        jaxmerge.load(tmp_path / "bad")
    message = str(info.value)
    assert word in message and "\n" not in message
    assert "expected" in message or "must be" in message


def test_missing_directory_is_refused(tmp_path):
    with pytest.raises(JaxmergeError, match="no-such-model"):
        jaxmerge.load(tmp_path / "no-such-model")


def test_save_refuses_non_empty_dir_and_file_and_leaves_them(models, tmp_path):
    model = jaxmerge.load(models["llama"])
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    (tmp_path / "file").write_text("mine")
    for target in ("full", "file"):
        with pytest.raises(JaxmergeError, match=target):
            jaxmerge.save(model, tmp_path / target)
    assert os.listdir(tmp_path / "full") == ["keep.txt"] and (tmp_path / "file").read_text() == "mine"
    assert leftovers(tmp_path) == []
    with pytest.raises(JaxmergeError, match="full.*did not write"):  # not even with overwrite: not ours
        jaxmerge.save(model, tmp_path / "full", overwrite=True)
    assert os.listdir(tmp_path / "full") == ["keep.txt"]
    jaxmerge.save(model, tmp_path / "ours")
    (tmp_path / "ours" / "stale.txt").write_text("left in our output")
    jaxmerge.save(model, tmp_path / "ours", overwrite=True)
    assert not (tmp_path / "ours" / "stale.txt").exists() and (tmp_path / "ours" / "config.json").is_file()


def test_failed_save_writes_nothing(models, tmp_path, monkeypatch):
    model = jaxmerge.load(models["llama"])
    calls = []

    def failing_save_file(tensors, filename, metadata=None):
        calls.append(filename)
        if len(calls) == 2:
            raise OSError("disk full")
        open(filename, "wb").write(b"partial")

    monkeypatch.setattr("jaxmerge.io.save_file", failing_save_file)
    with pytest.raises(OSError, match="disk full"):
        jaxmerge.save(model, tmp_path / "out", max_shard_size="50KB")
    assert os.listdir(tmp_path) == []


def test_tokenizer_and_generation_files_come_from_the_chosen_source(models, tmp_path):
    tok_src = tmp_path / "tok"
    tok_src.mkdir()
    (tok_src / "tokenizer_config.json").write_text('{"model_max_length": 64}')
    model = jaxmerge.load(models["llama"])
    plain = jaxmerge.save(model, tmp_path / "plain")
    assert (plain / "generation_config.json").read_text() == (models["llama"] / "generation_config.json").read_text()
    chosen = jaxmerge.save(model, tmp_path / "chosen", tokenizer_from=tok_src)
    assert (chosen / "tokenizer_config.json").read_text() == '{"model_max_length": 64}'
    assert not (chosen / "generation_config.json").exists()


def test_save_refuses_params_the_spec_contradicts(models, tmp_path):
    """Checked before anything is written: wrong shape, missing/extra leaf, float64 (unreadable by `load`)."""
    model = jaxmerge.load(models["llama"])
    layers = model.params["layers"]
    bad = {
        "q_proj": {**model.params, "layers": {**layers, "q_proj": layers["q_proj"][:, :-1]}},
        "lm_head": {k: v for k, v in model.params.items() if k != "lm_head"},
        "float64": {**model.params, "norm": model.params["norm"].astype(np.float64)},
    }
    for word, params in bad.items():
        with pytest.raises(JaxmergeError, match=word):
            jaxmerge.save(jaxmerge.Model(model.spec, params), tmp_path / "out")
    assert os.listdir(tmp_path) == []


def test_tensor_in_two_unindexed_files_is_refused(models, tmp_path):
    shutil.copytree(models["llama"], tmp_path / "m")
    shutil.copy(tmp_path / "m" / "model.safetensors", tmp_path / "m" / "copy.safetensors")
    with pytest.raises(JaxmergeError, match="model.embed_tokens.weight.*twice|twice"):
        jaxmerge.load(tmp_path / "m")


def test_logits_refuses_token_ids_outside_the_vocabulary(models):
    model = jaxmerge.load(models["llama"])
    with pytest.raises(JaxmergeError, match=r"\[0, 97\).*97"):
        jaxmerge.logits(model, np.array([[1, 97]]))
    with pytest.raises(JaxmergeError, match="integer tokens"):
        jaxmerge.logits(model, np.array([1, 2]))


def test_index_naming_a_missing_shard_is_refused(models, tmp_path):
    out = jaxmerge.save(jaxmerge.load(models["llama"]), tmp_path / "out", max_shard_size="50KB")
    next(out.glob("model-00002-of-*.safetensors")).unlink()
    with pytest.raises(JaxmergeError, match="model-00002-of-.*missing"):
        jaxmerge.load(out)


@pytest.mark.parametrize("content", ["{not json", '{"metadata": {}}', '{"weight_map": [1, 2]}',
                                     '{"weight_map": {"model.norm.weight": 3}}'])
def test_invalid_index_file_is_refused(models, tmp_path, content):
    shutil.copytree(models["llama"], tmp_path / "m")
    (tmp_path / "m" / "model.safetensors.index.json").write_text(content)
    with pytest.raises(JaxmergeError, match="model.safetensors.index.json"):
        jaxmerge.load(tmp_path / "m")
