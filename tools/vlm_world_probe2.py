"""Probe 2 for the VLM demo world (issue #21 item 6), parametrised by lever, with a dev split.

History, kept as it was measured: it found the lever the shipped world uses (jaxmerge/demo/vlm/, which draws
its own pictures and words; this script keeps its own copies so that the table below stays reproducible).

Same model and stand-ins as tools/vlm_world_probe.py (demo 4-layer Llama training.SPEC over a word vocabulary,
frozen image features = a fixed random linear map of each 4x4 cell, jaxmerge.vlm.model.forward), but pictures
hold several objects: a 4 x (4*SLOTS) RGB strip of SLOTS cells, each empty or one coloured shape; the answer
lists each object "colour shape" left to right.

Count lever ("count"): the base sees image -> E and image -> J answers and E -> J translation only for pictures /
phrases of 1..BASE_MAX objects; VLM-E sees image -> E on 1..SPEC_MAX objects; text-J sees E -> J translation of
1..SPEC_MAX object phrases (both + a replay share of the base's data); target: image -> J on TARGET_N objects.

The task arithmetic point base + a (E - base) + b (J - base) is chosen on a dev split of target items and scored
on a separate test split (fresh pictures).
Usage: PYTHONPATH=. nice -n 10 python tools/vlm_world_probe2.py [key=value ...]  (see CONFIG)

Measured 2026-12-02 (3 cells, base 1..2 objects, specialists 1..3, target 3-object pictures in J, 300 dev / 400 test
items, test ROUGE-L; "TA" = the grid point best on dev, scored on test; the CPU was shared, so times are high):
  fill=left                         seed 0: base 76.8 VLM-E 78.3 text-J 76.0 TA 79.0 (1.5/0.25)
  fill=random                       seed 0: base 78.9 VLM-E 80.7 text-J 78.6 TA 90.7 (2.0/0.0: VLM-E scaled alone)
                                    seed 1: base 78.9 VLM-E 77.0 text-J 77.6 TA 79.4 (1.0/0.5)
  fill=random j_order=reverse       seed 0: base 80.0 VLM-E 79.8 text-J 79.9 TA 80.0 (0/0)
  fill=random trans_fmt=descJ       seed 0: base 79.2 VLM-E 76.2 text-J 76.4 TA 79.2 (0/0)
  fill=random chain=1 (J part)      seed 0: base 74.8 VLM-E 74.9 text-J 58.0 TA 74.9 (1.0/0.0)
    + j_lr=1e-3                     seed 0: base 74.8 VLM-E 74.9 text-J 74.3 TA 77.4 (0.0/0.5)
    + trans_fmt=blankJ              seed 0: base 76.8 VLM-E 70.7 text-J 77.4 TA 78.3 (0.0/0.5)
    + trans_fmt=blank               seed 0: base 79.3 VLM-E 65.4 text-J 75.1 TA 79.1 (0.0/0.5)
  fill=random align=1               seed 0: base 76.0 VLM-E 66.6 text-J 88.4 TA 93.8 (1.0/1.0)
                                    seed 1: base 77.2 VLM-E 75.4 text-J 91.6 TA 96.2 (0.5/1.5)
  fill=random align=1 score=new     seed 0: base  1.0 VLM-E  1.0 text-J 67.4 TA 94.3 (1.0/1.0)
                                    seed 1: base 10.6 VLM-E 23.5 text-J 77.6 TA 93.6 (0.5/1.5)
  text-J's task vector alone, scaled and dev-chosen (a=0), align=1: all words 88.4 / 93.6 (seeds 0 / 1),
  third object 77.9 / 90.1; VLM-E's alone: 76.0 / 82.9 and 1.7 / 37.1.
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
from jaxmerge.vlm.model import LanguageSpec, forward
from vlm_world_probe import cat, make_fns, mask, rouge_l  # tools/, the script's directory, is on sys.path

CONFIG = {
    "seed": 0, "slots": 3, "base_max": 2, "spec_max": 3, "target_n": 3,
    "fill": "left",          # left: n objects fill the first n cells; random: n of the cells, listed left to right
    "noise": 60,             # background noise amplitude (0..255)
    "base_steps": 400, "base_lr": 3e-3, "e_steps": 200, "e_lr": 3e-4, "j_steps": 200, "j_lr": 3e-4,
    "base_rows": 2500, "spec_rows": 3000, "replay": 3000, "dev": 300, "test": 400,
    "grid": "0.25,0.5,0.75,1.0,1.25,1.5",
    "chain": 0,              # 1: J answers are "E words = J words" and translation rows are "E words = J words"
                             #    with the E part given (no loss); the target is scored on the J part
    "j_order": "same",       # reverse: J lists the objects right to left (E phrase order reversed in translation)
    "trans_fmt": "trans",    # descJ: translation rows read "<bos> E words descJ A: J words" (the J image
                             #   question's task word after the text source, as after the image tokens);
                             # with chain=1: blank / blankJ: "<bos> <img>x(empty picture) trans|descJ A: E = J"
    "align": 0,              # 1: two image tokens per cell (its left and right halves), and translation rows
                             #   "<bos> <cell words> descJ A: J" with each cell as "colour shape" or "none none",
                             #   so the text source sits at the image tokens' positions
    "score": "all",          # all: ROUGE-L of the whole answer; new: of the objects past base_max only
}

COLOURS = [(230, 30, 30), (30, 200, 30), (30, 30, 230), (230, 230, 30), (230, 30, 230), (30, 230, 230)]
E_COL = ["red", "green", "blue", "yellow", "magenta", "cyan"]
E_SHP = ["square", "cross", "hbar", "vbar", "diag", "dot"]
J_COL = ["aka", "midori", "ao", "kiiro", "murasaki", "mizu"]
J_SHP = ["shikaku", "batsu", "yoko", "tate", "naname", "ten"]
SPECIAL = ["<pad>", "<bos>", "<eos>", "<img>", "descE", "descJ", "trans", "A:", "=", "none"]
WORDS = SPECIAL + E_COL + E_SHP + J_COL + J_SHP
ID = {w: i for i, w in enumerate(WORDS)}
PAD, BOS, EOS, IMG = 0, 1, 2, 3


PROJ = np.random.default_rng(123).normal(0, 1.0 / np.sqrt(48), (48, 64)).astype(np.float32)
PROJ2 = np.random.default_rng(124).normal(0, 1.0 / np.sqrt(24), (24, 64)).astype(np.float32)


class World:
    def __init__(self, cfg):
        self.cfg = cfg
        self.slots = cfg["slots"]
        self.n_img = self.slots * (2 if cfg["align"] else 1)
        longest = max(cfg["spec_max"], cfg["target_n"], cfg["base_max"])
        self.seq = 1 + self.n_img + 2 + 4 * longest + 2
        self.spec = LanguageSpec(ArchSpec(vocab_size=len(WORDS), **{**training.SPEC},
                                          inert=(("bos_token_id", "1"), ("eos_token_id", "2"),
                                                 ("pad_token_id", "0"))), IMG)

    def picture(self, objs, cells, rng):
        img = rng.integers(0, self.cfg["noise"] + 1, (4, 4 * self.slots, 3)).astype(np.float32)
        for (c, s), k in zip(objs, cells):
            img[:, 4 * k:4 * k + 4][mask(s)] = COLOURS[c]
        return img / 255.0

    def features(self, img):
        if self.cfg["align"]:
            halves = img.reshape(4, 2 * self.slots, 2, 3).transpose(1, 0, 2, 3).reshape(2 * self.slots, 24)
            return (halves - 0.15) @ PROJ2 * 3.0
        patches = img.reshape(4, self.slots, 4, 3).transpose(1, 0, 2, 3).reshape(self.slots, 48)
        return (patches - 0.15) @ PROJ * 3.0

    def row(self, prompt, answer, image, given=0):
        pre = [BOS] + ([IMG] * self.n_img if image else []) + [ID[w] for w in prompt] + [ID["A:"]]
        toks = pre + [ID[w] for w in answer] + [EOS]
        t = np.zeros(self.seq, np.int32); w = np.zeros(self.seq, np.float32)
        t[:len(toks)] = toks; w[len(pre) + given:len(toks)] = 1
        return t, w, len(pre)

    def dataset(self, kind, counts, n, rng):
        """rows: imgE / imgJ (picture of k objects, k drawn from counts -> answer) or trans (E phrase -> J)."""
        T, W, F, P, A = [], [], [], [], []
        for _ in range(n):
            k = counts[rng.integers(len(counts))]
            objs = [tuple(rng.integers(0, 6, 2)) for _ in range(k)]
            e = sum(([E_COL[c], E_SHP[s]] for c, s in objs), [])
            j = sum(([J_COL[c], J_SHP[s]] for c, s in (objs[::-1] if self.cfg["j_order"] == "reverse" else objs)), [])
            if kind == "trans" and self.cfg["chain"]:
                ans = e + ["="] + j
                blank = self.cfg["trans_fmt"] in ("blank", "blankJ")   # image tokens of an empty picture
                word = "descJ" if self.cfg["trans_fmt"] == "blankJ" else "trans"
                t, w, p = self.row([word], ans, blank, given=len(e) + 1)
                f = (self.features(self.picture([], [], rng)) if blank else np.zeros((self.n_img, 64))).astype(np.float32)
            elif kind == "trans" and self.cfg["align"]:
                cells = list(range(k)) if self.cfg["fill"] == "left" else sorted(rng.choice(self.slots, k, replace=False))
                src = [["none", "none"] for _ in range(self.slots)]
                for (c, s_), cell in zip(objs, cells): src[cell] = [E_COL[c], E_SHP[s_]]
                t, w, p = self.row(sum(src, []) + ["descJ"], j, False); f = np.zeros((self.n_img, 64), np.float32)
                ans = j
            elif kind == "trans":
                prompt = e + ["descJ"] if self.cfg["trans_fmt"] == "descJ" else ["trans"] + e
                t, w, p = self.row(prompt, j, False); f = np.zeros((self.n_img, 64), np.float32)
                ans = j
            else:
                if self.cfg["fill"] == "left": cells = list(range(k))
                else: cells = sorted(rng.choice(self.slots, k, replace=False))
                ans = e if kind == "imgE" else (e + ["="] + j if self.cfg["chain"] else j)
                t, w, p = self.row(["descE" if kind == "imgE" else "descJ"], ans, True)
                f = self.features(self.picture(objs, cells, rng))
            T.append(t); W.append(w); F.append(f); P.append(p); A.append(ans)
        return np.stack(T), np.stack(W), np.stack(F).astype(np.float32), np.array(P), A


def train(step, params, data, steps, lr, key):
    state = (params, OPTIMIZER.init(params))
    data = tuple(jnp.asarray(d) for d in data[:3])
    hyper = (jnp.float32(steps), jnp.float32(lr))
    loss = jnp.float32(0)
    for i in range(steps):
        state, loss = step(state, data, jnp.float32(i), hyper, jax.random.fold_in(key, i))
    return state[0], float(loss)


def greedy(logits, params, data, seq, n_new):
    T, _, F, P, _ = data
    toks = np.array(T); toks[np.arange(seq)[None] >= P[:, None]] = PAD
    out = [[] for _ in range(len(T))]
    done = np.zeros(len(T), bool)
    Tj, Fj = None, jnp.asarray(F)
    for j in range(n_new):
        lg = np.asarray(logits(params, jnp.asarray(toks), Fj))
        nxt = lg[np.arange(len(T)), P + j - 1].argmax(-1)
        toks[np.arange(len(T)), np.minimum(P + j, seq - 1)] = nxt
        for i, t in enumerate(nxt):
            if not done[i]:
                if t == EOS: done[i] = True
                else: out[i].append(WORDS[t])
    return out


def main(cfg):
    t0 = time.time()
    w = World(cfg)
    step, logits = make_fns(w.spec)
    rng = np.random.default_rng(cfg["seed"])
    bm, sm, tn = cfg["base_max"], cfg["spec_max"], cfg["target_n"]
    short, long_ = list(range(1, bm + 1)), list(range(1, sm + 1))
    n = cfg["base_rows"]
    base_data = cat(w.dataset("imgE", short, n, rng), w.dataset("imgJ", short, n, rng),
                    w.dataset("trans", short, n, rng))
    mix = rng.permutation(len(base_data[0]))[:cfg["replay"]]
    replay = tuple(a[mix] for a in base_data[:4]) + ([base_data[4][i] for i in mix],)
    e_data = cat(w.dataset("imgE", long_, cfg["spec_rows"], rng), replay)
    j_data = cat(w.dataset("trans", long_, cfg["spec_rows"], rng), replay)
    dev = w.dataset("imgJ", [tn], cfg["dev"], rng)
    test = w.dataset("imgJ", [tn], cfg["test"], rng)
    e_test = w.dataset("imgE", [tn], cfg["test"], rng)
    j_short = w.dataset("imgJ", short, cfg["test"], rng)
    key = jax.random.key(cfg["seed"])
    p0 = init_params(w.spec.arch, jax.random.fold_in(key, 0))
    base, lb = train(step, p0, base_data, cfg["base_steps"], cfg["base_lr"], jax.random.fold_in(key, 1))
    vlm_e, le = train(step, base, e_data, cfg["e_steps"], cfg["e_lr"], jax.random.fold_in(key, 2))
    text_j, lj = train(step, base, j_data, cfg["j_steps"], cfg["j_lr"], jax.random.fold_in(key, 3))
    t_train = time.time() - t0
    print(f"losses base {lb:.3f} E {le:.3f} J {lj:.3f}; trained in {t_train:.0f}s", flush=True)
    n_new = (4 * tn + 2 if cfg["chain"] else 2 * tn) + 1
    skip = 2 * bm if cfg["score"] == "new" else 0

    def j_part(words):
        return words[words.index("=") + 1:] if "=" in words else []

    def score(p, data, nn=n_new, sk=skip):
        preds = greedy(logits, p, data, w.seq, nn)
        if cfg["chain"] and data[4] and "=" in data[4][0]:
            preds, refs = [j_part(q) for q in preds], [j_part(r) for r in data[4]]
        else:
            refs = data[4]
        return 100 * np.mean([rouge_l(q[sk:], r[sk:]) for q, r in zip(preds, refs)])

    res = {}
    for name, p in [("base", base), ("vlm_e", vlm_e), ("text_j", text_j)]:
        res[name] = (score(p, dev), score(p, test))
        print(f"{name:8s} target dev {res[name][0]:5.1f} test {res[name][1]:5.1f}  E({tn}) test "
              f"{score(p, e_test, sk=0):5.1f}  J(short) {score(p, j_short, n_new, 0):5.1f}", flush=True)
    grid = [float(x) for x in cfg["grid"].split(",")]
    best, best_e, best_j = (-1, None, None), (-1, None, None), (-1, None, None)
    for a, b in itertools.product(grid, grid):
        m = jax.tree.map(lambda x, e, j: x + a * (e - x) + b * (j - x), base, vlm_e, text_j)
        d = score(m, dev)
        if d > best[0]: best = (d, (a, b), m)
        if b == 0 and d > best_e[0]: best_e = (d, (a, b), m)   # VLM-E's task vector alone, scaled
        if a == 0 and d > best_j[0]: best_j = (d, (a, b), m)   # text-J's alone, scaled
        print(f"TA a={a} b={b}: dev {d:5.1f}", flush=True)
    for tag, bb in [("E only", best_e), ("J only", best_j)]:
        if bb[1] is not None:
            print(f"{tag} scaled, dev-chosen {bb[1]}: dev {bb[0]:.1f} test {score(bb[2], test):.1f}", flush=True)
    d, (a, b), m = best
    t = score(m, test)
    for name, p in [("vlm_e", vlm_e), ("text_j", text_j), ("merge", m)]:
        preds = greedy(logits, p, test, w.seq, n_new)
        print(name, "samples:", [" ".join(q) + " | " + " ".join(r) for q, r in zip(preds[:3], test[4][:3])],
              "mean len", np.mean([len(q) for q in preds]), flush=True)
    srcs = max(res["base"][1], res["vlm_e"][1], res["text_j"][1])
    print(f"RESULT {cfg_str(cfg)} | base {res['base'][1]:.1f} vlm_e {res['vlm_e'][1]:.1f} "
          f"text_j {res['text_j'][1]:.1f} | TA dev-chosen a={a} b={b} dev {d:.1f} test {t:.1f} "
          f"margin {t - srcs:+.1f} | train {t_train:.0f}s total {time.time() - t0:.0f}s", flush=True)


def cfg_str(cfg):
    return " ".join(f"{k}={v}" for k, v in cfg.items() if CONFIG[k] != v) or "default"


if __name__ == "__main__":
    cfg = dict(CONFIG)
    for arg in sys.argv[1:]:
        k, v = arg.split("=", 1)
        cfg[k] = type(CONFIG[k])(v)
    main(cfg)
