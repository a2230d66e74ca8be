"""The one registry of merge methods, with each hyperparameter's mergekit default and kind.

A default of REQUIRED means a recipe must set it (mergekit's `weight` for task-vector methods and linear).
`INERT` lists mergekit parameters a recipe may set that cannot change the result (int8_mask only picks the
dtype of TIES' sign mask; task_arithmetic declares density/rescale but never sparsifies): accepted, not used.
"""
from __future__ import annotations

from jaxmerge.merge.base import MergeMethod
from jaxmerge.merge.gta import GTA_DEFAULTS, GTA_METHODS
from jaxmerge.merge.interp import INTERP_METHODS

REQUIRED = object()
METHODS: dict[str, MergeMethod] = {**GTA_METHODS, **INTERP_METHODS}

BOOL_HPARAMS = frozenset({"normalize", "rescale", "nuslerp_flatten", "nuslerp_row_wise", "filter_wise"})
# 0 <= value <= 1 where mergekit's math needs it
UNIT_HPARAMS = frozenset({"density", "gamma", "t"})
INERT = {name: frozenset({"int8_mask"}) for name in GTA_METHODS}
INERT["task_arithmetic"] = frozenset({"int8_mask", "density", "rescale"})


def defaults(name: str) -> dict[str, object]:
    """hparam -> mergekit default (or REQUIRED) for method `name`."""
    if name in GTA_DEFAULTS:
        normalize, rescale = GTA_DEFAULTS[name]
        table = {"weight": REQUIRED, "density": 1.0, "gamma": 0.01, "epsilon": 0.15, "lambda": 1.0,
                 "normalize": normalize, "rescale": rescale}
    else:
        table = {"linear": {"weight": REQUIRED, "normalize": True}, "passthrough": {"scale": 1.0},
                 "slerp": {"t": REQUIRED}, "nuslerp": {"weight": REQUIRED, "nuslerp_flatten": True,
                                                      "nuslerp_row_wise": False},
                 "model_stock": {"filter_wise": False}}[name]
    method = METHODS[name]
    return {k: table[k] for k in (*method.model_hparams, *method.global_hparams)}
