"""One hyper-parameter of a merge method: what it means, what values it takes, and the one check both the
recipe side (`jaxmerge merge`) and the search side (`jaxmerge evolve` bounds and fixed values) apply to it.

Roles: "merge" hyper-parameters reach the kernel (a traced array per tensor); "inert" ones mergekit declares
and reads but they cannot change the tensors (int8_mask only picks the dtype of TIES' sign mask): accepted,
unused; "ignored" ones mergekit accepts without declaring them (a `weight` on a slerp or model_stock model, as
in mergekit's own tests): accepted with a warning, unused.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

from jaxmerge.errors import expect

REQUIRED = object()  # a recipe (or an evolve config) must give this hyper-parameter a value


@dataclasses.dataclass(frozen=True)
class HParam:
    """`default`: mergekit's default or REQUIRED. `per_model`: one value per (non-base) model, else one per merge.
    `lo`/`hi`: the closed range mergekit's math is defined on (None: unbounded). `snapped`: a fraction of a
    tensor's elements that becomes a count k = int(value * n) (see jaxmerge.merge.count)."""
    name: str
    default: Any
    per_model: bool = False
    is_bool: bool = False
    lo: float | None = None
    hi: float | None = None
    snapped: bool = False
    evolvable: bool = True
    role: str = "merge"  # merge | inert | ignored

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def range_text(self) -> str:
        return f"[{'-inf' if self.lo is None else f'{self.lo:g}'}, {'inf' if self.hi is None else f'{self.hi:g}'}]"

    def in_range(self, value: float) -> bool:
        return (self.lo is None or value >= self.lo) and (self.hi is None or value <= self.hi)

    def check(self, value: Any, where: str) -> float:
        """`value` as a float (booleans as 0/1) if this hyper-parameter takes it, else one-line JaxmergeError."""
        if self.is_bool:
            expect(isinstance(value, bool) or (isinstance(value, (int, float)) and value in (0, 1)),
                   f"{where}: expected true/false for {self.name}, found {value!r}")
            return float(value)
        expect(isinstance(value, (int, float)) and not isinstance(value, bool),
               f"{where}: expected a number for {self.name}, found {value!r}")
        value = float(value)
        expect(math.isfinite(value), f"{where}: expected a finite {self.name}, found {value}")
        expect(self.in_range(value), f"{where}: expected {self.name} in {self.range_text()}, found {value:g}")
        return value

    def check_bounds(self, lo: Any, hi: Any, where: str) -> tuple[float, float]:
        """Search bounds [lo, hi]: an evolvable hyper-parameter, finite numbers, lo <= hi, inside its range."""
        expect(self.evolvable and self.role == "merge",
               f"{where}: expected an evolvable hyper-parameter, found {self.name} "
               f"({'a switch' if self.is_bool else self.role})")
        lo, hi = self.check(lo, where), self.check(hi, where)
        expect(lo <= hi, f"{where}: expected bounds [lo, hi] with lo <= hi for {self.name}, found [{lo:g}, {hi:g}]")
        return lo, hi


def weight(required: bool = True) -> HParam:
    return HParam("weight", REQUIRED if required else 1.0, per_model=True)


def fraction(name: str, default: float, per_model: bool = True, snapped: bool = False) -> HParam:
    """A value in [0, 1] (density, gamma, epsilon)."""
    return HParam(name, default, per_model=per_model, lo=0.0, hi=1.0, snapped=snapped)


def switch(name: str, default: bool, role: str = "merge") -> HParam:
    """A true/false setting: never evolved (the kernel selects with it, it is no direction to search in)."""
    return HParam(name, default, is_bool=True, evolvable=False, role=role)


def number(name: str, default: Any, per_model: bool = False) -> HParam:
    return HParam(name, default, per_model=per_model)


def ignored(name: str, per_model: bool = True) -> HParam:
    """Accepted because mergekit accepts it, never used: `jaxmerge merge` warns once when a recipe sets it."""
    return HParam(name, None, per_model=per_model, evolvable=False, role="ignored")
