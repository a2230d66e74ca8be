"""DFS sources on the host: check that models can share one stream, and stack their layers into one pool.

Host-side and run once per search (never traced): it may read numpy arrays and `Model`s; the jitted path
functions in `path.py` only see the resulting pytree.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from jaxmerge.arch import check_same_architecture
from jaxmerge.dfs.layout import DFSLayout
from jaxmerge.errors import expect
from jaxmerge.io import Model
from jaxmerge.params import Params


def check_sources(models: Sequence[Model]) -> None:
    """Every source must have A's architecture (up to its layer count): their layers run on A's stream."""
    expect(len(models) >= 1, "expected at least one model for a DFS search, found none")
    check_same_architecture([(m.spec, m.path) for m in models], same_depth=False)


def layout_for(models: Sequence[Model], repeats: int = 3, w_mode: str = "matrix") -> DFSLayout:
    check_sources(models)
    return DFSLayout(tuple(m.spec.num_layers for m in models), repeats, w_mode)


def pool_params(models: Sequence[Model]) -> Params:
    """A's globals plus every source layer stacked in layout order under "pool" (host arrays, built once)."""
    check_sources(models)
    return pool_layout([m.params for m in models])


def pool_layout(trees: Sequence[Params]) -> Params:
    """The pool's layout from per-model canonical trees (arrays, or the name tables of jaxmerge.evolve.sliced)."""
    out = {k: v for k, v in trees[0].items() if k != "layers"}
    out["pool"] = {leaf: np.concatenate([np.asarray(t["layers"][leaf]) for t in trees]) for leaf in trees[0]["layers"]}
    return out
