"""Interpolating methods: linear, passthrough, slerp, nuslerp, model_stock, nearswap (mergekit 0.1.5 semantics).

Quirks matched on purpose:
- linear divides by sum(weight) when `normalize` is on, with no guard (mergekit writes inf/NaN for weights
  summing to 0; jaxmerge refuses them, `check_linear`).
- slerp works on the whole flattened tensor: norms below 1e-8 count as 1; when |cos| > 0.9995 (near-colinear
  or antipodal) it falls back to plain lerp; it interpolates the ORIGINAL (unnormalised) tensors.
- nuslerp: t = w1 / (w0 + w1) (0.5 if |w0 + w1| < 1e-6); with a base it slerps the task vectors and adds the
  base back; colinear iff 1 - cos^2 <= 1e-16; `nuslerp_flatten` (default on) treats the tensor as one vector,
  else rows (last axis) or, with `nuslerp_row_wise`, columns (axis 0).
- model_stock: t = M*cos / (1 + (M-1)*cos) with cos the mean pairwise cosine of task vectors (norm product
  clamped at 1e-6); |denominator| < 1e-6 keeps the base. `filter_wise` works per row instead of per tensor.
- nearswap: per element w = clip(t / max(|base - b|, 1e-6), 0, 1), merged = w * b + (1 - w) * base: elements
  closer than t take the other model's value. `t / x` is torch's reflected division, reciprocal(x) * t.
Structural switches (flatten, row_wise, filter_wise) are traced 0/1 arrays too: every variant is computed and
one selected with jnp.where, so no recipe value ever changes the compiled program.
Dtype (`math`, static): linear and slerp compute in float32 and round the result to the merge's dtype, as
mergekit does; passthrough, nuslerp and model_stock are torch ops on the merge's dtype in mergekit, so with a
16-bit `math` every operation here is rounded where torch rounds it (jaxmerge.merge.numerics). mergekit's linear
accumulates with fused multiply-adds (torch's addcmul) and XLA has no such op, so a 16-bit linear or slerp result
can round to the neighbouring 16-bit value (measured on tiny models: 0.02-0.43% of elements, one unit in the last
place; values that cancel to ~0 in float32 can differ by ~1e-10 absolute).
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from jaxmerge.errors import expect
from jaxmerge.merge.base import MergeMethod
from jaxmerge.merge.hparams import REQUIRED, HParam, ignored, number, switch, weight
from jaxmerge.merge.numerics import F32, const, over, rnd


def _stack(base, sources, math="float32"):
    """The inputs, as stored (float32 math) or rounded to and stored in the merge's 16-bit dtype."""
    def keep(x):
        return x if math == "float32" else rnd(x.astype(F32), math).astype(math)
    return {"base": None if base is None else keep(base), "sources": keep(sources)}


def _inputs(state):
    base = state["base"]
    return None if base is None else base.astype(F32), state["sources"].astype(F32)


def _linear_kernel(state, hp, key, math="float32"):
    x, w = state["sources"].astype(F32), hp["weight"].astype(F32)
    # an unrolled sum over the (static, small) model axis fuses into one pass; tensordot was 2.3x slower on CPU
    merged = sum(w[i] * x[i] for i in range(x.shape[0]))
    return rnd(jnp.where(hp["normalize"] > 0.5, over(merged, w.sum()), merged), math)


def _passthrough_kernel(state, hp, key, math="float32"):
    return rnd(state["sources"][0].astype(F32) * hp["scale"][0], math)


def slerp_vectors(t, a, b):
    """mergekit's slerp of two tensors taken as flat vectors (see module docstring)."""
    na, nb = jnp.linalg.norm(a.reshape(-1)), jnp.linalg.norm(b.reshape(-1))
    na, nb = jnp.where(na > 1e-8, na, 1.0), jnp.where(nb > 1e-8, nb, 1.0)
    dot = jnp.clip(jnp.sum(over(a, na) * over(b, nb)), -1.0, 1.0)
    linear = jnp.abs(dot) > 0.9995
    theta = jnp.arccos(jnp.where(linear, 0.0, dot))
    sin_theta = jnp.where(linear, 1.0, jnp.sin(theta))
    ca = jnp.where(linear, 1 - t, jnp.sin((1 - t) * theta) / sin_theta)
    cb = jnp.where(linear, t, jnp.sin(t * theta) / sin_theta)
    return ca * a + cb * b


def _slerp_kernel(state, hp, key, math="float32"):
    base, x = _inputs(state)
    return rnd(slerp_vectors(hp["t"], base, x[0]), math)


def _nuslerp_rows(t, v0, v1, math):
    """nuslerp along the last axis of 2-D [rows, n] inputs, every torch op rounded to `math`."""
    r = lambda x: rnd(x, math)

    def unit(x):
        return r(over(x, jnp.maximum(r(jnp.linalg.norm(x, axis=-1, keepdims=True)), const(1e-7, math))))
    cos = jnp.clip(r(jnp.sum(r(unit(v0) * unit(v1)), axis=-1, keepdims=True)), -1.0, 1.0)
    colinear = r(1 - r(cos**2)) <= const(1e-16, math)
    theta = r(jnp.arccos(jnp.where(colinear, 0.0, cos)))
    sin_theta = jnp.where(colinear, 1.0, r(jnp.sin(theta)))
    a, b = r(jnp.sin(r((1 - t) * theta))), r(jnp.sin(r(t * theta)))
    sph = r(over(r(r(a * v0) + r(b * v1)), sin_theta))
    return jnp.where(colinear, r(r((1 - t) * v0) + r(t * v1)), sph)


