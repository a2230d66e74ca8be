"""Sources loaded sliced onto a (pop, model) mesh of the 8 fake CPU devices equal `jaxmerge.io.load` + stack
exactly (f32 and bf16 on disk, a sharded checkpoint, tied embeddings, biases and qk-norms), are laid out by the
rules table, and are read only in the blocks their devices hold."""
import jax
import ml_dtypes
import numpy as np
import pytest
import torch

import jaxmerge.evolve.sliced as sliced
from jaxmerge.errors import JaxmergeError
from jaxmerge.evolve.mesh import build_mesh, tensor_spec
from jaxmerge.evolve.sliced import load_table, open_checkpoint
from jaxmerge.params import stack
from jaxmerge.io import load, save
from tests.tiny import make_tiny_model

OVERRIDES = {"llama": {}, "qwen2": {"tie_word_embeddings": True}, "qwen3": {}}


@pytest.fixture(scope="module")
def families(tmp_path_factory):
    """Per family: three sources of one shape; llama's second is re-saved sharded, qwen3's are bf16 on disk."""
    root = tmp_path_factory.mktemp("sliced")
    out = {}
    for family, extra in OVERRIDES.items():
        dtype = torch.bfloat16 if family == "qwen3" else torch.float32
        paths = [make_tiny_model(root / f"{family}{i}", family, seed=i, dtype=dtype, num_key_value_heads=4,
                                 **extra) for i in range(3)]
        out[family] = paths
    save(load(out["llama"][1]), root / "llama-sharded", max_shard_size="4KB")
    out["llama"][1] = root / "llama-sharded"
    return out


def sliced_stack(paths, mesh, dtype):
    ckpts = [open_checkpoint(p) for p in paths]
    return load_table(stack([c.table for c in ckpts]), ckpts[0].spec, mesh, dtype)


@pytest.mark.parametrize("family", sorted(OVERRIDES))
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_sliced_stack_equals_load_and_stack(families, family, dtype):
    paths = families[family]
    if family == "llama":
        assert len(list(paths[1].glob("*.safetensors"))) > 1  # the sharded checkpoint really is sharded
    mesh = build_mesh(4, 2, 8)
    got = sliced_stack(paths, mesh, dtype)
    want = stack([load(p, dtype=dtype).params for p in paths])
    assert jax.tree.structure(got) == jax.tree.structure(want)
    assert ("lm_head" in got) == (family != "qwen2")
    for (path, g), w in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want)):
        leaf = path[-1].key
        assert g.dtype == w.dtype == np.dtype(ml_dtypes.bfloat16 if dtype == "bfloat16" else np.float32)
        assert g.sharding.spec == tensor_spec(mesh, leaf, w.shape)
        np.testing.assert_array_equal(np.asarray(g).view(np.uint16 if dtype == "bfloat16" else np.uint32),
                                      w.view(np.uint16 if dtype == "bfloat16" else np.uint32), err_msg=leaf)
    assert got["layers"]["q_proj"].sharding.spec[2] == "model"  # heads really split over the model axis
    assert got["layers"]["down_proj"].sharding.spec[3] == "model"  # a column split too


def test_sliced_dfs_pool_equals_pool_params(families, tmp_path):
    """A DFS pool (A's globals, then every layer of sources with different layer counts) loads sliced exactly."""
    from jaxmerge.dfs.sources import pool_layout, pool_params
    short = make_tiny_model(tmp_path / "short", "llama", seed=7, num_key_value_heads=4, num_hidden_layers=2)
    paths = [families["llama"][0], short, families["llama"][1]]
    ckpts = [open_checkpoint(p) for p in paths]
    mesh = build_mesh(4, 2, 8)
    got = load_table(pool_layout([c.table for c in ckpts]), ckpts[0].spec, mesh, "float32")
    want = pool_params([load(p, dtype="float32") for p in paths])
    assert got["pool"]["q_proj"].shape[0] == 3 + 2 + 3
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_array_equal(np.asarray(g), w)


