"""`build_world`: the demo's base model, its specialists and their task files, materialised in one directory.

The models for the default seed ship with the package (jaxmerge/demo/world/, written by
tools/build_demo_world.py): training them takes minutes on a 2-core CPU, and shipping makes `jaxmerge demo`
and CI start in seconds, with the same bits on every machine (float reductions differ across CPUs, so a world
retrained elsewhere is close but not identical). Any other seed is trained on first use and cached under
~/.cache/jaxmerge/demo-<hash>. Task files are cheap and are always regenerated from the seed.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Callable

from jaxmerge.atomic import atomic_dir
from jaxmerge.demo import training
from jaxmerge.demo.tasks import write_tasks
from jaxmerge.errors import expect

SHIPPED = Path(__file__).parent / "world"


@dataclasses.dataclass(frozen=True)
class World:
    """Where everything is: HF model directories and task YAMLs (one per single skill, and the composed target)."""
    root: Path
    base: Path
    specialists: dict[str, Path]
    tasks: dict[str, Path]
    target: Path
    seed: int


def training_hash(seed: int) -> str:
    """Identifies the trained models: the seed and every number that shapes training."""
    return digest({"seed": seed, "recipe": training.as_dict()})


def digest(doc: dict) -> str:
    """12 hex digits naming a JSON document (key order ignored): how both demos name their trained models."""
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:12]


def cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "jaxmerge"


def models_dir(seed: int, progress=None) -> Path:
    """Trained models for `seed`: the shipped ones if they match the training settings, else the cache (training
    if empty)."""
    return shipped_or_cached(training_hash(seed), SHIPPED, "demo", lambda out: train_models(out, seed, progress))


def train_models(out_dir: Path, seed: int, progress=None) -> dict:
    """Train base + specialists and write them as HF checkpoints with a manifest, atomically."""
    from jaxmerge.demo.build import train_all
    return write_trained(out_dir, training_hash(seed), seed, lambda tmp: train_all(tmp, seed, progress))


def shipped_or_cached(digest: str, shipped: Path, prefix: str, train: Callable[[Path], dict]) -> Path:
    """`shipped` if its manifest names `digest`, else the cache directory PREFIX-DIGEST (`train(it)` first when
    it holds no such manifest): how the text and the VLM demo find their trained models."""
    cache = cache_root() / f"{prefix}-{digest}"
    for where in (shipped, cache):
        manifest = where / "manifest.json"
        if manifest.is_file() and json.loads(manifest.read_text()).get("hash") == digest:
            return where
    train(cache)
    return cache


def write_trained(out_dir: Path, digest: str, seed: int, train: Callable[[Path], dict]) -> dict:
    """`train(tmp)` into a temporary directory, then its manifest (digest, seed, what train returned), renamed
    into place together."""
    with atomic_dir(out_dir, overwrite=True) as tmp:
        info = train(tmp)
        (tmp / "manifest.json").write_text(json.dumps({"hash": digest, "seed": seed, **info}, indent=2,
                                                      sort_keys=True))
    return info


def _world(root: Path, seed: int, skills: dict[str, Path], target: Path) -> World:
    models = root / "models"
    return World(root, models / "base", {s: models / s for s in training.SKILLS}, skills, target, seed)


def build_world(out_dir: str | os.PathLike, seed: int = 0, quick: bool = False, progress=None) -> World:
    """Materialise the world in `out_dir` (reused as is when it already holds this seed's world, replaced when
    it holds another demo world, refused when it holds anything else).

    The world is the same with or without `quick` (it only shrinks the demo's search, see demo.pipeline), so CI
    exercises exactly the shipped world and the full demo's splits.
    """
    stamp = {"hash": training_hash(seed), "seed": seed, "splits": training.SPLIT_SIZES,
             "target": training.TARGET_SIZES}
    root = materialise(out_dir, stamp, lambda: models_dir(seed, progress), ("base", *training.SKILLS),
                       lambda task_dir: write_tasks(task_dir, seed, train=training.TRAIN_ROWS,
                                                    target=training.TARGET_SIZES, **training.SPLIT_SIZES))
    task_dir = root / "tasks"
    return _world(root, seed, {s: task_dir / f"{s}.yaml" for s in training.SKILLS}, task_dir / "target.yaml")


def materialise(out_dir: str | os.PathLike, stamp: dict, source: Callable[[], Path], models: tuple[str, ...],
                write_tasks: Callable[[Path], None]) -> Path:
    """A demo world in `out_dir` (both demos'): reused as is when its world.json equals `stamp` (a JSON-normal
    dict), else rebuilt in one step from the trained models in `source()` (called only then: it may train) and
    `write_tasks(DIR/tasks)`. A world.json marks a demo world written earlier (another seed or demo, an older
    jaxmerge's splits): replaced; a directory holding anything else is refused."""
    root = Path(out_dir).absolute()
    existing = root / "world.json"
    if existing.is_file() and json.loads(existing.read_text()) == stamp:
        return root
    expect(existing.is_file() or not root.exists() or not any(root.iterdir()),
           f"expected an empty directory or one holding a demo world, found other files in {root}")
    trained = source()
    with atomic_dir(root, overwrite=True) as tmp:
        for name in models:
            shutil.copytree(trained / name, tmp / "models" / name)
        write_tasks(tmp / "tasks")
        (tmp / "world.json").write_text(json.dumps(stamp, sort_keys=True))
    return root
