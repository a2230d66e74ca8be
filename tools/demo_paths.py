"""Every layer path a repeats-1 DFS can express over the demo's sort and cipher specialists, scored exhaustively.

    python tools/demo_paths.py

For A = sort, B = cipher and the reverse order: the paths A0, any of A1-A3 and B0-B3 in layout order, A3 (128
paths, embeddings and head from A, every scale 1), each scored on the composed target's dev split; the five best
on dev with their held-out test scores. It bounds what the demo's DFS search can find by switching layers alone
(jaxmerge/demo/README.md: in the shipped world no path composes the two skills).
"""
from __future__ import annotations

import itertools
import sys
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jaxmerge.demo.pipeline import Scorer  # noqa: E402
from jaxmerge.demo.world import build_world  # noqa: E402
from jaxmerge.fitness import make_fitness  # noqa: E402
from jaxmerge.io import load  # noqa: E402

SLOTS = [(0, 1), (0, 2), (0, 3), (1, 0), (1, 1), (1, 2), (1, 3)]  # (model, layer) between A0 and the tail A3


def main() -> None:
    world = build_world(Path(tempfile.mkdtemp()) / "world")
    splits = {"dev": Scorer(world, "dev", skills=False), "test": Scorer(world, "test", skills=False)}
    spec = load(world.base).spec
    compiled = {}

    def score(split, params, n):
        if (split, n) not in compiled:
            scorer = splits[split]
            fit = make_fitness(spec.replace(num_layers=n), scorer.prepared, scorer.tokenizer)
            compiled[split, n] = jax.jit(fit.per_item)
        return float(np.asarray(compiled[split, n](params)).mean())

    models = {s: load(world.specialists[s]).params for s in ("sort", "cipher")}
    for a, b in (("sort", "cipher"), ("cipher", "sort")):
        def stitched(path):
            pick = [(models[a] if m == 0 else models[b], layer) for m, layer in path]
            layers = {k: jnp.stack([p["layers"][k][layer] for p, layer in pick]) for k in models[a]["layers"]}
            return {**{k: v for k, v in models[a].items() if k != "layers"}, "layers": layers}

        found = []
        for mask in itertools.product((False, True), repeat=len(SLOTS)):
            path = [(0, 0), *(s for s, on in zip(SLOTS, mask) if on), (0, 3)]
            found.append((score("dev", stitched(path), len(path)), path))
        found.sort(key=lambda f: -f[0])
        alone = [(0, 0), (0, 1), (0, 2), (0, 3)]
        print(f"A={a} B={b}: A alone dev {score('dev', stitched(alone), 4):.3f} "
              f"test {score('test', stitched(alone), 4):.3f}")
        for dev, path in found[:5]:
            print(f"  dev {dev:.3f} test {score('test', stitched(path), len(path)):.3f} "
                  f"{' '.join('AB'[m] + str(layer) for m, layer in path)}", flush=True)


if __name__ == "__main__":
    main()
