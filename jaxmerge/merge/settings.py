"""One mergekit parameter setting -> the value for one tensor: gradients over depth and `filter` conditions.

A setting is a scalar, a gradient (a list of scalars), a conditional {filter, value} or a list of them. Host-only,
run once per (tensor, hyperparameter) by `resolve`; nothing here is ever traced.
- Gradient at depth t in [0, 1]: numbers interpolate linearly between neighbours, i = int(t * (n - 1)); booleans
  pick values[int(t * (n - 1))].
- Conditionals: the first whose filter is absent, "*", or a substring of the tensor's HF name wins; when none
  matches the setting yields None and the next, lower-precedence scope is asked (mergekit's precedence).
"""
from __future__ import annotations

from typing import Any, Iterator

from jaxmerge.errors import JaxmergeError, expect

SCALARS = (bool, int, float, str)


def _scalar(value: Any, name: str, is_bool: bool) -> float | bool:
    if is_bool:
        expect(isinstance(value, bool) or value in (0, 1),
               f"expected true/false for parameter {name}, found {value!r}")
        return bool(value)
    expect(not isinstance(value, bool), f"expected a number for parameter {name}, found {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise JaxmergeError(f"expected a number for parameter {name}, found {value!r}") from None


def _conditional(setting: Any, name: str) -> bool:
    if not isinstance(setting, dict):
        return False
    extra = sorted(set(setting) - {"value", "filter"})
    expect("value" in setting and not extra,
           f"expected parameter {name} conditions with keys value/filter, found {sorted(setting)}")
    return True


def evaluate(setting: Any, name: str, tensor_name: str, t: float, is_bool: bool) -> float | bool | None:
    """The value of `setting` for the tensor named `tensor_name` at depth `t`, or None if no condition matches."""
    if _conditional(setting, name):
        setting = [setting]
    if isinstance(setting, SCALARS):
        return _scalar(setting, name, is_bool)
    expect(isinstance(setting, list), f"expected a scalar, list or condition for parameter {name}, "
                                      f"found {type(setting).__name__}")
    if not setting:
        return None
    if all(isinstance(e, SCALARS) for e in setting):
        return _gradient([_scalar(e, name, is_bool) for e in setting], t, is_bool)
    expect(all(_conditional(e, name) for e in setting),
           f"expected parameter {name} as a gradient or a list of conditions, found a mix")
    for cond in setting:
        filt = cond.get("filter")
        if filt is None or filt == "*" or (tensor_name and str(filt) in tensor_name):
            return evaluate(cond["value"], name, tensor_name, t, is_bool)
    return None


def _gradient(values: list, t: float, is_bool: bool):
    if is_bool:
        return values[int(t * (len(values) - 1))]
    scaled = t * (len(values) - 1)
    i0 = int(scaled)
    i1 = min(len(values) - 1, i0 + 1)
    frac = scaled - i0
    return (1 - frac) * values[i0] + frac * values[i1]


def filters(setting: Any) -> Iterator[str]:
    """Every filter string named anywhere in `setting` (to refuse filters that match no tensor)."""
    if isinstance(setting, dict):
        if setting.get("filter") not in (None, "*"):
            yield str(setting["filter"])
        yield from filters(setting.get("value"))
    elif isinstance(setting, list):
        for e in setting:
            yield from filters(e)
