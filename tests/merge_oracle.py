"""Shared helpers for the merge tests: a family of tiny fine-tunes and mergekit (in-process) as the oracle."""
from __future__ import annotations

import types
from pathlib import Path

import ml_dtypes  # registers numpy's bfloat16, which read_tensors may meet
import numpy as np
import torch
from safetensors import safe_open

from tests.tiny import make_tiny_model


def make_family(root: Path, family: str = "llama", n: int = 3, dtype=torch.float32, **overrides) -> dict[str, str]:
    """A base and `n` fine-tunes of it (base + N(0, 0.02) noise): what merging is for. `overrides`: the base's
    config (e.g. tests/tiny.py FULL_FEATURES)."""
    base = make_tiny_model(root / "base", family, seed=0, dtype=dtype, **overrides)
    paths = {"base": str(base)}
    for i in range(n):
        paths[f"ft{i}"] = str(make_tiny_model(root / f"ft{i}", family, seed=i + 1, perturb_from=base, dtype=dtype))
    return paths


def stable_sorts(monkeypatch):
    """mergekit's sparsify (and sce's top-k) with torch's STABLE sorts: the same counts, with elements tied at the cut taken
    lower index first. mergekit's own unstable argsort breaks such ties in a data-dependent order (libstdc++
    introsort partitions), which no index rule reproduces; with this, every other difference would show."""
    import mergekit.sparsify as sp
    shim = types.SimpleNamespace(**{k: getattr(torch, k) for k in dir(torch) if not k.startswith("__")})
    shim.argsort = lambda x, descending=False, **kw: torch.argsort(x, descending=descending, stable=True, **kw)
    shim.sort = lambda x, descending=False, **kw: torch.sort(x, descending=descending, stable=True, **kw)
    monkeypatch.setattr(sp, "torch", shim)
    import mergekit.merge_methods.sce as sce  # its top-k of variances: the same rule for elements tied at the cut

    def topk(x, k, largest=True):
        order = torch.argsort(x, descending=largest, stable=True)[:k]
        return x[order], order
    monkeypatch.setattr(sce, "torch", types.SimpleNamespace(**{**vars(shim), "topk": topk}))
    return sp


def mergekit_merge(recipe: dict, out: Path, **changes) -> dict[str, np.ndarray]:
    """Run mergekit 0.1.5 in-process on `recipe` (absolute paths) and return its tensors. `changes`: MergeOptions
    fields (copy_tokenizer=True to have it write a donor's tokenizer, with a chat template)."""
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions
    options = MergeOptions(**{**dict(allow_crimes=True, quiet=True, write_model_card=False, copy_tokenizer=False),
                              **changes})
    run_merge(MergeConfiguration.model_validate(recipe), str(out), options)
    return read_tensors(out)


def jaxmerge_merge(recipe: dict, out: Path, seed: int = 0, **options) -> dict[str, np.ndarray]:
    from jaxmerge.merge.build import merge_recipe
    from jaxmerge.merge.recipe import parse_recipe
    merge_recipe(parse_recipe(recipe), out, seed=seed, **options)
    return read_tensors(out)


def read_tensors(out: Path) -> dict[str, np.ndarray]:
    tensors = {}
    for f in sorted(Path(out).glob("*.safetensors")):
        with safe_open(str(f), framework="np") as handle:  # bf16 too (safetensors.numpy.load_file cannot)
            tensors.update({k: handle.get_tensor(k) for k in handle.keys()})
    return tensors


def ulps(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Elementwise distance in representable 16-bit values (1: neighbours), +0 and -0 counting as one value."""
    def ordered(x):
        i = x.view(np.uint16).astype(np.int64)
        return np.where(i & 0x8000, -(i & 0x7FFF), i)
    return np.abs(ordered(a) - ordered(b))


def worst_relative(ours: dict, theirs: dict) -> tuple[float, str]:
    """max over tensors of max|ours - theirs| / max|theirs|, and the tensor where it happens."""
    assert sorted(ours) == sorted(theirs), (sorted(set(ours) ^ set(theirs)))
    worst = (0.0, "")
    for name, ref in theirs.items():
        assert ours[name].shape == ref.shape and ours[name].dtype == ref.dtype, name
        rel = float(np.abs(ours[name].astype(np.float64) - ref).max() / max(np.abs(ref).max(), 1e-12))
        worst = max(worst, (rel, name))
    return worst


CUT_BAND = 1e-2  # arcee_fusion: how near mergekit's threshold an element whose mask differs must lie
CUT_SHARE = 1e-2  # and what share of a tensor such elements may be


def fusion_cut(base: np.ndarray, ft: np.ndarray, dtype=torch.float32) -> tuple[np.ndarray, float]:
    """mergekit's own importance and threshold of one tensor (its functions, on the same inputs and dtype)."""
    from mergekit.merge_methods.arcee_fusion import DynamicThresholdFusion, _compute_importance
    to = lambda x: torch.from_numpy(x.astype(np.float32)).to(dtype)
    importance = _compute_importance(to(ft), to(base))
    _, threshold = DynamicThresholdFusion().compute_fusion_mask(importance)
    return importance.float().numpy(), float(threshold)


def assert_cut_family(ours: dict, theirs: dict, base: dict, ft: dict, tol: float, dtype=torch.float32) -> int:
    """arcee_fusion's family (tests/test_merge_parity.py): elements off by more than `tol` relative to their
    tensor's max lie within CUT_BAND of mergekit's threshold and are at most CUT_SHARE of it. Returns them."""
    assert sorted(ours) == sorted(theirs)
    flipped = 0
    for name, ref in theirs.items():
        ref = ref.astype(np.float32)
        close = np.abs(ours[name].astype(np.float32) - ref) <= tol * max(np.abs(ref).max(), 1e-12)
        if close.all():
            continue
        importance, threshold = fusion_cut(base[name], ft[name], dtype)
        near = np.abs(importance - threshold) <= CUT_BAND * threshold
        assert near[~close].all(), f"{name}: an element away from the cut differs"
        assert (~close).mean() <= CUT_SHARE, f"{name}: {(~close).sum()} elements differ"
        flipped += int((~close).sum())
    return flipped


# tolerance families of 16-bit merges against mergekit (tests/test_merge_dtype.py says why each is what it is)
ROUNDED_ONCE = {"linear", "slerp"}   # float32 math rounded once: at most 1 unit in the last place
KARCHER_EPS = 4                      # karcher: within 4 epsilons of the dtype, relative to the tensor's max
PROMOTED = {"ramplus_tl", "arcee_fusion"}  # mergekit writes float32: compare its tensors rounded to the dtype


def assert_karcher_close(ours: np.ndarray, ref: np.ndarray, name: str) -> None:
    """karcher's family: within KARCHER_EPS epsilons of the dtype (ml_dtypes.finfo: numpy's own knows no
    bfloat16 without ml_dtypes 0.7), relative to the tensor's max."""
    eps = float(ml_dtypes.finfo(ours.dtype).eps)
    gap = np.abs(ours.astype(np.float32) - ref.astype(np.float32)).max()
    assert gap <= KARCHER_EPS * eps * np.abs(ref.astype(np.float32)).max(), name
