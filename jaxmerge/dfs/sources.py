"""DFS sources on the host: check that models can share one stream, and stack their layers into one pool.

Host-side and run once per search (never traced): it may read numpy arrays and `Model`s; the jitted path
functions in `path.py` only see the resulting pytree.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from jaxmerge.arch import ArchSpec
from jaxmerge.dfs.space import DFSSpace
from jaxmerge.errors import expect
from jaxmerge.io import Model
from jaxmerge.params import Params

SHARED_IGNORED = ("num_layers", "inert")  # spec fields that may differ between DFS sources


def check_sources(models: Sequence[Model]) -> None:
    """Every source must have A's architecture (up to its layer count): their layers run on A's stream."""
    expect(len(models) >= 1, "expected at least one model for a DFS search, found none")
    a = models[0].spec
    for i, m in enumerate(models[1:], start=1):
        for field in dataclasses.fields(ArchSpec):
            mine, theirs = getattr(a, field.name), getattr(m.spec, field.name)
            expect(field.name in SHARED_IGNORED or mine == theirs,
                   f"expected DFS model {i} to share model A's architecture, found {field.name} {theirs!r} "
                   f"where A has {mine!r}")


def space_for(models: Sequence[Model], repeats: int = 3, w_mode: str = "matrix") -> DFSSpace:
    check_sources(models)
    return DFSSpace(tuple(m.spec.num_layers for m in models), repeats, w_mode)


def pool_params(models: Sequence[Model]) -> Params:
    """A's globals plus every source layer stacked in layout order under "pool" (host arrays, built once)."""
    check_sources(models)
    return pool_layout([m.params for m in models])


def pool_layout(trees: Sequence[Params]) -> Params:
    """The pool's layout from per-model canonical trees (arrays, or the name tables of jaxmerge.evolve.sliced)."""
    out = {k: v for k, v in trees[0].items() if k != "layers"}
    out["pool"] = {leaf: np.concatenate([np.asarray(t["layers"][leaf]) for t in trees]) for leaf in trees[0]["layers"]}
    return out
