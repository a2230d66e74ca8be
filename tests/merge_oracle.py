"""Shared helpers for the merge tests: a family of tiny fine-tunes and mergekit (in-process) as the oracle."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

from tests.tiny import make_tiny_model


def make_family(root: Path, family: str = "llama", n: int = 3) -> dict[str, str]:
    """A base and `n` fine-tunes of it (base + N(0, 0.02) noise): what merging is for."""
    base = make_tiny_model(root / "base", family, seed=0)
    paths = {"base": str(base)}
    for i in range(n):
        paths[f"ft{i}"] = str(make_tiny_model(root / f"ft{i}", family, seed=i + 1, perturb_from=base))
    return paths


def mergekit_merge(recipe: dict, out: Path) -> dict[str, np.ndarray]:
    """Run mergekit 0.1.5 in-process on `recipe` (absolute paths) and return its tensors."""
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions
    options = MergeOptions(allow_crimes=True, quiet=True, write_model_card=False, copy_tokenizer=False)
    run_merge(MergeConfiguration.model_validate(recipe), str(out), options)
    return read_tensors(out)


def jaxmerge_merge(recipe: dict, out: Path, seed: int = 0) -> dict[str, np.ndarray]:
    from jaxmerge.merge.build import merge_recipe
    from jaxmerge.merge.recipe import parse_recipe
    merge_recipe(parse_recipe(recipe), out, seed=seed)
    return read_tensors(out)


def read_tensors(out: Path) -> dict[str, np.ndarray]:
    tensors = {}
    for f in sorted(Path(out).glob("*.safetensors")):
        tensors.update(load_file(str(f)))
    return tensors


def worst_relative(ours: dict, theirs: dict) -> tuple[float, str]:
    """max over tensors of max|ours - theirs| / max|theirs|, and the tensor where it happens."""
    assert sorted(ours) == sorted(theirs), (sorted(set(ours) ^ set(theirs)))
    worst = (0.0, "")
    for name, ref in theirs.items():
        assert ours[name].shape == ref.shape and ours[name].dtype == ref.dtype, name
        rel = float(np.abs(ours[name].astype(np.float64) - ref).max() / max(np.abs(ref).max(), 1e-12))
        worst = max(worst, (rel, name))
    return worst
