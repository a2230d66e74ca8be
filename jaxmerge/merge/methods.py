"""The one registry of merge methods. Each entry is a complete `MergeMethod` record (jaxmerge.merge.base):

    method = METHODS["ties"]
    method.name, method.paper                    # "ties", "TIES-Merging (Yadav et al. 2023), https://..."
    method.base, method.needs_base               # "required" | "optional" | "none";  base == "required"
    method.counts                                # (min, max) models besides the base; max None = any
    method.model_hparams, method.global_hparams  # kernel hyper-parameters: [M] arrays / 0-d arrays per tensor
    method.hparams                               # the whole table, mergekit's names (jaxmerge.merge.hparams.HParam):
    h = method.hparam("density")                 #   h.default (or REQUIRED), h.required, h.per_model, h.is_bool,
                                                 #   h.lo, h.hi, h.snapped, h.evolvable, h.role (merge|inert|ignored)
    method.init_tensor(base, sources, math)      # genome-independent precompute per tensor (run once)
    method.kernel(state, hp, key, math)          # the per-candidate merge of one tensor (pure, jittable)

One rule decides what values a hyper-parameter takes, for recipes and for searches alike:

    check_value(method, "density", 0.7, where)       -> 0.7   (or one-line JaxmergeError: kind, finite, range)
    check_bounds(method, "density", 0.1, 1.0, where) -> (0.1, 1.0)   (evolvable, lo <= hi, inside the range)

Adding a method: write its kernels and table (one file, or one entry in gta.py / interp.py) and add one line here.
"""
from __future__ import annotations

from typing import Any

from jaxmerge.errors import expect
from jaxmerge.merge import fusion, gta, interp, ram, sce, spherical
from jaxmerge.merge.base import MergeMethod
from jaxmerge.merge.hparams import REQUIRED, HParam

METHODS: dict[str, MergeMethod] = {m.name: m for m in (
    gta.TASK_ARITHMETIC, gta.TIES, gta.DARE_TIES, gta.DARE_LINEAR, gta.BREADCRUMBS, gta.BREADCRUMBS_TIES,
    gta.DELLA, gta.DELLA_LINEAR,
    interp.LINEAR, interp.PASSTHROUGH, interp.SLERP, interp.NUSLERP, interp.MODEL_STOCK, interp.NEARSWAP,
    sce.SCE, ram.RAM, ram.RAMPLUS_TL, spherical.MULTISLERP, spherical.KARCHER, fusion.ARCEE_FUSION,
)}

__all__ = ["METHODS", "REQUIRED", "check_bounds", "check_value", "defaults", "get", "hparam"]


def get(method: str | MergeMethod) -> MergeMethod:
    """The record of `method` (a name or a record), or a one-line error listing the methods."""
    if isinstance(method, MergeMethod):
        return method
    expect(method in METHODS, f"expected merge_method in {sorted(METHODS)}, found {method!r}")
    return METHODS[method]


def hparam(method: str | MergeMethod, name: str, where: str = "parameters") -> HParam:
    """The table row of hyper-parameter `name`, or a one-line error listing the method's hyper-parameters."""
    record = get(method)
    row = record.hparam(name)
    expect(row is not None, f"{where}: expected a hyper-parameter of {record.name} "
                            f"(one of {[h.name for h in record.hparams]}), found {name!r}")
    return row


def check_value(method: str | MergeMethod, name: str, value: Any, where: str) -> float:
    """`value` for hyper-parameter `name` of `method` as a float (true/false as 1/0), checked against the table:
    its kind (switch or number), finite, inside its range. `where` names the place in the user's file."""
    return hparam(method, name, where).check(value, where)


def check_bounds(method: str | MergeMethod, name: str, lo: Any, hi: Any, where: str) -> tuple[float, float]:
    """Search bounds [lo, hi] for `name`: an evolvable hyper-parameter, each bound a valid value, lo <= hi."""
    return hparam(method, name, where).check_bounds(lo, hi, where)


def defaults(name: str) -> dict[str, object]:
    """Kernel hparam -> mergekit default (or REQUIRED) for method `name`, in the kernel's order."""
    method = get(name)
    return {n: method.hparam(n).default for n in (*method.model_hparams, *method.global_hparams)}
