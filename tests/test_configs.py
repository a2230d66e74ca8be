"""The example configs in configs/ are valid and point at the world `jaxmerge demo` writes (./jaxmerge-demo)."""
import shutil
from pathlib import Path

import pytest

from jaxmerge.demo.world import build_world
from jaxmerge.config import load_config
from jaxmerge.merge.recipe import read_recipe

CONFIGS = Path(__file__).parent.parent / "configs"


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    """A copy of configs/ beside a demo world at jaxmerge-demo/world, as after `jaxmerge demo` in the repo."""
    root = tmp_path_factory.mktemp("repo")
    shutil.copytree(CONFIGS, root / "configs")
    build_world(root / "jaxmerge-demo" / "world", quick=True)
    return root / "configs"


@pytest.mark.parametrize("name", ["ps_dare_ties.yml", "dfs.yml", "hybrid.yml"])
def test_evolve_configs_parse_and_resolve(layout, name):
    cfg = load_config(layout / name)
    for path in (*cfg.models, *([cfg.base_model] if cfg.base_model else [])):
        assert (Path(path) / "config.json").is_file(), path
    for ref in cfg.fitness.tasks:
        assert ref.task.is_file() and ref.split == "dev"


def test_merge_recipe_parses(layout):
    recipe = read_recipe(layout / "merge_ties.yml")
    assert recipe.method == "ties"
