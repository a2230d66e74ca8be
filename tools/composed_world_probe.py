"""Probe: can a composed skill (sort of the ciphered letters) be solved by merging a cipher and a sort specialist?

    python tools/composed_world_probe.py '{"cot": false}'                          # length lever only
    python tools/composed_world_probe.py '{"known": 8}'                             # + cipher table lever
    python tools/composed_world_probe.py '{"cot": true, "base_cipher_len": 4}'      # answer = cipher ; sort
    python tools/composed_world_probe.py '{"order": "cipher_of_sort"}'              # cipher(sort(x)) instead
    python tools/composed_world_probe.py '{"order": "cipher_of_sort", "paths": true}'  # + every layer path
    python tools/composed_world_probe.py '{"order": "cipher_of_sort", "paths": true, "hybrid": true}'  # + PS, DFS

A small-scale version of the demo world (same Llama, trainer and learning-rate schedule as jaxmerge.demo), with
three skills: `cipher`, `sort` and the composed `cipher sort x` -> sort(cipher(x)) (or cipher(sort(x))). The base is pretrained on all
three at 3-4 letters (cipher on the first `known` letters only); a cipher and a sort specialist are fine-tuned
from it on 3-5 letters (plus replay of the base's data); task arithmetic over a grid of the two weights is then
scored on held-out test rows of each skill (`cs5`: composed rows with 5 letters, which no model trained on).
With "paths", every layer path a DFS with repeats 1 can express (A's first layer, any of A's other layers and
B's in layout order, A's last layer; embeddings and head from A; scales 1) is scored for both orders of the two
specialists: the best on 200 composed 5-letter dev rows, and its score on the test rows (what DFS could find at
best, without scales); with "hybrid" also paths whose A is the task-arithmetic grid's best merge on dev
(PS then DFS in miniature). Scores are teacher-forced exact match of the answer, newline and <eos>. What it measured is in
jaxmerge/demo/README.md ("The probe that preceded it").
"""
from __future__ import annotations

import functools
import itertools
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from jaxmerge.arch import ArchSpec  # noqa: E402
from jaxmerge.demo import vocab  # noqa: E402
from jaxmerge.demo.tasks import LETTERS, Example, _cipher_table  # noqa: E402
from jaxmerge.demo.train import init_params, train  # noqa: E402
from jaxmerge.model import forward  # noqa: E402

SEQ = 26
SKILLS = ("cipher", "sort", "cs")
WORDS = vocab.SPECIALS + vocab.STRUCTURE + vocab.OPS + (";",) + vocab.LETTERS
SPEC = ArchSpec(model_type="llama", vocab_size=len(WORDS), hidden_size=64, intermediate_size=256, num_layers=4,
                num_heads=4, num_kv_heads=4, head_dim=16, rms_norm_eps=1e-6, max_position_embeddings=64)


def example(skill: str, letters: list[str], table: dict, cot: bool, order: str = "sort_of_cipher") -> Example:
    coded = [table[c] for c in letters]
    if skill == "cipher":
        return Example("cipher " + " ".join(letters), " ".join(coded))
    if skill == "sort":
        return Example("sort " + " ".join(letters), " ".join(sorted(letters)))
    answer = " ".join(sorted(coded) if order == "sort_of_cipher" else [table[c] for c in sorted(letters)])
    return Example("cipher sort " + " ".join(letters), (" ".join(coded) + " ; " + answer) if cot else answer)


def sample(skill, n, lengths, seed, exclude, table, cot, pool=LETTERS, order="sort_of_cipher"):
    rng, out, seen = np.random.default_rng(seed), [], set(exclude)
    while len(out) < n:
        letters = list(rng.choice(list(pool), size=int(rng.integers(lengths[0], lengths[1] + 1)), replace=False))
        ex = example(skill, letters, table, cot, order)
        if ex.prompt not in seen:
            seen.add(ex.prompt)
            out.append(ex)
    return out


def encode(examples):
    index = {w: i for i, w in enumerate(WORDS)}
    words = lambda text: [index[w] for w in text.replace("\n", " \n ").split()]  # noqa: E731
    tokens, weights = np.zeros((len(examples), SEQ), np.int32), np.zeros((len(examples), SEQ), np.float32)
    for i, ex in enumerate(examples):
        prompt, answer = [vocab.BOS] + words(f"Q: {ex.prompt}\nA:"), words(ex.answer + "\n") + [vocab.EOS]
        tokens[i, :len(prompt) + len(answer)] = prompt + answer
        weights[i, len(prompt):len(prompt) + len(answer)] = 1
    return tokens, weights


