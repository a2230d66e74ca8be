"""`jaxmerge merge` tensor by tensor (jaxmerge.merge.stream): lazy sources, deferred merged tensors, a writer
that makes them as it writes. Checked here: lazy loading reads what `load` reads (expert pieces too) and checks
finiteness at the read; the streaming writer writes safetensors' own bytes and holds a bounded window of
tensors; the per-tensor programs compile once per shape, never per tensor; an evolve export's `merge_state`
gives the bits `jaxmerge merge` writes; a non-finite merged tensor leaves nothing."""
from __future__ import annotations

import numpy as np
import pytest
from safetensors.numpy import save_file

import jax
from jaxmerge import stwrite
from jaxmerge.deferred import Deferred, DeferredStack, materialise
from jaxmerge.errors import JaxmergeError
from jaxmerge.io import load
from jaxmerge.merge import METHODS, init_state, resolve_hparams
from jaxmerge.merge import stream
from jaxmerge.merge.build import Options, build_sources, merge_key, merge_recipe
from jaxmerge.merge.prepare import load_models
from jaxmerge.merge.recipe import parse_recipe
from jaxmerge.params import aligned_stack, to_hf_tensors
from tests.merge_oracle import make_family, read_tensors
from tests.tiny import make_tiny_model


@pytest.fixture(scope="module")
def fam(tmp_path_factory):
    return make_family(tmp_path_factory.mktemp("stream"))


def _tree_equal(a, b) -> None:
    if isinstance(a, dict):
        assert sorted(a) == sorted(b)
        for k in a:
            _tree_equal(a[k], b[k])
        return
    x, y = np.asarray(a), np.asarray(b)
    assert x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes()


@pytest.mark.parametrize("family,dtype", [("llama", None), ("llama", "bfloat16"), ("mixtral", None)])
def test_lazy_load_reads_what_load_reads(tmp_path, family, dtype):
    path = make_tiny_model(tmp_path / family, family, seed=4)
    eager, lazy = load(path, dtype=dtype), load(path, dtype=dtype, lazy=True)
    assert isinstance(lazy.params["embed"], Deferred)
    assert isinstance(next(iter(lazy.params["layers"].values())), DeferredStack)
    assert lazy.layout == eager.layout and lazy.dtype == eager.dtype and lazy.spec == eager.spec
    _tree_equal(materialise(lazy.params), eager.params)
    leaf = next(iter(eager.params["layers"]))
    np.testing.assert_array_equal(np.asarray(lazy.params["layers"][leaf][1:3]), eager.params["layers"][leaf][1:3])
    # made straight into an array (read from the file into it; pieces and conversions through read): the same
    for name in [k for k in eager.params if k != "layers"]:
        _tree_equal(_made_into(lazy.params[name]), eager.params[name])
    for name, stacked in eager.params["layers"].items():
        _tree_equal(aligned_stack(lazy.params["layers"][name].items), stacked)


def _made_into(tensor: Deferred) -> np.ndarray:
    out = np.full(tensor.shape, 7, tensor.dtype)
    tensor.make_into(out)
    return out


def test_lazy_load_checks_finiteness_when_a_tensor_is_read(tmp_path):
    path = make_tiny_model(tmp_path / "m", "llama", seed=5)
    file = path / "model.safetensors"
    tensors = read_tensors(path)
    tensors["model.layers.1.mlp.up_proj.weight"][0, 0] = np.nan
    save_file(tensors, str(file), metadata={"format": "pt"})
    lazy = load(path, lazy=True)  # headers only: nothing refused yet
    np.asarray(lazy.params["layers"]["up_proj"][0])
    _made_into(lazy.params["layers"]["up_proj"][0])
    for make in (np.asarray, _made_into):
        with pytest.raises(JaxmergeError, match=r"model\.layers\.1\.mlp\.up_proj\.weight expected finite values"):
            make(lazy.params["layers"]["up_proj"][1])


def test_writer_writes_safetensors_own_bytes(tmp_path):
    rng = np.random.default_rng(0)
    import ml_dtypes
    tensors = {"b.w": rng.normal(size=(3, 5)).astype(np.float32), "a.w": rng.normal(size=7).astype(np.float16),
               "c": rng.normal(size=(2, 2)).astype(ml_dtypes.bfloat16), "i": np.arange(6, dtype=np.int32), "u": np.arange(3, dtype=np.uint8),
               "l": np.arange(2, dtype=np.int64), "d": np.ones(2, np.float64), "f": np.ones(2, bool),
               "z.scalar": np.array(2.5, np.float32), "empty": np.zeros((0, 4), np.float32)}
    save_file(tensors, str(tmp_path / "theirs.safetensors"), metadata={"format": "pt"})
    stwrite.write(tensors, tmp_path / "ours.safetensors", metadata={"format": "pt"})
    assert (tmp_path / "ours.safetensors").read_bytes() == (tmp_path / "theirs.safetensors").read_bytes()


