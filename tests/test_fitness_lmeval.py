"""lm-eval tasks as fitness, against lm-eval's own `hf` backend on the same tiny model and local task YAMLs:
the same per-document metric values (acc, acc_norm, exact_match under a regex filter), the same responses
(log-likelihoods within LOGPROB_TOL, is_greedy and completions equal), and the same aggregate; the `jaxmerge`
lm-eval backend agrees with `hf` the same way."""
import jax
import numpy as np
import pytest

pytest.importorskip("lm_eval")

from jaxmerge.fitness.lmeval.load import LmEvalRef  # noqa: E402
from jaxmerge.fitness.lmeval.results import doc_scores, responses  # noqa: E402
from jaxmerge.fitness.suite import TaskSpec, prepare_tasks, task_fitness  # noqa: E402
from jaxmerge.io import load  # noqa: E402
from tests.fitness_tiny import add_char_tokenizer  # noqa: E402
from tests.lmeval_world import samples_by_filter, simple_evaluate, write_tasks  # noqa: E402
from tests.tiny import make_tiny_model  # noqa: E402

LOGPROB_TOL = 1e-4
TASKS = ("tiny_mc", "tiny_gen")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("lmeval")
    model_dir = add_char_tokenizer(make_tiny_model(root / "model", "llama", seed=3))
    tasks = write_tasks(root)
    return {"model": model_dir, "tasks": tasks, "hf": simple_evaluate("hf", model_dir, tasks, TASKS)}


@pytest.fixture(scope="module")
def ours(world):
    """Per task: the prepared requests, the fitness's per-document values and value (its default metric and
    filter, through the device step and its host callback), and the raw responses."""
    model, out = load(world["model"]), {}
    for task, metric, filter_key in (("tiny_mc", "acc", None), ("tiny_gen", "exact_match", "first-letter")):
        spec = TaskSpec(world["tasks"], None, 1.0, 0, lm_eval=LmEvalRef(task, world["tasks"], metric, filter_key))
        tasks = prepare_tasks([spec], world["model"], allow_test=False, item_batch=4, seed=0)
        part = tasks.parts[0][1]
        fit = task_fitness(model.spec, part, tasks.tokenizer)
        raw = jax.device_get(jax.jit(fit.responses)(model.params))
        out[task] = {"part": part, "tokenizer": tasks.tokenizer, "raw": raw, "value": float(jax.jit(fit.fitness)(
            model.params)), "per_doc": np.asarray(jax.jit(fit.per_item)(model.params))}
    return out


def assert_same_responses(got: list, samples: list[dict]) -> None:
    want = [r[0] for s in samples for r in s["resps"]]
    assert len(got) == len(want)
    for g, w in zip(got, want):
        if isinstance(w, str):
            assert g == w
        else:
            assert g[1] == w[1] and abs(g[0] - w[0]) <= LOGPROB_TOL, (g, w)


@pytest.mark.parametrize("task,metric,filter_key", [("tiny_mc", "acc", None), ("tiny_mc", "acc_norm", None),
                                                    ("tiny_gen", "exact_match", "first-letter"),
                                                    ("tiny_gen", "exact_match", "whole")])
def test_fitness_equals_hf_backend_per_document(world, ours, task, metric, filter_key):
    samples = samples_by_filter(world["hf"], task)[filter_key or "none"]
    want = np.asarray([float(s[metric]) for s in samples])
    mine = ours[task]
    part = mine["part"]._replace(metric=metric, filter=filter_key or "none")
    np.testing.assert_array_equal(doc_scores(part, mine["tokenizer"], *mine["raw"]), want)
    assert_same_responses(responses(part, mine["tokenizer"], *mine["raw"]), samples)


@pytest.mark.parametrize("task,key", [("tiny_mc", "acc,none"), ("tiny_gen", "exact_match,first-letter")])
def test_compiled_fitness_is_lm_evals_metric(world, ours, task, key):
    """The fitness as the step computes it (device responses, one host callback) is lm-eval's number."""
    metric, filter_key = key.split(",")
    want = [float(s[metric]) for s in samples_by_filter(world["hf"], task)[filter_key]]
    np.testing.assert_array_equal(ours[task]["per_doc"], want)
    assert ours[task]["value"] == pytest.approx(world["hf"]["results"][task][key], abs=1e-6)


def test_the_oracle_comparison_is_not_trivial(world):
    """acc and acc_norm differ on some document, and the regex-filtered exact match has hits and misses: a
    scorer that ignored normalisation or filters would be caught above."""
    mc = samples_by_filter(world["hf"], "tiny_mc")["none"]
    assert any(s["acc"] != s["acc_norm"] for s in mc)
    gen = [s["exact_match"] for s in samples_by_filter(world["hf"], "tiny_gen")["first-letter"]]
    assert 0 < sum(gen) < len(gen)
    assert {s["arguments"][0][0].count("Q:") for s in samples_by_filter(world["hf"], "tiny_gen")["whole"]} == {3}


def test_jaxmerge_backend_equals_hf_backend(world):
    import jaxmerge.fitness.lmeval.backend  # noqa: F401  (registers "jaxmerge")
    ours = simple_evaluate("jaxmerge", world["model"], world["tasks"], TASKS)
    for task in TASKS:
        for key, want in samples_by_filter(world["hf"], task).items():
            got = samples_by_filter(ours, task)[key]
            for metric in want[0]["metrics"]:
                assert [s[metric] for s in got] == [s[metric] for s in want], (task, key, metric)
            assert_same_responses([r[0] for s in got for r in s["resps"]], want)
        for name, value in world["hf"]["results"][task].items():
            if not name.endswith("stderr,none") and isinstance(value, float):
                assert ours["results"][task][name] == pytest.approx(value, abs=1e-9), (task, name)
