"""Done-when of the ecosystem fitness: a user's lm-eval task YAML and a parquet dataset as `jaxmerge evolve`
fitness, the winner's fitness equal to lm-eval's own `hf` backend (and `jaxmerge eval`) on the exported model."""
import json

import pandas as pd
import pytest
import yaml

pytest.importorskip("lm_eval")

from jaxmerge.cli import main  # noqa: E402
from tests.evolve_world import build_world  # noqa: E402
from tests.lmeval_world import simple_evaluate, write_tasks  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    world = build_world(tmp_path_factory.mktemp("world"))
    tasks = write_tasks(world)
    rows = pd.DataFrame({"question": [f"{a}+{b}=" for a in range(4) for b in range(3)],
                         "sum": [a + b for a in range(4) for b in range(3)]})
    rows.to_parquet(world / "sums.parquet")
    (world / "sums.yml").write_text("name: sums\nsplits: {dev: sums.parquet}\ntemplate: '{prompt}'\n"
                                    "metric: loglik\ncolumns: {prompt: question, answer: sum}\n")
    config = {"models": ["ft1", "ft2"], "base_model": "base", "merge_method": "task_arithmetic",
              "evolve": {"weight": {"init": 0.5, "bounds": [0.0, 1.0]}},
              "search": {"strategy": "CMA_ES", "population": 4, "generations": 2, "sigma": 0.3, "seed": 0},
              "fitness": {"tasks": [{"lm_eval": "tasks/mc.yaml", "metric": "acc_norm", "weight": 2.0},
                                    {"task": "sums.yml", "split": "dev"}], "item_batch": 4}}
    path = world / "lmeval.yml"
    path.write_text(yaml.safe_dump(config))
    out = world / "run"
    assert main(["evolve", str(path), "--out", str(out), "--no-progress"]) == 0
    return {"world": world, "tasks": tasks, "out": out, "best": json.loads((out / "best.json").read_text())}


def test_winner_fitness_is_lm_evals_and_jaxmerge_evals(run, tmp_path):
    best, model = run["best"], run["out"] / "model"
    hf = simple_evaluate("hf", model, run["tasks"], ["tiny_mc"])["results"]["tiny_mc"]["acc_norm,none"]
    items = tmp_path / "sums.jsonl"
    assert main(["eval", str(model), str(run["world"] / "sums.yml"), "--split", "dev", "--out", str(items)]) == 0
    loglik = [json.loads(line)["score"] for line in items.read_text().splitlines()]
    assert len(loglik) == 12
    assert best["fitness"] == pytest.approx((2.0 * hf + sum(loglik) / len(loglik)) / 3.0, abs=1e-5)


def test_best_json_names_both_tasks(run):
    described = {t["task"]: t for t in run["best"]["tasks"]}
    assert described["tiny_mc"]["source"] == "lm-eval" and described["tiny_mc"]["metric"] == "acc_norm"
    assert described["tiny_mc"]["split"] == "validation" and described["tiny_mc"]["items"] == 8
    assert described["sums"]["items"] == 12 and described["sums"]["split"] == "dev"
