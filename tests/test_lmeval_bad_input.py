"""Bad input around lm-eval tasks: one line and exit 2, nothing written (a task needing the network, missing data
files, unknown task / metric / filter, sampling, lm-eval not installed)."""
import importlib.util

import pytest
import yaml

pytest.importorskip("lm_eval")

from jaxmerge.cli import main  # noqa: E402
from tests.evolve_world import build_world, write_config  # noqa: E402
from tests.lmeval_world import write_tasks  # noqa: E402

HUB = """task: hub_task
dataset_path: some-org/some-dataset-that-is-not-here
dataset_name: main
test_split: test
output_type: generate_until
doc_to_text: "{{question}}"
doc_to_target: "{{answer}}"
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    world = build_world(tmp_path_factory.mktemp("lmeval-bad"))
    tasks = write_tasks(world)
    (tasks / "hub.yaml").write_text(HUB)
    missing = (tasks / "mc.yaml").read_text().replace("mc.jsonl", "gone.jsonl").replace("tiny_mc", "tiny_gone")
    (tasks / "gone.yaml").write_text(missing)
    sampled = (tasks / "gen.yaml").read_text().replace("do_sample: false", "do_sample: true\n  temperature: 0.7")
    (tasks / "sampled.yaml").write_text(sampled.replace("tiny_gen", "tiny_sampled"))
    return world


CASES = {
    "needs the network": ({"lm_eval": "tasks/hub.yaml"}, ["some-org/some-dataset-that-is-not-here", "offline",
                                                          "data_files"]),
    "missing data file": ({"lm_eval": "tasks/gone.yaml"}, ["gone.jsonl", "missing"]),
    "unknown task": ({"lm_eval": "no_such_task", "include_path": "tasks"}, ["no_such_task"]),
    "unknown metric": ({"lm_eval": "tasks/mc.yaml", "metric": "f1"}, ["expected metric in ['acc', 'acc_norm']"]),
    "unknown filter": ({"lm_eval": "tasks/gen.yaml", "filter": "strict"}, ["expected filter in"]),
    "sampling": ({"lm_eval": "tasks/sampled.yaml"}, ["greedy generation"]),
    "unknown key": ({"lm_eval": "tasks/mc.yaml", "shots": 3}, ["unknown key", "shots"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_lmeval_task_is_one_line_and_exit_2(world, tmp_path, capsys, case):
    entry, words = CASES[case]
    doc = yaml.safe_load(write_config(world).read_text())
    doc["fitness"]["tasks"] = [entry]
    path = world / f"bad-{case.replace(' ', '_')}.yml"
    path.write_text(yaml.safe_dump(doc))
    assert main(["evolve", str(path), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and all(w in err for w in words), err
    assert not (tmp_path / "out").exists()


def test_without_lm_eval_installed_the_extra_is_named(world, tmp_path, capsys, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "lm_eval" else real(name, *a))
    doc = yaml.safe_load(write_config(world).read_text())
    doc["fitness"]["tasks"] = [{"lm_eval": "tasks/mc.yaml"}]
    (world / "no-lmeval.yml").write_text(yaml.safe_dump(doc))
    assert main(["evolve", str(world / "no-lmeval.yml"), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "jaxmerge[lmeval]" in err, err
