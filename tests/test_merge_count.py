"""A fraction becomes mergekit's count `int(v * n)` exactly, for the traced float32 v evolution searches and for
recipe values; magnitude top-k keeps exactly that many elements even when |values| tie at the cut (16-bit weights
tie often), choosing tied elements as torch's stable sort does. Oracles: Python's float64 `int(v * n)` (mergekit's
own expression) and mergekit's sparsify functions."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxmerge.merge import count, sparsify
from tests.merge_oracle import stable_sorts

SIZES = [1, 3, 97, 20480, 4096 * 4096, 14336 * 4096, 2**29 + 7, 152064 * 3584, 2**31 - 1]
EDGES = np.float32([0, 1, 0.5, 0.25, 0.3, 0.7, 1e-45, 2**-31, 1 - 2**-24, 3e-38, 0.999])


@pytest.mark.parametrize("n", SIZES)
def test_count_is_mergekits_float64_int_for_every_float32(n):
    rng = np.random.default_rng(n % 1000)
    v = np.concatenate([rng.random(4000).astype(np.float32), (rng.random(500) * 1e-4).astype(np.float32), EDGES])
    got = np.asarray(jax.jit(lambda d: count.count(d, n))(jnp.asarray(v)))
    want = np.array([count.host_count(float(x), n) for x in v])
    assert np.array_equal(got, want), (v[got != want][:3], got[got != want][:3], want[got != want][:3])


def test_the_old_float32_product_moved_the_cut():
    """floor(f32(density) * f32(n)) in float32 (what evolution computed before) differs from mergekit's count
    for many float32 densities of a 14336 x 4096 tensor; the exact count never does."""
    n = 14336 * 4096
    v = np.random.default_rng(0).random(2000).astype(np.float32)
    old = np.floor(v * np.float32(n)).astype(np.int64)
    want = np.array([int(float(x) * n) for x in v])
    assert (old != want).sum() > 100
    assert np.array_equal(np.asarray(jax.jit(lambda d: count.count(d, n))(jnp.asarray(v))), want)


def test_snap_keeps_mergekits_count_or_says_it_cannot():
    rng = np.random.default_rng(1)
    for n in (97, 20480, 4096 * 4096):
        for v in np.round(rng.random(300), 3):
            snapped = count.snap(float(v), n)
            assert snapped is not None and float(np.float32(snapped)) == snapped
            assert count.host_count(snapped, n) == int(float(v) * n)
    assert count.snap(0.5, 14336 * 4096) == 0.5  # already a float32: taken as is
    misses = [v for v in np.round(rng.random(300), 3) if count.snap(float(v), 14336 * 4096) is None]
    assert misses  # more counts than float32 steps: some recipe values have no float32 with their count


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_magnitude_keeps_exactly_int_density_n_with_ties(monkeypatch, dtype):
    x = torch.randn(128, 160, generator=torch.Generator().manual_seed(0)).to(dtype)  # 20480 values, many tie
    xs = jnp.asarray(x.float().numpy())
    rank = sparsify.stable_rank(xs, descending=True)
    from mergekit.sparsify import SparsificationMethod, sparsify as mk
    for density in (0.5, 0.3, 0.07):
        ours = np.asarray(sparsify.magnitude(xs, rank, count.snap(density, x.numel()), 0.0))
        want = int(density * x.numel())
        theirs = mk(x, density=density, method=SparsificationMethod.magnitude).float().numpy()
        assert (ours != 0).sum() == (theirs != 0).sum() == want  # 10240 of 20480 at 0.5, as mergekit's test says
        a = np.abs(x.float().numpy())
        tie = a == np.sort(a.reshape(-1))[::-1][want - 1]
        assert tie.sum() > 1 and np.array_equal(ours[~tie], theirs[~tie])  # only elements tied at the cut differ
    sp = stable_sorts(monkeypatch)
    stable = sp.sparsify(x, density=0.5, method=sp.SparsificationMethod.magnitude).float().numpy()
    assert np.array_equal(np.asarray(sparsify.magnitude(xs, rank, 0.5, 0.0)), stable)


def test_breadcrumbs_counts_and_choices_match_mergekit_with_ties(monkeypatch):
    sp = stable_sorts(monkeypatch)
    x = torch.randn(128, 64, generator=torch.Generator().manual_seed(1)).to(torch.float16)
    xs = jnp.asarray(x.float().numpy())
    rank = sparsify.stable_rank(xs, descending=False)
    run = jax.jit(lambda d, g: sparsify.magnitude_outliers(xs, rank, d, g, 0.0))
    for gamma_0 in (0.1, 0.5, 1.0):  # mergekit's test_outliers grid
        for density in (0.1, 0.3, 0.5, 0.6, 0.9):
            gamma = gamma_0 * (1 - density)
            ours = np.asarray(run(count.snap(density, x.numel()), count.snap(gamma, x.numel())))
            theirs = sp.sparsify(x, density=density, method=sp.SparsificationMethod.magnitude_outliers,
                                 gamma=gamma).float().numpy()
            assert (ours != 0).sum() == int(x.numel() * density)
            assert np.array_equal(ours, theirs), (density, gamma)
