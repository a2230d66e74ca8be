"""Interpolating methods: linear, passthrough, slerp, nuslerp, model_stock (mergekit 0.1.5 semantics).

Quirks matched on purpose:
- linear divides by sum(weight) when `normalize` is on, with no guard: weights summing to 0 give inf/NaN there.
- slerp works on the whole flattened tensor: norms below 1e-8 count as 1; when |cos| > 0.9995 (near-colinear
  or antipodal) it falls back to plain lerp; it interpolates the ORIGINAL (unnormalised) tensors.
- nuslerp: t = w1 / (w0 + w1) (0.5 if |w0 + w1| < 1e-6); with a base it slerps the task vectors and adds the
  base back; colinear iff 1 - cos^2 <= 1e-16; `nuslerp_flatten` (default on) treats the tensor as one vector,
  else rows (last axis) or, with `nuslerp_row_wise`, columns (axis 0).
- model_stock: t = M*cos / (1 + (M-1)*cos) with cos the mean pairwise cosine of task vectors (norm product
  clamped at 1e-6); |denominator| < 1e-6 keeps the base. `filter_wise` works per row instead of per tensor.
Structural switches (flatten, row_wise, filter_wise) are traced 0/1 arrays too: every variant is computed and
one selected with jnp.where, so no recipe value ever changes the compiled program.
"""
from __future__ import annotations

import jax.numpy as jnp

from jaxmerge.merge.base import MergeMethod
from jaxmerge.merge.gta import model_sum

F32 = jnp.float32


def _stack(base, sources):
    return {"base": None if base is None else base, "sources": sources}


def _linear_kernel(state, hp, key):
    x, w = state["sources"], hp["weight"].astype(F32)
    # an unrolled sum over the (static, small) model axis fuses into one pass; tensordot was 2.3x slower on CPU
    merged = sum(w[i] * x[i].astype(F32) for i in range(x.shape[0]))
    return jnp.where(hp["normalize"] > 0.5, merged / w.sum(), merged)


def _passthrough_kernel(state, hp, key):
    return state["sources"][0].astype(F32) * hp["scale"][0]


def slerp_vectors(t, a, b):
    """mergekit's slerp of two tensors taken as flat vectors (see module docstring)."""
    na, nb = jnp.linalg.norm(a.reshape(-1)), jnp.linalg.norm(b.reshape(-1))
    na, nb = jnp.where(na > 1e-8, na, 1.0), jnp.where(nb > 1e-8, nb, 1.0)
    dot = jnp.clip(jnp.sum((a / na) * (b / nb)), -1.0, 1.0)
    linear = jnp.abs(dot) > 0.9995
    theta = jnp.arccos(jnp.where(linear, 0.0, dot))
    sin_theta = jnp.where(linear, 1.0, jnp.sin(theta))
    ca = jnp.where(linear, 1 - t, jnp.sin((1 - t) * theta) / sin_theta)
    cb = jnp.where(linear, t, jnp.sin(t * theta) / sin_theta)
    return ca * a + cb * b


def _slerp_kernel(state, hp, key):
    return slerp_vectors(hp["t"], state["base"].astype(F32), state["sources"][0].astype(F32))


def _nuslerp_rows(t, v0, v1):
    """nuslerp along the last axis of 2-D [rows, n] inputs."""
    def unit(x):
        return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-7)
    cos = jnp.clip(jnp.sum(unit(v0) * unit(v1), axis=-1, keepdims=True), -1.0, 1.0)
    colinear = (1 - cos**2) <= 1e-16
    theta = jnp.arccos(jnp.where(colinear, 0.0, cos))
    sin_theta = jnp.where(colinear, 1.0, jnp.sin(theta))
    sph = (jnp.sin((1 - t) * theta) * v0 + jnp.sin(t * theta) * v1) / sin_theta
    return jnp.where(colinear, (1 - t) * v0 + t * v1, sph)


def _nuslerp_kernel(state, hp, key):
    x = state["sources"].astype(F32)
    v0, v1 = x[0], x[1]
    if state["base"] is not None:
        v0, v1 = v0 - state["base"].astype(F32), v1 - state["base"].astype(F32)
    w = hp["weight"].astype(F32)
    total = w[0] + w[1]
    t = jnp.where(jnp.abs(total) < 1e-6, 0.5, w[1] / jnp.where(jnp.abs(total) < 1e-6, 1.0, total))
    flat = _nuslerp_rows(t, v0.reshape(1, -1), v1.reshape(1, -1)).reshape(v0.shape)
    rows2d = lambda v: v.reshape(1, -1) if v.ndim < 2 else v.reshape(-1, v.shape[-1])
    rows = _nuslerp_rows(t, rows2d(v0), rows2d(v1)).reshape(v0.shape)
    cols_in = lambda v: jnp.moveaxis(v, 0, -1) if v.ndim >= 2 else v.reshape(1, -1)
    cols = _nuslerp_rows(t, rows2d(cols_in(v0)), rows2d(cols_in(v1)))
    cols = jnp.moveaxis(cols.reshape(cols_in(v0).shape), -1, 0) if v0.ndim >= 2 else cols.reshape(v0.shape)
    out = jnp.where(hp["nuslerp_flatten"] > 0.5, flat, jnp.where(hp["nuslerp_row_wise"] > 0.5, cols, rows))
    return out if state["base"] is None else state["base"].astype(F32) + out


def _stock_t(offsets, m):
    """model_stock's interpolation factor from [M, rows, n] offsets -> [rows, 1]."""
    norms = jnp.linalg.norm(offsets, axis=-1)
    cos = [jnp.clip(jnp.sum(offsets[i] * offsets[j], -1) / jnp.maximum(norms[i] * norms[j], 1e-6), -1.0, 1.0)
           for i in range(m) for j in range(i + 1, m)]
    cos = jnp.mean(jnp.stack(cos), axis=0)[..., None]
    den = 1 + (m - 1) * cos
    singular = jnp.abs(den) < 1e-6
    return jnp.where(singular, 0.0, m * cos / jnp.where(singular, 1.0, den))


def _stock_kernel(state, hp, key):
    base, x = state["base"].astype(F32), state["sources"].astype(F32)
    m = x.shape[0]
    rows = base.reshape(1, -1) if base.ndim < 2 else base.reshape(-1, base.shape[-1])
    offs = x.reshape((m,) + rows.shape) - rows
    flat_t = _stock_t(offs.reshape(m, 1, -1), m).reshape(())
    row_t = _stock_t(offs, m)
    avg = (model_sum(x) / x.shape[0]).reshape(rows.shape)
    t = jnp.where(hp["filter_wise"] > 0.5, row_t, flat_t)
    return (t * avg + (1 - t) * rows).reshape(base.shape)


INTERP_METHODS = {m.name: m for m in (
    MergeMethod("linear", ("weight",), ("normalize",), False, _stack, _linear_kernel),
    MergeMethod("passthrough", ("scale",), (), False, _stack, _passthrough_kernel),
    MergeMethod("slerp", (), ("t",), True, _stack, _slerp_kernel),
    MergeMethod("nuslerp", ("weight",), ("nuslerp_flatten", "nuslerp_row_wise"), False, _stack, _nuslerp_kernel),
    MergeMethod("model_stock", (), ("filter_wise",), True, _stack, _stock_kernel),
)}
