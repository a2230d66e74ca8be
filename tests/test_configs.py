"""Every config in configs/ and in the README runs as written against the world `jaxmerge demo` writes
(./jaxmerge-demo), and the shipped DFS config cannot end below its own model A."""
import json
import re
import shutil
from pathlib import Path

import pytest

from jaxmerge.config import load_config
from jaxmerge.demo.world import build_world
from jaxmerge.merge.build import merge_recipe
from jaxmerge.merge.recipe import read_recipe
from jaxmerge.modes import evolve

REPO = Path(__file__).parent.parent
CONFIGS = REPO / "configs"
EVOLVE = ["ps_dare_ties.yml", "dfs.yml", "hybrid.yml"]


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    """A copy of configs/ beside a demo world at jaxmerge-demo/world, as after `jaxmerge demo` in the repo."""
    root = tmp_path_factory.mktemp("repo")
    shutil.copytree(CONFIGS, root / "configs")
    build_world(root / "jaxmerge-demo" / "world", quick=True)
    return root / "configs"


def test_the_readme_example_is_the_shipped_config():
    blocks = re.findall(r"```yaml\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    assert (CONFIGS / "ps_dare_ties.yml").read_text() in blocks


@pytest.mark.parametrize("name", EVOLVE)
def test_evolve_configs_parse_and_resolve(layout, name):
    cfg = load_config(layout / name)
    for path in (*cfg.models, *([cfg.base_model] if cfg.base_model else [])):
        assert (Path(path) / "config.json").is_file(), path
    for ref in cfg.fitness.tasks:
        assert ref.task.is_file() and ref.split == "dev"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ps_dare_ties.yml", "hybrid.yml"])
def test_evolve_configs_run_as_written(layout, tmp_path, name):
    """Built, baselines scored and one generation run (the whole budget is the demo's job, not CI's)."""
    assert evolve(load_config(layout / name), tmp_path / "run", progress=False, stop_after=1) == {"stopped_at": 1}
    stage = tmp_path / "run" / ("ps" if name == "hybrid.yml" else "")
    best = json.loads((stage / "best.json").read_text())
    assert best["status"] == "running" and best["fitness"] >= best["baselines"]["start"]


@pytest.mark.slow
def test_the_shipped_dfs_config_never_ends_below_model_a(layout, tmp_path):
    cfg = load_config(layout / "dfs.yml")
    best = evolve(cfg, tmp_path / "dfs", progress=False)
    model_a = best["baselines"]["sources"][cfg.models[0]]
    assert best["baselines"]["start"] == model_a  # the DFS start is model A itself
    assert best["fitness"] >= model_a
    assert (tmp_path / "dfs" / "model" / "config.json").is_file()


def test_merge_recipe_runs(layout, tmp_path, monkeypatch):
    monkeypatch.chdir(layout.parent)  # mergekit recipes: relative to the working directory (the repo root)
    recipe = read_recipe(layout / "merge_ties.yml")
    assert recipe.method == "ties"
    out = merge_recipe(recipe, tmp_path / "ties")
    assert (out / "model.safetensors").is_file()
