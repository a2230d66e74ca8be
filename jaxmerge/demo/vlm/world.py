"""`build_vlm_world`: the VLM world's models and image task files, materialised in one directory.

As for the text demo (jaxmerge.demo.world): the models for the default seed ship with the package
(jaxmerge/demo/vlm/world/, written by tools/build_demo_world.py --vlm), any other seed is trained on first use
(70-80 s on a 2-core CPU) and cached; task files (PNG pictures, JSONL rows, task YAMLs) are regenerated from the seed.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from jaxmerge.demo import world as text_world
from jaxmerge.demo.vlm import data, settings, vocab

SHIPPED = Path(__file__).parent / "world"
MODELS = ("base", "vlm_e", "text_j")


@dataclasses.dataclass(frozen=True)
class VLMWorld:
    root: Path
    models: dict[str, Path]  # base, vlm_e (a LLaVA), text_j
    target: Path             # pictures of three objects named in J: the merge's task
    skill: Path              # other three-object pictures named in E: VLM-E's own question
    seed: int


def training_hash(seed: int) -> str:
    return text_world.digest({"seed": seed, "vlm_recipe": settings.as_dict()})


def models_dir(seed: int, progress=None) -> Path:
    """The shipped models if they match the settings, else the cache (training into it if empty)."""
    return text_world.shipped_or_cached(training_hash(seed), SHIPPED, "vlm-demo",
                                        lambda out: train_models(out, seed, progress))


def train_models(out_dir: Path, seed: int, progress=None) -> dict:
    from jaxmerge.demo.vlm.build import train_all
    return text_world.write_trained(out_dir, training_hash(seed), seed, lambda tmp: train_all(tmp, seed, progress))


def write_task(task_dir: Path, name: str, question: tuple[str, tuple[int, ...]], seed: int, stream: int) -> Path:
    """task_dir/NAME.yaml with its dev and test JSONL and one PNG per item (drawn from their own seed, never
    from the training rows' generator)."""
    import yaml
    from PIL import Image
    (task_dir / "images").mkdir(parents=True, exist_ok=True)
    splits = {}
    for k, (split, n) in enumerate(settings.SPLITS.items()):
        rng = np.random.default_rng([seed, 13, stream, k])
        rows = data.sample(*question, n, rng)
        lines = []
        for i, row in enumerate(rows):
            image = f"images/{name}_{split}_{i}.png"
            Image.fromarray(row.picture).save(task_dir / image)
            lines.append(json.dumps({"image": image, "prompt": row.prompt, "answer": row.answer}))
        (task_dir / f"{name}_{split}.jsonl").write_text("\n".join(lines) + "\n")
        splits[split] = f"{name}_{split}.jsonl"
    template = settings.TEMPLATE.format(image=vocab.IMAGE_TOKEN + " ", prompt="{prompt}")  # as trained
    longest = 2 * max(question[1]) + 1  # two words per object, then the newline that stops it
    spec = {"name": name, "splits": splits, "images": True, "template": template,
            "metric": "rouge_l", "rouge_tokens": "words", "max_new_tokens": longest, "stop": ["\n"]}
    (task_dir / f"{name}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return task_dir / f"{name}.yaml"


def _world(root: Path, seed: int) -> VLMWorld:
    return VLMWorld(root, {m: root / "models" / m for m in MODELS}, root / "tasks/target.yaml",
                    root / "tasks/skill.yaml", seed)


def build_vlm_world(out_dir, seed: int = 0, progress=None) -> VLMWorld:
    """Materialise the world in `out_dir` (reused when it holds this seed's world with these tasks, replaced when
    it holds another demo world, text or VLM, refused when it holds anything else: demo.world.materialise)."""
    stamp = json.loads(json.dumps({"hash": training_hash(seed), "seed": seed, "splits": settings.SPLITS,
                                   "kind": "vlm", "target": settings.TARGET, "skill": settings.SKILL}))

    def write_tasks(task_dir: Path) -> None:
        write_task(task_dir, "target", settings.TARGET, seed, 0)
        write_task(task_dir, "skill", settings.SKILL, seed, 1)
    return _world(text_world.materialise(out_dir, stamp, lambda: models_dir(seed, progress), MODELS, write_tasks),
                  seed)
