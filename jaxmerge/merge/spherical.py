"""Means on the hypersphere: multislerp and karcher (mergekit 0.1.5 semantics). Each tensor is one flat vector.

multislerp (optional base: with one, the task vectors are interpolated and the base added back):
    u_m = v_m / (|v_m| + eps);  w normalised to sum 1 (normalize_weights);  mu = sum w u / |sum w u|
    tangent = sum_m w_m (u_m - <u_m, mu> mu);  merged = (cos|t| mu + sin|t| t / |t|) * sum_m w_m |v_m|
    (|t| carries + eps). A weighted mean of norm < eps falls back to the plain weighted sum for two models and is
    an error for more (mergekit raises; here it is NaN, which `jaxmerge merge` refuses, naming the tensor).
karcher (no weights: each model counts 1/M; a base_model named in the recipe is one of the models, as in mergekit):
    the Riemannian mean of the unit vectors by fixed-point iteration (at most max_iter steps; models whose
    tangent angle is below tol are skipped in a step; it stops once the step is shorter than tol), scaled by the
    mean norm. Models of norm <= tol take no part in the direction; all of them zero gives zeros.
Every data-dependent branch of mergekit (Python `if`s on `.item()`) is a jnp.where or the loop's condition, so
no value changes the program. Dtype: torch ops on the 16-bit dtype rounded where torch rounds (norms of karcher
are float32, as mergekit computes them); the iteration's `max_iter` is a traced integer (a while loop).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxmerge.errors import expect
from jaxmerge.merge.base import MergeMethod
from jaxmerge.merge.hparams import HParam, ignored, number, switch, weight
from jaxmerge.merge.interp import _inputs, _stack
from jaxmerge.merge.numerics import F32, fixed_order_dot, over, rnd

PAPERS = {"multislerp": "Multi-SLERP (Goddard 2025), https://goddard.blog/posts/multislerp-wow-what-a-cool-idea",
          "karcher": "Karcher mean on the hypersphere (2026), https://arxiv.org/abs/2603.04972"}


def _per_model(f, m: int) -> jax.Array:
    """[M] of f(i) for each model: one flat reduction per model (XLA:CPU runs a row reduction of a fused [M, n]
    product ~40x slower than M flat ones; measured on [2, 2.5M])."""
    return jnp.stack([f(i) for i in range(m)])


def _norm(x: jax.Array) -> jax.Array:
    """|x| of a flat vector as a dot product: a matrix product under the layer vmap, where XLA:CPU's batched
    row reductions of fused inputs are slow. The squares of 16-bit values are exact in float32, so this is
    torch's norm of them up to summation order."""
    return jnp.sqrt(jnp.dot(x, x))


def _dot(a: jax.Array, b: jax.Array, math: str) -> jax.Array:
    """sum(a * b) of flat vectors as torch computes `(a * b).sum()`: products rounded to a 16-bit `math` first;
    in float32 a dot product (the same up to summation order, and fast under vmap, see `_norm`)."""
    return jnp.dot(a, b) if math == "float32" else jnp.sum(rnd(a * b, math))


def _multislerp_init(base, sources, math="float32"):
    """The inputs; in float32 also the Gram matrix of the (task) vectors, which depends on no weight. Its sums
    are added in a fixed order (`fixed_order_dot`): an evolve run computes this state in its own program and
    `jaxmerge merge` of the winner's recipe in another, and both must hold the same bits."""
    state = _stack(base, sources, math)
    if math == "float32":
        _, x = _inputs(state)
        v = (x if base is None else x - base.astype(F32)).reshape(x.shape[0], -1)
        m = v.shape[0]
        dots = {(i, j): fixed_order_dot(v[i], v[j]) for i in range(m) for j in range(i, m)}
        state["gram"] = jnp.stack([jnp.stack([dots[min(i, j), max(i, j)] for j in range(m)]) for i in range(m)])
    return state


