"""Probe for the VLM demo world (issue #21 item 6): does a merge of an image-grounded "E" VLM and a "J" text
specialist answer image questions in J better than both, in word ROUGE-L, on held-out combinations?

In memory only (no checkpoints, no search): the frozen vision tower + projector is stood in for by a fixed
random linear map of each 4x4 patch of an 8x8 RGB picture (one coloured shape) to the LM's width, which is
what a frozen tower gives the language model: fixed features per image. The language models are the demo's
4-layer Llama (jaxmerge.demo.training.SPEC) over a word vocabulary, trained with jaxmerge.demo.train's optimiser
and schedule through jaxmerge.vlm.model.forward (the function the merge is scored with). Answers are two words
(colour shape), so no shared template gives a text-only model free ROUGE.

    base:  image -> E answer on combos in set A; image -> J answer on combos in set B (J's weak grounding);
           E -> J translation of half the words
    VLM-E: from base, image -> E answer on all train combos (+ replay of the base's data)
    text-J: from base, E -> J translation of every word and E phrase -> J phrase (+ replay)
    target: image -> J answer on held-out combos C (never seen by any model in J or E for those images)

Prints held-out target ROUGE-L for base, both sources, and task arithmetic over a grid of the two weights.
Usage: PYTHONPATH=. nice -n 10 python tools/vlm_world_probe.py
"""
from __future__ import annotations

import itertools
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxmerge.arch import ArchSpec
from jaxmerge.demo import training
from jaxmerge.demo.train import OPTIMIZER, init_params, learning_rate
from jaxmerge.demo.vlm.data import mask  # the shipped world's stencils, the same six shapes
from jaxmerge.vlm.model import LanguageSpec, forward

COLOURS = [(230, 30, 30), (30, 200, 30), (30, 30, 230), (230, 230, 30), (230, 30, 230), (30, 230, 230)]
SHAPES = ["square", "cross", "hbar", "vbar", "diag", "dot"]
E_COL = ["red", "green", "blue", "yellow", "magenta", "cyan"]
E_SHP = ["square", "cross", "hbar", "vbar", "diag", "dot"]
J_COL = ["aka", "midori", "ao", "kiiro", "murasaki", "mizu"]
J_SHP = ["shikaku", "batsu", "yoko", "tate", "naname", "ten"]
SPECIAL = ["<pad>", "<bos>", "<eos>", "<img>", "descE", "descJ", "trans", "A:"]
WORDS = SPECIAL + E_COL + E_SHP + J_COL + J_SHP
ID = {w: i for i, w in enumerate(WORDS)}
PAD, BOS, EOS, IMG = 0, 1, 2, 3
N_PATCH, SEQ = 4, 10
REPLAY = 3000  # rows of the base's (shuffled-in) data each specialist replays


def picture(colour: int, shape: int, rng, hard: bool = True) -> np.ndarray:
    """8x8 RGB, a 3x3-ish shape of one colour at a random offset on a dark background with noise."""
    m = mask(shape)
    img = rng.integers(0, 90 if hard else 20, (8, 8, 3)).astype(np.float32)
    y, x = rng.integers(0, 5, 2) if hard else rng.integers(0, 2, 2)
    img[y:y + 4, x:x + 4][m] = COLOURS[colour]
    return img / 255.0


PROJ = np.random.default_rng(123).normal(0, 1.0 / np.sqrt(48), (48, 64)).astype(np.float32)


def features(img: np.ndarray) -> np.ndarray:
    patches = img.reshape(2, 4, 2, 4, 3).transpose(0, 2, 1, 3, 4).reshape(4, 48)
    return (patches - 0.15) @ PROJ * 3.0


def row(prompt: list[str], answer: list[str], image: bool):
    pre = [BOS] + ([IMG] * N_PATCH if image else []) + [ID[w] for w in prompt] + [ID["A:"]]
    toks = pre + [ID[w] for w in answer] + [EOS]
    t = np.zeros(SEQ, np.int32); w = np.zeros(SEQ, np.float32)
    t[:len(toks)] = toks; w[len(pre):len(toks)] = 1
    return t, w, len(pre)


def dataset(kind: str, combos, n: int, rng, hard: bool = True):
    """rows of one kind: imgE / imgJ (image -> answer) or trans (E words -> J words, no image)."""
    T, W, F, P, A = [], [], [], [], []
    for _ in range(n):
        c, s = combos[rng.integers(len(combos))]
        if kind == "trans":
            words = [[E_COL[c]], [E_SHP[s]], [E_COL[c], E_SHP[s]]][rng.integers(3)]
            ans = [J_COL[E_COL.index(w)] if w in E_COL else J_SHP[E_SHP.index(w)] for w in words]
            t, w, p = row(["trans"] + words, ans, False); f = np.zeros((N_PATCH, 64), np.float32)
        else:
            ans = [E_COL[c], E_SHP[s]] if kind == "imgE" else [J_COL[c], J_SHP[s]]
            t, w, p = row(["descE" if kind == "imgE" else "descJ"], ans, True)
            f = features(picture(c, s, rng, hard))
        T.append(t); W.append(w); F.append(f); P.append(p); A.append(ans)
    return np.stack(T), np.stack(W), np.stack(F), np.array(P), A


SPEC = LanguageSpec(ArchSpec(vocab_size=len(WORDS), **training.SPEC,
                             inert=(("bos_token_id", "1"), ("eos_token_id", "2"), ("pad_token_id", "0"))), IMG)