def main(cfg: dict) -> None:
    cot, table, order = cfg.get("cot", False), _cipher_table(0), cfg.get("order", "sort_of_cipher")
    known = LETTERS[:cfg.get("known", 16)]
    test = {s: sample(s, 300, (3, 5), 1000 + i, (), table, cot, order=order) for i, s in enumerate(SKILLS)}
    held = {s: {e.prompt for e in v} for s, v in test.items()}
    full = {s: sample(s, 6000, (3, 5), 2000 + i, held[s], table, cot) for i, s in enumerate(SKILLS[:2])}
    base_rows = [*sample("cipher", 3000, (3, cfg.get("base_cipher_len", 5 if "known" in cfg else 4)), 3001,
                         held["cipher"], table, cot, known),
                 *[e for e in full["sort"] if len(e.prompt.split()) < 6],
                 *sample("cs", 3000 if len(known) == 16 else 1500, (3, 4), 3000, held["cs"], table, cot, known,
                         order)]
    rng, key, started = np.random.default_rng(7), jax.random.key(0), time.time()
    shuffle = lambda rows, n: [rows[i] for i in rng.permutation(len(rows))[:n]]  # noqa: E731
    base, _ = train(SPEC, init_params(SPEC, jax.random.fold_in(key, 0)), *encode(shuffle(base_rows, 10**9)),
                    steps=cfg.get("base_steps", 400), lr=3e-3, batch=64, key=jax.random.fold_in(key, 1))
    models = {"base": base}
    for j, skill in enumerate(SKILLS[:2]):
        rows = shuffle(full[skill] + shuffle(base_rows, 3000), 9000)
        models[skill], _ = train(SPEC, base, *encode(rows), steps=cfg.get("spec_steps", 150), lr=3e-4, batch=64,
                                 key=jax.random.fold_in(key, 2 + j))
    print(f"trained in {time.time() - started:.0f} s", flush=True)
    encoded = {s: encode(v) for s, v in test.items()}
    five = np.array([len(e.prompt.split()) == 7 for e in test["cs"]])
    exact = jax.jit(lambda p, t, w: jnp.all((jnp.argmax(forward(SPEC, p, t[:, :-1]), -1) == t[:, 1:])
                                            | (w[:, 1:] == 0), axis=1))

    def scores(params):
        out = {s: np.asarray(exact(params, *encoded[s])) for s in SKILLS}
        return {**{s: round(float(v.mean()), 3) for s, v in out.items()},
                "cs5": round(float(out["cs"][five].mean()), 3), "cs34": round(float(out["cs"][~five].mean()), 3)}

    for name, params in models.items():
        print(name, scores(params), flush=True)
    vectors = {s: jax.tree.map(jnp.subtract, models[s], base) for s in SKILLS[:2]}
    for wc, ws in itertools.product([0.5, 0.75, 1.0, 1.25], repeat=2):
        merged = jax.tree.map(lambda b, c, s: b + wc * c + ws * s, base, vectors["cipher"], vectors["sort"])
        print("task arithmetic", wc, ws, scores(merged), flush=True)
    if cfg.get("paths"):
        dev = encode(sample("cs", 200, (5, 5), 4000, held["cs"], table, cot, order=order))
        test5 = (encoded["cs"][0][five], encoded["cs"][1][five])
        best_paths(models, (("sort", "cipher"), ("cipher", "sort")), dev, test5)
        if cfg.get("hybrid"):  # PS then DFS in miniature: the grid's best merge on dev as A, a specialist as B
            grid = itertools.product([0.5, 0.75, 1.0, 1.25], repeat=2)
            merges = {w: jax.tree.map(lambda b, c, s: b + w[0] * c + w[1] * s, base, vectors["cipher"],
                                      vectors["sort"]) for w in grid}
            exact = jax.jit(lambda p, t, w: jnp.all((jnp.argmax(forward(SPEC, p, t[:, :-1]), -1) == t[:, 1:])
                                                    | (w[:, 1:] == 0), axis=1).mean())
            weights = max(merges, key=lambda w: float(exact(merges[w], *dev)))
            print(f"merge chosen on dev: weights {weights}", flush=True)
            best_paths({**models, "merge": merges[weights]}, (("merge", "sort"), ("merge", "cipher")), dev, test5)


def best_paths(models: dict, pairs, dev, test) -> None:
    """Every repeats-1 DFS path over each (A, B) of `pairs`: the best on dev, and its test score (cs5 rows)."""
    def stitched(a, b, path):
        pick = [(models[a] if m == 0 else models[b], layer) for m, layer in path]
        layers = {k: jnp.stack([p["layers"][k][layer] for p, layer in pick]) for k in models[a]["layers"]}
        return {**{k: v for k, v in models[a].items() if k != "layers"}, "layers": layers}

    @functools.partial(jax.jit, static_argnums=3)
    def matches(params, tokens, weights, n):
        logits = forward(SPEC.replace(num_layers=n), params, tokens[:, :-1])
        return jnp.all((jnp.argmax(logits, -1) == tokens[:, 1:]) | (weights[:, 1:] == 0), axis=1).mean()

    def exact(params, tokens, weights, n):
        return float(matches(params, jnp.asarray(tokens), jnp.asarray(weights), n))

    slots = [(0, 1), (0, 2), (0, 3), (1, 0), (1, 1), (1, 2), (1, 3)]
    for a, b in pairs:
        found = []
        for mask in itertools.product((False, True), repeat=len(slots)):
            path = [(0, 0)] + [s for s, on in zip(slots, mask) if on] + [(0, 3)]
            params = stitched(a, b, path)
            found.append((exact(params, *dev, len(path)), path, params))
        dev_best, path, params = max(found, key=lambda f: f[0])
        alone = stitched(a, b, [(0, 0), (0, 1), (0, 2), (0, 3)])
        print(f"paths A={a} B={b}: A alone dev {exact(alone, *dev, 4):.3f} test {exact(alone, *test, 4):.3f}; "
              f"best of {len(found)} on dev {dev_best:.3f} test {exact(params, *test, len(path)):.3f} path "
              f"{[('AB'[m], layer) for m, layer in path]}", flush=True)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]) if len(sys.argv) > 1 else {})
