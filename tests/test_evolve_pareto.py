"""Several objectives: NSGA-II inside the generation step on two conflicting skills (the log-likelihood of what
ft1 writes, and of what ft2 writes), a front of >= 3 non-dominated members whose exports reproduce their scores,
hypervolume per generation, and a killed run resuming to the same front bit for bit."""
import json

import jax
import numpy as np
import pytest
import yaml

from jaxmerge.cli import main
from jaxmerge.config import load_config
from jaxmerge.modes import evolve
from tests.evolve_world import build_world

pytestmark = pytest.mark.slow
PROMPTS = [f"{a}{b}+" for a in range(4) for b in range(3)]


def skill_task(world, model: str, name: str) -> None:
    """A loglik task over `model`'s own greedy 4-character continuations: the skill of writing like `model`."""
    from jaxmerge.fitness import greedy_jit, load_tokenizer
    from jaxmerge.fitness.tokenize import left_pad
    from jaxmerge.io import load
    tok, m = load_tokenizer(world / model), load(world / model)
    rows = [tok(p)["input_ids"] for p in PROMPTS]
    tokens, mask = left_pad(rows, max(map(len, rows)), 0)
    out = greedy_jit(m.spec, m.params, tokens, mask, np.asarray([-1]), max_new_tokens=4)
    answers = [tok.decode(np.asarray(t).tolist()) for t in out.tokens]
    (world / f"{name}.jsonl").write_text("".join(json.dumps({"prompt": p, "answer": a}) + "\n"
                                                 for p, a in zip(PROMPTS, answers)))
    (world / f"{name}.yml").write_text(f"name: {name}\nsplits: {{dev: {name}.jsonl}}\ntemplate: '{{prompt}}'\n"
                                       "metric: loglik\n")


def config(world, generations: int = 4) -> dict:
    return {"models": ["ft1", "ft2"], "merge_method": "linear", "parameters": {"normalize": True},
            "evolve": {"weight": {"init": 0.5, "bounds": [0.0, 1.0]}},
            "search": {"population": 8, "generations": generations, "sigma": 0.3, "seed": 1,
                       "objectives": ["like_ft1", "like_ft2"]},
            "fitness": {"tasks": [{"task": "like_ft1.yml"}, {"task": "like_ft2.yml"}], "item_batch": 12}}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    world = build_world(tmp_path_factory.mktemp("pareto"))
    skill_task(world, "ft1", "like_ft1")
    skill_task(world, "ft2", "like_ft2")
    (world / "pareto.yml").write_text(yaml.safe_dump(config(world)))
    return world


@pytest.fixture(scope="module")
def run(world):
    out = world / "run"
    evolve(load_config(world / "pareto.yml"), out, progress=False)
    return out


def test_the_front_is_non_dominated_and_spans_the_trade_off(run):
    front = json.loads((run / "front.json").read_text())
    points = np.asarray([[m["objectives"]["like_ft1"], m["objectives"]["like_ft2"]] for m in front["members"]])
    assert len(points) >= 3
    for i, p in enumerate(points):
        others = np.delete(points, i, axis=0)
        assert not np.any(np.all(others >= p, axis=1) & np.any(others > p, axis=1)), "a dominated member"
    assert len(np.unique(points[:, 0])) == len(points)  # distinct trade-offs, not copies
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()][1:]  # after gen 0
    assert [row["front_size"] for row in history][-1] == len(points)
    hv = [row["hypervolume"] for row in history]
    assert hv[-1] > 0 and hv[-1] == pytest.approx(front["hypervolume"])
    assert (run / "plots/front.png").is_file() and (run / "model/config.json").is_file()


def test_exported_members_reproduce_their_scores(world, run, tmp_path):
    from jaxmerge.fitness import load_items, load_task, load_tokenizer, make_fitness, prepare
    from jaxmerge.io import load
    members = json.loads((run / "front.json").read_text())["members"]
    tok, spec = load_tokenizer(world / "ft1"), load(world / "ft1").spec
    scorers = {}
    for name in ("like_ft1", "like_ft2"):  # one compiled scorer per task, for every exported member
        task = load_task(world / f"{name}.yml")
        scorers[name] = jax.jit(make_fitness(spec, prepare(task, load_items(task, "dev"), tok, item_batch=12),
                                             tok).fitness)
    for n in (0, len(members) // 2, len(members) - 1):
        out = tmp_path / f"m{n}"
        assert main(["export", str(run), "--member", str(n), "--out", str(out)]) == 0
        assert (out / "recipe.yml").is_file() and "front member" in (out / "model/README.md").read_text()
        model = load(out / "model")
        for name, score in scorers.items():
            assert float(score(model.params)) == pytest.approx(members[n]["objectives"][name], abs=1e-5)


def test_a_killed_run_resumes_to_the_same_front(world, run, tmp_path):
    out = tmp_path / "again"
    cfg = load_config(world / "pareto.yml")
    assert evolve(cfg, out, progress=False, stop_after=2) == {"stopped_at": 2}
    evolve(cfg, out, progress=False, resume=True)
    assert (out / "front.json").read_text() == (run / "front.json").read_text()
    strip = [lambda row: {k: v for k, v in row.items() if k not in ("seconds", "evals_per_s")}]
    rows = [[strip[0](json.loads(x)) for x in (d / "history.jsonl").read_text().splitlines()] for d in (out, run)]
    assert rows[0] == rows[1]


@pytest.mark.parametrize("objectives,expected", [
    (["like_ft1", "nosuch"], "expected task names among the fitness tasks"),
    (["like_ft1", {"length": "like_ft2"}], "generates"),
])
def test_bad_objectives_are_one_line_and_write_nothing(world, tmp_path, capsys, objectives, expected):
    doc = config(world)
    doc["search"]["objectives"] = objectives
    path = world / "bad-objectives.yml"
    path.write_text(yaml.safe_dump(doc))
    assert main(["evolve", str(path), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err, err
    assert not (tmp_path / "out").exists()