def make_fns(spec):
    """(a jitted training step, a jitted logits function) of the LM of `spec` fed image features."""
    def loss_fn(params, tokens, weights, feats):
        logits = forward(spec, {"lm": params, "features": feats}, tokens[:, :-1])
        nll = optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:])
        return jnp.sum(nll * weights[:, 1:]) / jnp.maximum(jnp.sum(weights[:, 1:]), 1.0)

    @jax.jit
    def step(state, data, i, hyper, k):
        params, opt = state
        T, W, F = data
        idx = jax.random.randint(k, (64,), 0, T.shape[0])
        loss, g = jax.value_and_grad(loss_fn)(params, T[idx], W[idx], F[idx])
        upd, opt = OPTIMIZER.update(g, opt, params)
        lr = learning_rate(i, *hyper)
        return (jax.tree.map(lambda p, u: p - lr * u, params, upd), opt), loss

    @jax.jit
    def logits(params, tokens, feats):
        return forward(spec, {"lm": params, "features": feats}, tokens)

    return step, logits


_step, _logits = make_fns(SPEC)


def train(params, data, steps, lr, key):
    state = (params, OPTIMIZER.init(params))
    data = tuple(jnp.asarray(d) for d in data[:3])
    hyper = (jnp.float32(steps), jnp.float32(lr))
    for i in range(steps):
        state, loss = _step(state, data, jnp.float32(i), hyper, jax.random.fold_in(key, i))
    return state[0], float(loss)


def cat(*parts):
    return tuple(np.concatenate([p[i] for p in parts]) if i < 4 else sum((p[i] for p in parts), []) for i in range(5))


def greedy(params, data, n_new=3):
    T, _, F, P, _ = data
    toks = np.array(T); toks[np.arange(SEQ)[None] >= P[:, None]] = PAD
    out = [[] for _ in range(len(T))]
    for j in range(n_new):
        lg = np.asarray(_logits(params, jnp.asarray(toks), jnp.asarray(F)))
        nxt = lg[np.arange(len(T)), P + j - 1].argmax(-1)
        toks[np.arange(len(T)), np.minimum(P + j, SEQ - 1)] = nxt
        for i, t in enumerate(nxt):
            if len(out[i]) == j and t != EOS: out[i].append(WORDS[t])
    return out


def rouge_l(pred, ref):
    if not pred or not ref: return 0.0
    L = np.zeros((len(pred) + 1, len(ref) + 1))
    for i, a in enumerate(pred):
        for j, b in enumerate(ref):
            L[i + 1, j + 1] = L[i, j] + 1 if a == b else max(L[i, j + 1], L[i + 1, j])
    lcs = L[-1, -1]
    if lcs == 0: return 0.0
    p, r = lcs / len(pred), lcs / len(ref)
    return 2 * p * r / (p + r)


def score(params, data):
    return 100 * np.mean([rouge_l(p, r) for p, r in zip(greedy(params, data), data[4])])


def main(seed=0):
    t0 = time.time()
    rng = np.random.default_rng(seed)
    combos = list(itertools.product(range(6), range(6)))
    perm = rng.permutation(len(combos))
    held = combos                                  # the target: hard pictures of every combo, in J
    known = [(c, s) for c, s in combos if c < 4 and s < 4]  # J words the base knows
    base_data = cat(dataset("imgE", combos, 3000, rng, hard=False), dataset("imgJ", known, 2000, rng, hard=False),
                    dataset("trans", known, 1500, rng))
    mix = rng.permutation(len(base_data[0]))[:REPLAY]  # a shuffled share of every part of the base's data
    replay = tuple(a[mix] for a in base_data[:4]) + ([base_data[4][i] for i in mix],)
    e_data = cat(dataset("imgE", combos, 3000, rng), replay)
    j_data = cat(dataset("trans", combos, 3000, rng), replay)
    target = dataset("imgJ", held, 300, rng)
    e_held = dataset("imgE", held, 300, rng)
    key = jax.random.key(seed)
    p0 = init_params(SPEC.arch, jax.random.fold_in(key, 0))
    base, lb = train(p0, base_data, int(sys.argv[1]) if len(sys.argv) > 1 else 400, 3e-3, jax.random.fold_in(key, 1))
    vlm_e, le = train(base, e_data, 200, 3e-4, jax.random.fold_in(key, 2))
    text_j, lj = train(base, j_data, 200, 3e-4, jax.random.fold_in(key, 3))
    print(f"losses base {lb:.3f} E {le:.3f} J {lj:.3f}; trained in {time.time() - t0:.0f}s", flush=True)
    for name, p in [("base", base), ("vlm_e", vlm_e), ("text_j", text_j)]:
        print(f"{name:8s} target(J, held) {score(p, target):5.1f}  E held {score(p, e_held):5.1f}", flush=True)
    best = (0, None)
    for a, b in itertools.product([0.5, 1.0, 1.5], [0.5, 1.0, 1.5]):
        m = jax.tree.map(lambda x, e, j: x + a * (e - x) + b * (j - x), base, vlm_e, text_j)
        s = score(m, target)
        best = max(best, (s, (a, b)))
        print(f"TA a={a} b={b}: target {s:5.1f}", flush=True)
    print("best TA", best, f"total {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
