"""The device mesh of a run: a population axis ("pop") and an optional model axis ("model").

Every parameter dimension has a logical name; ONE rules table maps logical names to mesh axes, so how a tensor
is laid out is decided in one place and never by the code that uses it. Candidates are independent, so the
population splits over "pop" with no communication until fitness is gathered for `tell`; sources are replicated
over "pop" and, when a model is too large for one device, their heads / mlp / vocab dimensions split over
"model" (XLA inserts the collectives). The layer axis is never split: the forward scans over it.

The mesh uses Auto axes (JAX 0.10's default is Explicit, under which evosax's `tell` cannot slice the
population): shardings are placed on inputs and as constraints, and XLA propagates them.
"""
from __future__ import annotations

import math
from typing import Callable

import jax
import numpy as np
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

from jaxmerge.model import candidates_in_flight
from jaxmerge.errors import expect
from jaxmerge.params import LEAVES

POP, MODEL = "pop", "model"

# logical axis -> mesh axis (None: replicated). The one place that decides layouts.
RULES: dict[str, str | None] = {"pop": POP, "layers": None, "embed": None, "mlp": MODEL, "heads": MODEL,
                                "kv_heads": MODEL, "vocab": MODEL}

# canonical leaf -> logical axes of its HF [out, in] tensor (no layer axis; layer leaves get "layers" in front),
# from the one table of leaves
LEAF_AXES: dict[str, tuple[str | None, ...]] = {name: leaf.axes for name, leaf in LEAVES.items()}


def build_mesh(pop: int, model: int, population: int, spec=None, devices=None) -> jax.sharding.Mesh:
    """A (pop, model) mesh over the first pop x model of `devices` (default: every device of every process),
    validated on the host. pop = 0: as many devices as divide both the population and the devices left by
    the model axis (all of them when the population allows)."""
    devices = list(jax.devices() if devices is None else devices)
    n = len(devices)
    expect(model >= 1 and n % model == 0, f"expected mesh.model to divide the {n} devices, found {model}")
    pop = pop or math.gcd(n // model, population)
    expect(pop >= 1 and n % (pop * model) == 0,
           f"expected mesh pop x model to divide the {n} devices, found {pop} x {model}")
    expect(population % pop == 0, f"expected mesh.pop to divide the population ({population}), found {pop}")
    if spec is not None and model > 1:
        expect(spec.num_kv_heads % model == 0 and spec.num_heads % model == 0,
               f"expected mesh.model to divide the attention heads ({spec.num_heads} query, "
               f"{spec.num_kv_heads} key/value), found {model}")
    grid = np.asarray(devices[:pop * model], dtype=object).reshape(pop, model)
    return jax.sharding.Mesh(grid, (POP, MODEL), axis_types=(AxisType.Auto, AxisType.Auto))


def replicated(mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def tensor_spec(mesh, leaf: str | None, shape: tuple[int, ...]) -> P:
    """PartitionSpec of an array stored under canonical leaf `leaf`: the leaf's logical axes name its trailing
    dimensions, whatever they hold (merge-state arrays carry extra leading axes: layers, models; a per-element
    precompute such as TIES' ranks has the tensor's own shape). A dimension the mesh axis does not divide stays
    replicated, and so does an array of lower rank than the leaf (e.g. a scalar per tensor)."""
    axes = LEAF_AXES.get(leaf, ())
    if not axes or len(shape) < len(axes):
        return P()
    out = [None] * (len(shape) - len(axes))
    for dim, logical in zip(shape[len(shape) - len(axes):], axes):
        mesh_axis = RULES.get(logical) if logical else None
        size = mesh.shape[mesh_axis] if mesh_axis else 1
        out.append(mesh_axis if mesh_axis and size > 1 and dim % size == 0 else None)
    return P(*out)


def data_shardings(mesh, data):
    """Shardings for the step's `data` pytree: an array under a canonical leaf name (anywhere on its path)
    follows that leaf's logical axes; everything else is replicated."""
    def one(path, x):
        names = [getattr(k, "key", None) for k in path]
        leaf = next((k for k in reversed(names) if k in LEAF_AXES), None)
        return NamedSharding(mesh, tensor_spec(mesh, leaf, np.shape(x)))
    return jax.tree_util.tree_map_with_path(one, data)


def place(tree, shardings):
    """Host arrays -> global arrays with these shardings (a pytree of them, or one for every leaf). Each process
    materialises only the slices its own devices hold (the callback is called per addressable shard), so this
    also works across processes."""
    def one(x, sharding):
        host = x if isinstance(x, np.ndarray) else np.asarray(jax.device_get(x))
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])
    if isinstance(shardings, jax.sharding.Sharding):
        return jax.tree.map(lambda x: one(x, shardings), tree)
    return jax.tree.map(one, tree, shardings)


def map_candidates(fn: Callable, xs, batch_size: int):
    """`lax.map(fn, xs, batch_size)`, except that one candidate in flight is a plain scan of fn: lax.map's
    batch_size=1 vmaps fn over a batch of one, which turns every `lax.cond` inside (a DFS path's unused steps)
    into a select that computes both branches."""
    if batch_size == 1:
        return jax.lax.map(fn, xs)
    with candidates_in_flight(batch_size):  # fn is traced under lax.map's vmap (jaxmerge.model says why)
        return jax.lax.map(fn, xs, batch_size=batch_size)


def pop_map(fn: Callable, xs, batch_size: int, mesh) -> jax.Array:
    """fn over the leading (population) axis of `xs`, split over the mesh's pop axis: each pop shard runs
    `lax.map(fn, its share, batch_size)` as its own program (shard_map, manual over "pop" only; "model" stays
    automatic), so a candidate's numbers do not depend on how the population is split, and `batch_size` bounds
    candidates in flight per shard. The result is replicated (what `tell` needs)."""
    # With a trivial model axis every mesh axis is manual: host callbacks (text metrics) need a fully manual
    # computation, so generation-scored fitness works on any pop split (not yet with model > 1).
    manual = {POP} if mesh.shape[MODEL] > 1 else set(mesh.axis_names)
    local = jax.shard_map(lambda part: map_candidates(fn, part, batch_size), mesh=mesh,
                          in_specs=P(POP), out_specs=P(POP), axis_names=manual)
    return jax.lax.with_sharding_constraint(local(xs), replicated(mesh))


def on_one_device(tree, mesh):
    """With a trivial model axis (sources replicated), this process's first device's copy of every global array:
    a plain single-device jit then computes what `jaxmerge merge` computes on the same machine, bit for bit (a
    program partitioned over several devices may simplify differently: XLA:CPU turned a division by a
    broadcast scalar into a reciprocal multiply in one and not the other, 1 ulp apart). With sources split
    over "model" the tree is returned as it is (no host holds a whole copy)."""
    if mesh.shape[MODEL] > 1:
        return tree
    return jax.tree.map(lambda x: x.addressable_shards[0].data if isinstance(x, jax.Array) else x, tree)


def jax_to_numpy(tree):
    """Host copies of (possibly multi-process) global arrays: a collective, every process must call it."""
    from jax.experimental import multihost_utils

    def one(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return multihost_utils.process_allgather(x, tiled=True)
        return np.asarray(x)
    return jax.tree.map(one, tree)
