"""Mixtures of experts: grouped compute equals every-expert compute, costs rows in proportion to top-k, loads and
saves both checkpoint layouts (transformers' per-expert tensors, mergekit's stacked ones), loads sliced over a
model axis, and gives experts their own genes."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxmerge
from jaxmerge.arch import ArchSpec
from jaxmerge.evolve.mesh import build_mesh
from jaxmerge.evolve.sliced import load_table, open_checkpoint
from jaxmerge.layers import ACTIVATIONS
from jaxmerge.moe import block_rows, dense_moe, moe_block
from jaxmerge.params import hf_names, param_shapes, spec_groups
from jaxmerge.ps.genome import Gene, GeneSpec
from tests.merge_oracle import read_tensors
from tests.tiny import FULL_FEATURES, hf_logits, make_tiny_model

SAME_MATH_TOL = 1e-5  # float32, two of our code paths computing the same thing


def moe_spec(experts=4, k=2, norm=True):
    return ArchSpec("mixtral", vocab_size=97, hidden_size=32, intermediate_size=24, num_layers=1, num_heads=4,
                    num_kv_heads=2, head_dim=8, num_experts=experts, experts_per_token=k, expert_size=24,
                    norm_topk=norm)


def random_layer(spec, seed=0):
    rng = np.random.default_rng(seed)
    e, d, f = spec.num_experts, spec.hidden_size, spec.expert_size
    return {"router": rng.normal(size=(e, d)).astype(np.float32),
            "experts_gate_up": (0.2 * rng.normal(size=(e, 2 * f, d))).astype(np.float32),
            "experts_down": (0.2 * rng.normal(size=(e, d, f))).astype(np.float32)}


@pytest.mark.parametrize("experts,k,tokens", [(4, 2, (1, 1)), (4, 2, (3, 7)), (16, 2, (2, 64)), (8, 8, (1, 5))])
def test_grouped_experts_equal_every_expert_weighted(experts, k, tokens):
    spec = moe_spec(experts, k, norm=experts != 16)
    lp, act = random_layer(spec), ACTIVATIONS["silu"]
    x = jnp.asarray(np.random.default_rng(1).normal(size=(*tokens, 32)), jnp.float32)
    got = jax.jit(lambda x: moe_block(spec, lp, x, act))(x)
    want = jax.jit(lambda x: dense_moe(spec, lp, x, act))(x)
    assert got.shape == x.shape and float(jnp.abs(want).max()) > 0.1
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=0, atol=SAME_MATH_TOL)


def expert_rows(spec, tokens):
    """Rows of expert matmuls the grouped block runs for `tokens` tokens, read from its program: the length of
    the loop over blocks times the rows of the block each iteration multiplies."""
    lp, x = random_layer(spec), jnp.zeros((tokens, 32), jnp.float32)
    jaxpr = jax.make_jaxpr(lambda x: moe_block(spec, lp, x, ACTIVATIONS["silu"]))(x)
    loops = [e for e in jaxpr.eqns if e.primitive.name == "scan"]
    assert len(loops) == 1
    dots = [e for e in loops[0].params["jaxpr"].eqns if e.primitive.name == "dot_general"]
    return loops[0].params["length"] * dots[0].invars[0].aval.shape[0]


def test_compute_scales_with_top_k_not_with_the_expert_count():
    """Dense compute is tokens x experts rows; grouped is about tokens x k (plus at most one padded block per
    expert): 4x the experts at the same k costs no more than ~2x the rows, and stays far below dense."""
    tokens = 256
    small, large = expert_rows(moe_spec(16, 2), tokens), expert_rows(moe_spec(64, 2), tokens)
    assert small == block_rows(tokens, 2, 16)[0] * block_rows(tokens, 2, 16)[1]
    assert small <= 2 * tokens * 2 + 16 * 32 and large <= 2 * small
    assert large <= 0.1 * tokens * 64  # dense: 16384 rows
    assert expert_rows(moe_spec(64, 8), tokens) >= 3 * large  # k counts


@pytest.fixture(scope="module")
def mixtral(tmp_path_factory):
    root = tmp_path_factory.mktemp("moe")
    return make_tiny_model(root / "mixtral", "mixtral", seed=4, initializer_range=0.15, **FULL_FEATURES["mixtral"])


def test_both_expert_layouts_load_save_and_run_in_transformers(mixtral, tmp_path):
    """transformers writes one tensor per expert; a fused save writes mergekit's stacked tensors, which
    transformers loads with the same logits and jaxmerge loads to the same params (then saves in that layout)."""
    model = jaxmerge.load(mixtral)
    assert model.layout == "per_expert" and "model.layers.0.block_sparse_moe.experts.3.w3.weight" in read_tensors(mixtral)
    fused = jaxmerge.save(jaxmerge.Model(model.spec, model.params), tmp_path / "fused")
    names = set(read_tensors(fused))
    assert names == set(hf_names(model.spec, "fused")) and "model.layers.1.mlp.experts.gate_up_proj" in names
    tokens = np.random.default_rng(0).integers(3, 97, (1, 12)).astype(np.int32)
    np.testing.assert_allclose(hf_logits(fused, tokens), hf_logits(mixtral, tokens), rtol=0, atol=1e-6)
    again = jaxmerge.load(fused)
    assert again.layout == "fused"
    for a, b in zip(jax.tree.leaves(again.params), jax.tree.leaves(model.params)):
        np.testing.assert_array_equal(a, b)
    assert read_tensors(jaxmerge.save(again, tmp_path / "again")).keys() == names


def test_per_expert_checkpoint_loads_sliced_over_the_model_axis(mixtral):
    """Each device reads only its block of the stacked experts, from the per-expert tensors that hold it."""
    ckpt = open_checkpoint(mixtral)
    mesh = build_mesh(4, 2, 8)
    got = load_table(ckpt.table, ckpt.spec, mesh, "float32")
    want = jaxmerge.load(mixtral).params
    assert got["layers"]["experts_gate_up"].sharding.spec[2] == "model"  # the 2F rows split over "model"
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_array_equal(np.asarray(a), b)


def test_param_groups_give_experts_their_own_genes():
    spec = moe_spec()
    genes = GeneSpec(spec, 2, (Gene("weight", True, 0.5, 0.0, 1.0),), param_groups=True)
    assert spec_groups(spec) == ("embed", "attn", "norm", "experts") and genes.num_param_groups == 4  # no dense MLP
    assert spec_groups(spec.replace(shared_expert_size=8)) == ("embed", "attn", "mlp", "norm", "experts")
    raw = jnp.arange(genes.size, dtype=jnp.float32) / genes.size
    hp = genes.hparams(raw)["weight"]
    cells = genes.decode(raw)["weight"]  # [M, G, C]
    for leaf in ("router", "experts_gate_up", "experts_down"):
        np.testing.assert_array_equal(np.asarray(hp["layers"][leaf][:, 0]), np.asarray(cells[:, 0, 3]))
    np.testing.assert_array_equal(np.asarray(hp["layers"]["q_proj"][:, 0]), np.asarray(cells[:, 0, 1]))
    assert set(param_shapes(spec)["layers"]) >= {"router", "experts_gate_up", "experts_down"}
