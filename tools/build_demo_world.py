"""Train the demo world for the shipped seed into jaxmerge/demo/world/, then show that it leaves room to evolve.

    python tools/build_demo_world.py            # retrain (minutes on 2 cores), then the evidence
    python tools/build_demo_world.py --check    # only the evidence, on the world already shipped
    python tools/build_demo_world.py --vlm      # retrain the VLM world into jaxmerge/demo/vlm/world/ (a minute)

The evidence scores, on the held-out test splits (the composed target, and each single skill): every source, the
hand-made merges, the task arithmetic of the sort and cipher specialists alone (weights 1 / 1), and the
task-arithmetic weights that a small random search / hill climb found on the target's dev split.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]

import numpy as np  # noqa: E402


def evidence(seed: int, per_model: int, per_layer: int) -> None:
    from demo_evidence import Merges, hand_made, search
    from jaxmerge.demo import training
    from jaxmerge.demo.pipeline import Scorer
    from jaxmerge.demo.world import build_world

    world = build_world(Path(tempfile.mkdtemp()) / "world", seed=seed)
    test, dev = Scorer(world), Scorer(world, split="dev", skills=False)
    rows = {"base": test(world.base)}
    rows.update({f"specialist {s}": test(world.specialists[s]) for s in training.SKILLS})
    rows.update(hand_made(world, test))
    start = time.perf_counter()
    per_model, per_layer = search(Merges(world, dev), seed, per_model, per_layer)
    print(f"search took {time.perf_counter() - start:.0f} s")
    merges = Merges(world, test)
    pair = np.zeros((len(training.SKILLS), training.spec().num_layers))
    pair[[training.SKILLS.index("sort"), training.SKILLS.index("cipher")]] = 1.0
    for name, weights in (("sort + cipher, weights 1 / 1", pair), ("searched per-model weights", per_model),
                          ("searched per-layer weights", per_layer)):
        rows[name] = test.summary(merges(weights))
    print(f"{'held-out test':36s} {'target':>7s} " + " ".join(f"{s:>8s}" for s in training.SKILLS))
    for name, acc in rows.items():
        print(f"{name:36s} {acc['target']:7.3f} " + " ".join(f"{acc[s]:8.3f}" for s in training.SKILLS))


def ship(seed: int, vlm: bool = False) -> dict:
    """Train into a scratch directory, then replace the shipped models and manifest with it (the package's
    directory is not a jaxmerge output, so it is never handed to atomic_dir to be replaced whole)."""
    from jaxmerge.atomic import MARKER
    if vlm:
        from jaxmerge.demo.vlm.world import MODELS as names, SHIPPED, train_models
    else:
        from jaxmerge.demo import training
        from jaxmerge.demo.world import SHIPPED, train_models
        names = ("base", *training.SKILLS)

    with tempfile.TemporaryDirectory() as tmp:
        info = train_models(Path(tmp) / "world", seed, progress=print)
        for name in names:
            shutil.rmtree(SHIPPED / name, ignore_errors=True)
            shutil.copytree(Path(tmp) / "world" / name, SHIPPED / name, ignore=shutil.ignore_patterns(MARKER))
        shutil.copyfile(Path(tmp) / "world" / "manifest.json", SHIPPED / "manifest.json")
    return info


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="skip training; run the evidence on the shipped world")
    parser.add_argument("--vlm", action="store_true", help="train and ship the VLM world (its evidence is "
                                                           "`jaxmerge demo --vlm`)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-model", type=int, default=80, help="random per-model candidates")
    parser.add_argument("--per-layer", type=int, default=150, help="per-layer hill-climb steps")
    args = parser.parse_args()
    if args.vlm and args.check:
        parser.error("--check runs the text world's evidence; the VLM world's is `jaxmerge demo --vlm`")
    if not args.check:
        start = time.perf_counter()
        info = ship(args.seed, args.vlm)
        print(f"trained in {time.perf_counter() - start:.0f} s: {info}")
    if args.vlm:
        return 0
    evidence(args.seed, args.per_model, args.per_layer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
