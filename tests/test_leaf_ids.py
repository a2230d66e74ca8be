"""Merge leaf ids are explicit and append-only: the DARE / DELLA mask of a tensor is a function of
fold_in(fold_in(key, LEAF_IDS[leaf]), layer), so renumbering a leaf would silently change what a key recorded by
an old run (recipe.yml's merge_key) rebuilds."""
import hashlib

import jax
import numpy as np

from jaxmerge.evolve.mesh import LEAF_AXES
from jaxmerge.merge import LEAF_IDS
from jaxmerge.merge.sparsify import uniform
from jaxmerge.params import LEAVES

# The leaves jaxmerge had before model families became records, in the order their ids were once enumerated.
ORIGINAL = ("embed", "norm", "lm_head", "input_layernorm", "q_proj", "k_proj", "v_proj", "q_bias", "k_bias",
            "v_bias", "q_norm", "k_norm", "o_proj", "o_bias", "post_attention_layernorm", "gate_proj", "up_proj",
            "down_proj")
# sha256 of the keep-masks (uniform < 0.5, 4 x 8 elements, layer 1) of every original leaf under key 1234, as
# the code before the change computed them (/work/main at d41b3fa): a recorded key must keep drawing these.
RECORDED = "fff7af5e49ecab60407771e17093acaa1a28d4009f2afa2f8c58940bcdf3f40c"


def test_original_leaves_keep_their_ids():
    assert {leaf: LEAF_IDS[leaf] for leaf in ORIGINAL} == {leaf: i for i, leaf in enumerate(ORIGINAL)}


def test_ids_are_unique_and_dense():
    """New leaves take the next free number: no id is shared or skipped."""
    assert sorted(LEAF_IDS.values()) == list(range(len(LEAF_IDS)))
    assert LEAF_IDS == {name: leaf.id for name, leaf in LEAVES.items()} and set(LEAF_AXES) == set(LEAVES)


def test_masks_behind_a_recorded_key_are_unchanged():
    key, digest = jax.random.key(1234), hashlib.sha256()
    for leaf in sorted(ORIGINAL):
        leaf_key = jax.random.fold_in(jax.random.fold_in(key, LEAF_IDS[leaf]), 1)
        digest.update(np.asarray(uniform(leaf_key, (4, 8), 0) < 0.5).tobytes())
    assert digest.hexdigest() == RECORDED
