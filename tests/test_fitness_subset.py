"""Subset fitness: stratified selection, unbiased weights, and make_fitness on a subset = the estimate."""
import jax
import numpy as np
import pytest

from jaxmerge.errors import JaxmergeError
from jaxmerge.fitness import load_tokenizer, make_fitness, prepare
from jaxmerge.fitness.subset import (allocate, estimate, random_subset, stratified_subset, strata,
                                     subset_items)
from jaxmerge.fitness.tasks import Item, Task
from jaxmerge.io import load
from tests.fitness_tiny import add_char_tokenizer
from tests.tiny import make_tiny_model


def sources(seed=0, m=3, n=120):
    rng = np.random.default_rng(seed)
    difficulty = rng.uniform(size=n)
    return (rng.uniform(size=(m, n)) > difficulty).astype(np.float32)


def test_allocation_is_proportional_and_covers_strata():
    sizes = np.array([50, 30, 15, 5])
    for n in (4, 10, 37, 100):
        alloc = allocate(sizes, n)
        assert alloc.sum() == n and (alloc >= 1).all() and (alloc <= sizes).all()
    np.testing.assert_array_equal(allocate(sizes, 20), [10, 6, 3, 1])


def test_stratified_subset_weights_and_determinism():
    src = sources()
    sub = stratified_subset(src, 24, seed=5)
    assert len(set(sub.indices)) == 24 and np.isclose(sub.weights.sum(), 1.0)
    np.testing.assert_array_equal(sub.indices, stratified_subset(src, 24, seed=5).indices)
    assert len(np.unique(strata(src, 5)[sub.indices])) == 4  # 3 sources -> 4 levels, all represented
    full = stratified_subset(src, src.shape[1])
    candidate = np.random.default_rng(1).uniform(size=src.shape[1])
    assert estimate(full, candidate[full.indices]) == pytest.approx(candidate.mean())


def test_stratified_estimate_is_unbiased_and_tighter():
    """Averaged over seeds the estimate is the full mean, with a smaller spread than a uniform subset."""
    src = sources()
    candidate = (src.mean(0) + np.random.default_rng(2).normal(0, 0.2, src.shape[1]) > 0.5).astype(float)
    strat = [estimate(s, candidate[s.indices]) for s in (stratified_subset(src, 20, seed=k) for k in range(400))]
    uniform = [estimate(s, candidate[s.indices]) for s in (random_subset(120, 20, seed=k) for k in range(400))]
    assert np.mean(strat) == pytest.approx(candidate.mean(), abs=0.01)
    assert np.std(strat) < 0.8 * np.std(uniform)


def test_bad_subset_size():
    with pytest.raises(JaxmergeError, match="subset size"):
        stratified_subset(sources(), 0)
    with pytest.raises(JaxmergeError, match="subset size"):
        random_subset(10, 11)


@pytest.mark.slow
def test_subset_fitness_equals_estimate_of_per_item(tmp_path):
    path = add_char_tokenizer(make_tiny_model(tmp_path / "m", "llama", seed=4, num_hidden_layers=2))
    model, tok = load(path), load_tokenizer(path)
    task = Task("ll", (("dev", "x"),), template="Q: {prompt}\nA:", metric="loglik")
    items = [Item(f"{a}*{a}", str(a * a)) for a in range(12)]
    full = make_fitness(model.spec, prepare(task, items, tok, item_batch=4))
    per_item = np.asarray(jax.jit(full.per_item)(model.params))
    sub = stratified_subset(per_item[None], 5, seed=0, max_strata=3)
    cheap = make_fitness(model.spec, prepare(task, subset_items(items, sub), tok, item_batch=4),
                         weights=sub.weights)
    assert float(jax.jit(cheap.fitness)(model.params)) == pytest.approx(estimate(sub, per_item[sub.indices]),
                                                                        abs=1e-5)