def _nuslerp_kernel(state, hp, key, math="float32"):
    r = lambda x: rnd(x, math)
    base, x = _inputs(state)
    v0, v1 = (x[0], x[1]) if base is None else (r(x[0] - base), r(x[1] - base))
    w = hp["weight"].astype(F32)
    total = w[0] + w[1]
    t = jnp.where(jnp.abs(total) < 1e-6, 0.5, w[1] / jnp.where(jnp.abs(total) < 1e-6, 1.0, total))
    flat = _nuslerp_rows(t, v0.reshape(1, -1), v1.reshape(1, -1), math).reshape(v0.shape)
    rows2d = lambda v: v.reshape(1, -1) if v.ndim < 2 else v.reshape(-1, v.shape[-1])
    rows = _nuslerp_rows(t, rows2d(v0), rows2d(v1), math).reshape(v0.shape)
    cols_in = lambda v: jnp.moveaxis(v, 0, -1) if v.ndim >= 2 else v.reshape(1, -1)
    cols = _nuslerp_rows(t, rows2d(cols_in(v0)), rows2d(cols_in(v1)), math)
    cols = jnp.moveaxis(cols.reshape(cols_in(v0).shape), -1, 0) if v0.ndim >= 2 else cols.reshape(v0.shape)
    out = jnp.where(hp["nuslerp_flatten"] > 0.5, flat, jnp.where(hp["nuslerp_row_wise"] > 0.5, cols, rows))
    return out if base is None else r(base + out)


def _stock_t(offsets, m, math):
    """model_stock's interpolation factor from [M, rows, n] offsets -> [rows, 1], torch's roundings."""
    r = lambda x: rnd(x, math)
    norms = r(jnp.linalg.norm(offsets, axis=-1))
    cos = [jnp.clip(r(r(jnp.sum(r(offsets[i] * offsets[j]), -1)) /
                      jnp.maximum(r(norms[i] * norms[j]), const(1e-6, math))), -1.0, 1.0)
           for i in range(m) for j in range(i + 1, m)]
    cos = r(jnp.mean(jnp.stack(cos), axis=0))[..., None]
    den = r(1 + r((m - 1) * cos))
    singular = jnp.abs(den) < const(1e-6, math)
    return jnp.where(singular, 0.0, r(r(m * cos) / jnp.where(singular, 1.0, den)))


def _stock_kernel(state, hp, key, math="float32"):
    r = lambda x: rnd(x, math)
    base, x = _inputs(state)
    m = x.shape[0]
    rows = base.reshape(1, -1) if base.ndim < 2 else base.reshape(-1, base.shape[-1])
    offs = r(x.reshape((m,) + rows.shape) - rows)
    whole = _stock_t(offs.reshape(m, 1, -1), m, math).reshape(())
    t = jnp.where(hp["filter_wise"] > 0.5, _stock_t(offs, m, math), whole)
    total = x[0]
    for i in range(1, m):  # mergekit's Python sum(ws): elementwise adds, each rounded
        total = r(total + x[i])
    avg = r(total / m).reshape(rows.shape)
    return r(r(t * avg) + r(r(1 - t) * rows)).reshape(base.shape)


def _nearswap_kernel(state, hp, key, math="float32"):
    r = lambda x: rnd(x, math)
    base, x = _inputs(state)
    other = x[0]
    gap = jnp.maximum(r(jnp.abs(base - other)), const(1e-6, math))
    w = jnp.clip(r(r(1.0 / gap) * hp["t"]), 0.0, 1.0)
    return r(r(w * other) + r(r(1 - w) * base))


PAPERS = {"linear": "Model soups (Wortsman et al. 2022), https://arxiv.org/abs/2203.05482",
          "passthrough": "none: copies (and scales) layers, for layer-stacking recipes",
          "slerp": "spherical linear interpolation (Shoemake 1985), https://en.wikipedia.org/wiki/Slerp",
          "nuslerp": "mergekit's normalized SLERP of two models or their task vectors (no paper)",
          "model_stock": "Model Stock (Jang et al. 2024), https://arxiv.org/abs/2403.19522",
          "nearswap": "NearSwap (alchemonaut), https://huggingface.co/alchemonaut/QuartetAnemoi-70B-t0.0001"}


def _method(name, hparams, base, counts, init, kernel, check=None) -> MergeMethod:
    return MergeMethod(name, tuple(hparams), base, counts, PAPERS[name], init, kernel, check)


def check_linear(cell: dict, where: str) -> None:
    """Normalising divides by the sum of the weights (in float32, as the kernel does): refuse a zero sum, which
    mergekit turns into an Inf/NaN model."""
    total = np.asarray(cell["weight"], np.float32).sum(dtype=np.float32)
    expect(cell["normalize"] < 0.5 or total != 0, f"expected weights that can be normalised at {where}, found "
                                                  f"weights {cell['weight'].tolist()} summing to 0 with normalize "
                                                  "on (set normalize: false, or other weights)")


LINEAR = _method("linear", (weight(), switch("normalize", True)), "none", (1, None), _stack, _linear_kernel,
                 check_linear)
PASSTHROUGH = _method("passthrough", (number("scale", 1.0, per_model=True), ignored("weight")), "none", (1, 1),
                      _stack, _passthrough_kernel)
SLERP = _method("slerp", (HParam("t", REQUIRED), ignored("weight")), "required", (1, 1), _stack, _slerp_kernel)
NUSLERP = _method("nuslerp", (weight(), switch("nuslerp_flatten", True), switch("nuslerp_row_wise", False)),
                  "optional", (2, 2), _stack, _nuslerp_kernel)
MODEL_STOCK = _method("model_stock", (switch("filter_wise", False), ignored("weight")), "required", (2, None),
                      _stack, _stock_kernel)
NEARSWAP = _method("nearswap", (HParam("t", REQUIRED), ignored("weight")), "required", (1, 1), _stack,
                   _nearswap_kernel)
