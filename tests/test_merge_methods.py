"""Each merge method is one complete record, and its table agrees with mergekit 0.1.5's own method specs (the
oracle for names, per-model/shared scope, defaults, base policy, model counts). One shared rule checks values
and search bounds for `merge` and `evolve` alike."""
from __future__ import annotations

import math

import pytest

from jaxmerge.errors import JaxmergeError
from jaxmerge.merge import METHODS, REQUIRED, check_bounds, check_value
from jaxmerge.merge.methods import defaults

POLICY = {"required": "required", "optional": "optional", "ignored": "none"}
COUNTS = {"slerp": (1, 1), "nuslerp": (2, 2), "model_stock": (2, None), "passthrough": (1, 1),
          "arcee_fusion": (1, 1), "nearswap": (1, 1), "multislerp": (1, None), "karcher": (1, None)}


def _spec(name):
    import mergekit.merge_methods as mm
    return mm.get(name).spec


@pytest.mark.parametrize("name", sorted(METHODS))
def test_table_matches_mergekit_spec(name):
    spec, record = _spec(name), METHODS[name]
    theirs = {p.name: p for p in spec.parameters}
    ours = {h.name: h for h in record.hparams if h.role != "ignored"}
    assert sorted(ours) == sorted(theirs)
    for h in ours.values():
        p = theirs[h.name]
        assert h.per_model == (p.scope.name != "SHARED"), h.name
        assert h.required == bool(p.required), h.name
        if not h.required:
            assert h.default == (1.0 if p.default is None and h.name == "scale" else p.default), h.name
    assert record.base == POLICY[spec.contract.base.value]
    assert record.paper and record.name == name and callable(record.init_tensor) and callable(record.kernel)
    if name in COUNTS:
        assert record.counts == COUNTS[name]


def test_kernel_hparams_keep_their_order_and_roles():
    ties, ta, slerp = METHODS["ties"], METHODS["task_arithmetic"], METHODS["slerp"]
    assert ties.model_hparams == ("weight", "density") and ties.global_hparams == ("lambda", "normalize", "rescale")
    assert ta.model_hparams == ("weight",) and ta.global_hparams == ("lambda", "normalize")
    assert ta.hparam("density").role == "inert" and ties.hparam("int8_mask").role == "inert"
    assert slerp.hparam("weight").role == "ignored" and slerp.global_hparams == ("t",) and slerp.needs_base
    assert ties.hparam("density").snapped and not METHODS["dare_ties"].hparam("density").snapped
    assert METHODS["breadcrumbs"].hparam("gamma").snapped and not METHODS["nuslerp"].needs_base
    assert defaults("ties") == {"weight": REQUIRED, "density": 1.0, "lambda": 1.0, "normalize": True,
                                "rescale": False}


def test_one_rule_for_values_and_bounds():
    assert check_value("ties", "density", 0.7, "x") == 0.7 and check_value("ties", "normalize", True, "x") == 1.0
    assert check_bounds("dare_ties", "density", 0.1, 1.0, "evolve.density") == (0.1, 1.0)
    assert check_bounds(METHODS["linear"], "weight", -2, 3, "evolve.weight") == (-2.0, 3.0)
    bad = [lambda: check_bounds("dare_ties", "density", -5, 5, "evolve.density"),   # what evolve used to accept
           lambda: check_bounds("ties", "density", 0.9, 0.1, "evolve.density"),
           lambda: check_bounds("ties", "normalize", 0, 1, "evolve.normalize"),   # a switch is not searched
           lambda: check_bounds("task_arithmetic", "density", 0.1, 0.9, "evolve.density"),  # never read
           lambda: check_bounds("ties", "weight", 0, math.inf, "evolve.weight"),
           lambda: check_value("linear", "weight", math.nan, "models[0]"),
           lambda: check_value("ties", "density", True, "models[0]"),
           lambda: check_value("ties", "normalize", 0.5, "parameters"),
           lambda: check_value("ties", "wieght", 1.0, "parameters")]
    for case in bad:
        with pytest.raises(JaxmergeError) as e:
            case()
        assert len(str(e.value).splitlines()) == 1
    with pytest.raises(JaxmergeError, match=r"evolve.density: expected density in \[0, 1\], found -5"):
        check_bounds("dare_ties", "density", -5, 5, "evolve.density")


# mergekit 0.1.5's additions: the hyper-parameters a search may evolve, and those it may not (switches, counts)
EVOLVABLE = {"nearswap": ("t",), "sce": ("select_topk",), "ram": ("epsilon",), "ramplus_tl": ("r", "alpha", "epsilon"),
             "multislerp": ("weight", "eps"), "karcher": ("tol",), "arcee_fusion": ()}
FIXED = {"multislerp": ("normalize_weights",), "karcher": ("max_iter",), "sce": ("int8_mask",)}


@pytest.mark.parametrize("name", sorted(EVOLVABLE))
def test_new_methods_are_evolvable_where_continuous(name):
    method = METHODS[name]
    assert tuple(h.name for h in method.hparams if h.evolvable and h.role == "merge") == EVOLVABLE[name]
    for h in EVOLVABLE[name]:
        lo, hi = (0.1, 0.9) if method.hparam(h).hi == 1 else (0.0, 2.0)
        assert check_bounds(name, h, lo, hi, f"evolve.{h}") == (lo, hi)
    for h in FIXED.get(name, ()):
        with pytest.raises(JaxmergeError, match="expected an evolvable hyper-parameter"):
            check_bounds(name, h, 0, 1, f"evolve.{h}")


def test_evolve_refuses_a_method_without_continuous_parameters():
    import types
    from jaxmerge.ps.space import evolvable_method
    with pytest.raises(JaxmergeError, match="expected an evolvable merge_method in .*'sce'.*found 'arcee_fusion'"):
        evolvable_method(types.SimpleNamespace(merge_method="arcee_fusion", base_model="b"))
    assert evolvable_method(types.SimpleNamespace(merge_method="karcher", base_model=None)) is METHODS["karcher"]