def _multislerp_coefficients(gram, hp, m: int):
    """multislerp in float32 as coefficients c of the vectors (merged = sum_m c_m v_m): every quantity mergekit
    forms from the flat vectors (norms, the weighted mean of units, the dots with it, the tangent sum and its
    norm) is a linear combination of them, so it is computed from their Gram matrix; equal to mergekit's vector
    arithmetic up to float32 rounding (the tangent sum vanishes in exact arithmetic: both compute rounding
    noise of ~1e-7 there). Degenerate: the plain weighted sum for two models, NaN for more (as in the kernel)."""
    eps, w = hp["eps"], hp["weight"].astype(F32)
    w = jnp.where(hp["normalize_weights"] > 0.5, over(w, w.sum()), w)
    norms = jnp.sqrt(jnp.maximum(jnp.diagonal(gram), 0.0))
    a = w / (norms + eps)                                   # sum_m w_m u_m = sum_m a_m v_m
    mean_norm = jnp.sqrt(jnp.maximum(a @ gram @ a, 0.0))
    degenerate = mean_norm < eps
    mean = a / jnp.where(degenerate, 1.0, mean_norm)        # the unit mean's coefficients
    dots = (gram @ mean) / (norms + eps)
    tangent = a - (w @ dots) * mean
    length = jnp.sqrt(jnp.maximum(tangent @ gram @ tangent, 0.0)) + eps
    c = (mean * jnp.cos(length) + tangent * (jnp.sin(length) / length)) * (norms @ w)
    return jnp.where(degenerate, w if m == 2 else jnp.full((m,), jnp.nan), c)


def _multislerp_kernel(state, hp, key, math="float32"):
    r = lambda x: rnd(x, math)
    base, x = _inputs(state)
    m = x.shape[0]
    if m == 1:  # static: one model is returned as it is
        return x[0]
    if "gram" in state:  # float32: one pass over the models (_multislerp_coefficients)
        c = _multislerp_coefficients(state["gram"], hp, m)
        merged = sum(c[i] * (x[i] if base is None else x[i] - base) for i in range(m))
        return merged if base is None else base + merged
    v = x if base is None else r(x - base)
    flat, eps = v.reshape(m, -1), hp["eps"]
    w = r(hp["weight"].astype(F32))
    w = jnp.where(hp["normalize_weights"] > 0.5, r(over(w, r(w.sum()))), w)
    norms = r(_per_model(lambda i: _norm(flat[i]), m))
    units = [r(over(flat[i], r(norms[i] + eps))) for i in range(m)]
    mean = r(sum(r(units[i] * w[i]) for i in range(m)))
    mean_norm = r(_norm(mean))
    degenerate = mean_norm < rnd(eps, math)  # torch compares with the threshold cast to the tensor's dtype
    mean = r(over(mean, jnp.where(degenerate, 1.0, mean_norm)))
    units, mean = jax.lax.optimization_barrier((units, mean))
    dots = r(_per_model(lambda i: _dot(units[i], mean, math), m))
    summed = r(sum(r(r(units[i] - r(dots[i] * mean)) * w[i]) for i in range(m)))
    length = r(r(_norm(summed)) + eps)
    out = r(r(mean * r(jnp.cos(length))) + r(summed * r(r(jnp.sin(length)) / length)))
    out = r(out * r(jnp.sum(r(norms * w)))).reshape(v.shape[1:])
    fallback = r(r(v[0] * w[0]) + r(v[1] * w[1])) if m == 2 else jnp.full(v.shape[1:], jnp.nan)
    out = jnp.where(degenerate, fallback, out)
    return out if base is None else r(out + base)


def check_multislerp(cell: dict, where: str) -> None:
    """Normalising divides by the sum of the weights: refuse a zero sum (mergekit writes an Inf/NaN model)."""
    total = float(cell["weight"].sum(dtype="float32"))
    expect(cell["normalize_weights"] < 0.5 or total != 0, f"expected weights that can be normalised at {where}, "
           f"found weights {cell['weight'].tolist()} summing to 0 with normalize_weights on")