def counted_reads(monkeypatch) -> list:
    """Record (HF name, block index as (start, stop) pairs, file, bytes) of every block of a tensor read."""
    reads, real = [], sliced.read_block

    def counting(file, name, index, out):
        reads.append((name, tuple((s.start, s.stop) for s in index), str(file), out.nbytes))
        return real(file, name, index, out)
    monkeypatch.setattr(sliced, "read_block", counting)
    return reads


def test_each_block_is_read_once_and_only_the_blocks_devices_hold(families, monkeypatch):
    """The pop replicas of a block share one read; every read is exactly one device's block of one tensor."""
    reads = counted_reads(monkeypatch)
    mesh = build_mesh(4, 2, 8)
    got = sliced_stack(families["llama"], mesh, "float32")
    assert len(reads) == len({r[:3] for r in reads})  # no block of any file read twice
    leaves = [(k, v, 1) for k, v in got.items() if k != "layers"] + [(k, v, 2) for k, v in got["layers"].items()]
    for leaf, array, lead in leaves:
        blocks = {tuple(s.indices(n)[:2] for s, n in zip(idx[lead:], array.shape[lead:]))
                  for idx in array.sharding.addressable_devices_indices_map(array.shape).values()}
        mine = [r for r in reads if NAME_TO_LEAF[r[0]] == leaf]
        assert {r[1] for r in mine} == blocks, leaf
        assert sum(r[3] for r in mine) == array.nbytes, leaf  # the distinct blocks tile the array once
    assert sum(r[3] for r in reads) == sum(x.nbytes for x in jax.tree.leaves(got))


def test_two_processes_each_read_only_their_half(tmp_path):
    """2 processes x 1 CPU device, the model axis spanning both (benchmarks/load_rss.py's workers): each reads
    exactly the bytes its device holds (half of every split tensor, the whole of the replicated norms), and its
    shards equal io.load + stack."""
    from benchmarks.load_rss import NUM_SOURCES, SIZES, launch, write_sources
    paths, total = write_sources(tmp_path, SIZES[True])
    reports = launch("sliced", paths, tmp_path, timeout=300, verify=True)
    size = SIZES[True]  # replicated: [M, L, D] input/post-attention norms and [M, D] final norm, float32
    norms = NUM_SOURCES * (2 * size["layers"] + 1) * size["hidden"] * 4
    for r in reports:
        assert r["equal"]
        assert r["bytes_read"] == r["device_bytes"] == (total - norms) // 2 + norms


def test_bad_tensors_are_refused_from_headers_and_slices(families, tmp_path):
    from safetensors import safe_open
    from safetensors.numpy import save_file
    src = families["llama"][0]
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text((src / "config.json").read_text())
    with safe_open(str(src / "model.safetensors"), framework="np") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    tensors["model.layers.1.mlp.up_proj.weight"] = tensors["model.layers.1.mlp.up_proj.weight"][:, :5].copy()
    save_file(tensors, str(bad / "model.safetensors"))
    with pytest.raises(JaxmergeError, match="up_proj.weight expected shape"):
        open_checkpoint(bad)
    tensors["model.layers.1.mlp.up_proj.weight"] = np.full((64, 32), np.nan, np.float32)
    save_file(tensors, str(bad / "model.safetensors"))
    with pytest.raises(JaxmergeError, match="up_proj.weight expected finite values"):
        sliced_stack([bad], build_mesh(4, 2, 8), "float32")


def _names():
    from jaxmerge.arch import ArchSpec
    from jaxmerge.params import hf_names
    from tests.tiny import make_config
    spec = ArchSpec.from_hf_config(make_config("llama", num_key_value_heads=4).to_dict(), "tiny")
    return {name: t.leaf for name, t in hf_names(spec).items()}


NAME_TO_LEAF = _names()