def test_writer_makes_tensors_a_bounded_window_ahead(tmp_path, monkeypatch):
    """Deferred tensors are made at most AHEAD before the one being written, and written as they come."""
    made, written, most = [], [], [0]
    real = stwrite._write_at

    def record_write(fd, data, offset):
        written.append(offset)
        real(fd, data, offset)
    monkeypatch.setattr(stwrite, "_write_at", record_write)

    def maker(i):
        def make():
            made.append(i)
            most[0] = max(most[0], len(made) - len(written))
            return np.full((64,), i, np.float32)
        return make
    n = 20
    tensors = {f"t{i:02d}": Deferred((64,), np.float32, maker(i)) for i in range(n)}
    stwrite.write(tensors, tmp_path / "w.safetensors")
    assert sorted(made) == list(range(n)) and len(written) == n
    assert most[0] <= stwrite.AHEAD + 1
    back = read_tensors(tmp_path)
    assert all((back[f"t{i:02d}"] == i).all() for i in range(n))


def _ties(p, **extra):
    return dict(merge_method="ties", base_model=p["base"], dtype="float32", models=[
        dict(model=p["ft0"], parameters=dict(weight=0.6, density=[0.3, 0.8])),
        dict(model=p["ft1"], parameters=dict(weight=0.4, density=0.5))], **extra)


def test_kernels_compile_once_per_shape_not_per_tensor(fam, tmp_path):
    stream._kernel_jit.clear_cache()
    stream._init_once_jit.clear_cache()
    out = merge_recipe(parse_recipe(_ties(fam)), tmp_path / "out", copy_tokenizer=False, write_model_card=False)
    written = read_tensors(out)
    programs = {(".layers." in name, t.shape) for name, t in written.items()}  # globals alone, layers in pairs
    assert stream._kernel_jit._cache_size() == len(programs) < len(written)
    assert stream._init_once_jit._cache_size() == len(programs)


@pytest.mark.parametrize("method", ["ties", "dare_ties", "della", "task_arithmetic", "slerp", "multislerp"])
def test_export_merge_state_gives_the_merge_commands_bits(fam, tmp_path, method):
    """An evolve export merges its full (genome-independent) state with merge_state; `jaxmerge merge` builds a
    one-shot state per tensor. Same kernel program, equal states: the same bits, DARE/DELLA masks included."""
    params = {"ties": dict(density=0.4), "dare_ties": dict(density=0.5), "della": dict(density=0.6, epsilon=0.1),
              "task_arithmetic": {}, "multislerp": {}}.get(method, None)
    if method == "slerp":
        raw = dict(merge_method="slerp", base_model=fam["base"], dtype="float32", parameters=dict(t=[0.2, 0.7]),
                   models=[dict(model=fam["base"]), dict(model=fam["ft0"])])
    else:
        raw = dict(merge_method=method, base_model=fam["base"], dtype="float32", models=[
            dict(model=fam["ft0"], parameters=dict(weight=0.7, **params)),
            dict(model=fam["ft1"], parameters=dict(weight=[0.2, 0.5], **params))])
    recipe = parse_recipe(raw)
    out = merge_recipe(recipe, tmp_path / "cli", seed=7, copy_tokenizer=False, write_model_card=False)
    columns = build_sources(recipe, load_models(recipe))
    state = init_state(METHODS[method], columns.stacked())
    merged = stream.merge_state(METHODS[method], state, resolve_hparams(recipe, columns.spec, columns.names),
                                merge_key(recipe, 7), np.float32)
    ours = to_hf_tensors(columns.spec, jax.tree.map(np.asarray, merged))
    written = read_tensors(out)
    assert sorted(ours) == sorted(written)
    for name, tensor in written.items():
        assert tensor.tobytes() == np.ascontiguousarray(ours[name]).tobytes(), name


def test_non_finite_merge_leaves_nothing(fam, tmp_path):
    raw = dict(merge_method="linear", dtype="float16", parameters=dict(normalize=False), models=[
        dict(model=fam["ft0"], parameters=dict(weight=6e4)), dict(model=fam["ft1"], parameters=dict(weight=6e4))])
    with pytest.raises(JaxmergeError, match="expected finite merged tensors, found NaN or Inf in"):
        merge_recipe(parse_recipe(raw), tmp_path / "out", Options(copy_tokenizer=False))
    assert list(tmp_path.iterdir()) == []