def _karcher_start(units, valid, alpha, tol, r):
    """The normalised weighted mean of the valid unit vectors, or the first valid one if it is ~0."""
    mean = jnp.zeros_like(units[0])
    for i in range(units.shape[0]):  # mergekit's in-place `mean += alpha * unit`, rounded each time
        mean = r(mean + r(alpha[i] * units[i]))
    mean_norm = _norm(mean)
    first = units[jnp.argmax(valid)]
    return jnp.where(mean_norm < tol, first, r(over(mean, jnp.where(mean_norm < tol, 1.0, mean_norm))))


def _karcher_step(mean, units, valid, alpha, tol, r):
    """One fixed-point step: (new mean, whether the step was shorter than tol, i.e. mergekit's `break`)."""
    tangent = jnp.zeros_like(mean)
    for i in range(units.shape[0]):
        dot = jnp.clip(r(jnp.dot(mean, units[i])), -1.0, 1.0)
        theta = r(jnp.arccos(dot))
        coef = r(alpha[i] * r(theta / r(jnp.sin(theta))))
        step = r(tangent + r(coef * r(units[i] - r(dot * mean))))
        tangent = jnp.where(valid[i] & (theta >= tol), step, tangent)
    length = _norm(tangent)
    safe = jnp.where(length < tol, 1.0, length)
    moved = r(r(jnp.cos(length) * mean) + r(jnp.sin(length) * r(over(tangent, safe))))
    norm = _norm(moved)
    moved = jnp.where(norm > tol, r(over(moved, jnp.where(norm > tol, norm, 1.0))), moved)
    return jnp.where(length < tol, mean, moved), length < tol


def _karcher_kernel(state, hp, key, math="float32"):
    r = lambda x: rnd(x, math)
    _, x = _inputs(state)
    m = x.shape[0]
    if m == 1:
        return x[0]
    flat, tol = x.reshape(m, -1), hp["tol"]
    norms = _per_model(lambda i: _norm(flat[i]), m)
    units = jnp.where(norms[:, None] == 0, 0.0, r(over(flat, jnp.where(norms == 0, 1.0, norms)[:, None])))
    units = jax.lax.optimization_barrier(units)  # read by every step: computed once, not fused into each
    valid = norms > tol
    alpha = jnp.where(valid, 1.0 / jnp.maximum(valid.sum(), 1).astype(F32), 0.0)
    mean = _karcher_start(units, valid, alpha, tol, r)

    def body(carry):
        i, mean, _ = carry
        mean, done = _karcher_step(jax.lax.optimization_barrier(mean), units, valid, alpha, tol, r)
        return i + 1, mean, done
    _, mean, _ = jax.lax.while_loop(lambda c: (c[0] < hp["max_iter"]) & ~c[2], body, (0, mean, False))
    scale = norms[0] * (1.0 / m)
    for i in range(1, m):  # Python's sum of alpha * norm over every model (float32 0-d tensors)
        scale = scale + norms[i] * (1.0 / m)
    return jnp.where(valid.any(), r(scale * mean), 0.0).reshape(x.shape[1:])


def check_karcher(cell: dict, where: str) -> None:
    """max_iter counts steps: mergekit takes an integer there (its parameter is an `int`)."""
    steps = float(cell["max_iter"])
    expect(steps == int(steps), f"expected an integer max_iter at {where}, found {steps:g}")


MULTISLERP = MergeMethod("multislerp", (weight(), switch("normalize_weights", True), number("eps", 1e-8)),
                         "optional", (1, None), PAPERS["multislerp"], _multislerp_init, _multislerp_kernel,
                         check_multislerp)
KARCHER = MergeMethod("karcher", (HParam("max_iter", 10, lo=0.0, evolvable=False), number("tol", 1e-5),
                                  ignored("weight")), "none",
                      (1, None), PAPERS["karcher"], _stack, _karcher_kernel, check_karcher)
