"""The demo world: tokenizer through AutoTokenizer, HF-loadable models, disjoint deterministic task splits."""
import json

import jax
import numpy as np
import pytest
import yaml

from jaxmerge.demo import training, vocab
from jaxmerge.demo.build import save_model
from jaxmerge.demo.tasks import COMPOSED, TARGET, TEMPLATE, _cipher_table, make_splits, write_tasks
from jaxmerge.demo.train import _chunk_jit, encode, init_params, train
from jaxmerge.demo.world import SHIPPED, build_world
from jaxmerge.errors import JaxmergeError


def read_rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_tokenizer_round_trips_through_autotokenizer(tmp_path):
    from transformers import AutoTokenizer

    vocab.save_tokenizer(tmp_path)
    tok = AutoTokenizer.from_pretrained(tmp_path)
    ours = vocab.build_tokenizer()
    for ex in make_splits(0, {"test": 3})["reverse"]["test"] + make_splits(0, {"test": 3})["add"]["test"]:
        text = TEMPLATE.format(prompt=ex.prompt)
        ids = tok(text)["input_ids"]
        assert ids == ours.encode(text).ids and ids[0] == vocab.BOS and vocab.UNK not in ids
        answer = tok(ex.answer + "\n", add_special_tokens=False)["input_ids"]
        assert tok.decode(answer[:-1]) == ex.answer and answer[-1] == vocab.WORDS.index("\n")
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (vocab.BOS, vocab.EOS, vocab.PAD)
    assert len(tok) == len(vocab.WORDS) < 200


def test_splits_are_disjoint_and_deterministic(tmp_path):
    sizes = {"test": 50, "dev": 20, "train": 300}
    splits = make_splits(3, sizes)
    assert set(splits) == {*training.SKILLS, COMPOSED, TARGET}
    for skill, parts in splits.items():
        prompts = {k: {e.prompt for e in v} for k, v in parts.items()}
        assert {k: len(v) for k, v in prompts.items()} == sizes, skill  # no duplicates inside a split
        assert not prompts["test"] & prompts["dev"] and not (prompts["test"] | prompts["dev"]) & prompts["train"]
    assert make_splits(3, sizes) == splits
    assert make_splits(4, sizes) != splits
    assert make_splits(3, {"test": 50})["sort"]["test"] == splits["sort"]["test"]  # test never depends on others


def test_the_target_is_the_composed_op_at_a_length_no_model_trains_on():
    """cipher(sort(x)): the base's rows have 3-4 letters, the target's (dev and test) exactly 5."""
    table = _cipher_table(0)
    splits = make_splits(0, {"test": 40, "dev": 40, "train": 200}, (COMPOSED, TARGET))
    for skill, letters in ((COMPOSED, {3, 4}), (TARGET, {5})):
        for rows in splits[skill].values():
            for ex in rows:
                words = ex.prompt.split()
                assert words[:2] == ["cipher", "sort"] and len(words) - 2 in letters, ex
                assert ex.answer.split() == [table[c] for c in sorted(words[2:])], ex


def test_task_files_follow_the_contract(tmp_path):
    skills, target = write_tasks(tmp_path / "a", seed=0, dev=10, test=30)
    write_tasks(tmp_path / "b", seed=0, dev=10, test=30)
    for path in [*skills.values(), target]:
        spec = yaml.safe_load(path.read_text())
        assert spec["template"] == "Q: {prompt}\nA:" and spec["stop"] == ["\n"] and spec["metric"] == "greedy_match"
        dev, test = (read_rows(path.parent / spec["splits"][s]) for s in ("dev", "test"))
        assert not {r["prompt"] for r in dev} & {r["prompt"] for r in test}
        for name in (path.name, spec["splits"]["dev"], spec["splits"]["test"]):  # same seed, same bytes
            assert (tmp_path / "b" / name).read_bytes() == (path.parent / name).read_bytes()
    assert set(skills) == set(training.SKILLS)
    target_test = read_rows(target.parent / "target_test.jsonl")
    assert len(target_test) == 30 and all(r["prompt"].startswith("cipher sort ") for r in target_test)


def test_extra_dev_rows_are_neither_training_nor_test_rows(tmp_path):
    """dev_extra is drawn after the train split the models were trained on (the sizes world.py passes)."""
    SPLIT_SIZES = training.SPLIT_SIZES

    skills, _ = write_tasks(tmp_path, seed=0, train=training.TRAIN_ROWS, **SPLIT_SIZES)
    splits = make_splits(0, {"test": SPLIT_SIZES["test"], "dev": SPLIT_SIZES["dev"], "train": training.TRAIN_ROWS},
                         training.SKILLS)
    for skill, path in skills.items():
        dev = {r["prompt"] for r in read_rows(path.parent / f"{skill}_dev.jsonl")}
        assert len(dev) == SPLIT_SIZES["dev"] + SPLIT_SIZES["dev_extra"]
        assert {e.prompt for e in splits[skill]["dev"]} <= dev  # the first dev rows are unchanged
        assert not dev & {e.prompt for e in splits[skill]["train"] + splits[skill]["test"]}


@pytest.mark.slow
def test_training_steps_compile_once_and_saved_model_matches_transformers(tmp_path):
    import torch
    import transformers

    import jaxmerge

    spec = training.spec()
    tokens, weights = encode(make_splits(0, {"train": 64})["sort"]["train"], training.SEQ_LEN)
    params = init_params(spec, jax.random.key(0))
    params, losses = train(spec, params, tokens, weights, steps=4, lr=1e-3, batch=8, key=jax.random.key(1), chunk=2)
    compiled = _chunk_jit._cache_size()
    again, _ = train(spec, params, tokens, weights, steps=2, lr=3e-4, batch=8, key=jax.random.key(2), chunk=2)
    params, _ = train(spec, params, tokens, weights, steps=2, lr=3e-4, batch=8, key=jax.random.key(2), chunk=2)
    assert _chunk_jit._cache_size() == compiled  # another rate and length: same executable
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(again), jax.tree.leaves(params)))  # same key
    assert np.isfinite(losses).all() and losses[-1] < losses[0]
    save_model(tmp_path / "m", params)
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "m", dtype=torch.float32).eval()
    with torch.no_grad():
        want = hf(torch.as_tensor(tokens[:4])).logits.numpy()
    got = jaxmerge.logits(jaxmerge.load(tmp_path / "m"), tokens[:4])
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)


def test_the_shipped_world_is_the_one_the_training_settings_name():
    """`jaxmerge demo` uses the shipped models only while their manifest's hash is the training settings' hash;
    a change that moves the hash without retraining (it once moved with ArchSpec's repr) makes every fresh
    machine retrain the world for minutes, silently."""
    from jaxmerge.demo.world import models_dir, training_hash
    assert json.loads((SHIPPED / "manifest.json").read_text())["hash"] == training_hash(0)
    assert models_dir(0) == SHIPPED


def test_build_world_reuses_its_directory_rebuilds_a_stale_one_and_refuses_others(tmp_path):
    if not (SHIPPED / "manifest.json").is_file():
        pytest.skip("no shipped world (run tools/build_demo_world.py)")
    world = build_world(tmp_path / "w", quick=True)
    assert {p.name for p in world.specialists.values()} == set(training.SKILLS)
    assert all((p / "config.json").is_file() and (p / "tokenizer.json").is_file()
               for p in [world.base, *world.specialists.values()])
    assert build_world(tmp_path / "w", quick=True) == world
    stamp = tmp_path / "w" / "world.json"  # a world an older jaxmerge wrote (other splits): rebuilt, not refused
    stamp.write_text(json.dumps({**json.loads(stamp.read_text()), "splits": {"test": 1}}))
    (tmp_path / "w" / "tasks" / "target_test.jsonl").write_text("stale\n")
    assert build_world(tmp_path / "w", quick=True) == world
    assert json.loads(stamp.read_text())["splits"] != {"test": 1}
    assert (tmp_path / "w" / "tasks" / "target_test.jsonl").read_text() != "stale\n"
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(JaxmergeError, match="expected an empty directory"):
        build_world(tmp_path / "other", quick=True)


@pytest.mark.slow
def test_shipped_specialist_matches_transformers_logits_and_greedy_generation(tmp_path):
    """A shipped model gives transformers' logits, and the engine's greedy_match verdict is what token-by-token
    greedy decoding (HF generate) gives."""
    import torch
    import transformers

    import jaxmerge
    from jaxmerge.fitness import load_items, load_task, load_tokenizer, make_fitness, prepare
    from jaxmerge.io import load

    if not (SHIPPED / "manifest.json").is_file():
        pytest.skip("no shipped world (run tools/build_demo_world.py)")
    world = build_world(tmp_path / "w", quick=True)
    task = load_task(world.tasks["reverse"])
    rows = load_items(task, "test")[:24] + load_items(load_task(world.tasks["add"]), "test")[:24]
    tok = transformers.AutoTokenizer.from_pretrained(world.base)
    hf = transformers.AutoModelForCausalLM.from_pretrained(world.specialists["reverse"], dtype=torch.float32)
    batch = tok([TEMPLATE.format(prompt=r.prompt) for r in rows], return_tensors="pt", padding=True)
    with torch.no_grad():
        out = hf.eval().generate(**batch, max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id)
    texts = tok.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    want = np.array([t.split("\n")[0].strip() == r.answer for t, r in zip(texts, rows)])
    model = load(world.specialists["reverse"])
    tokens, weights = encode(rows, training.SEQ_LEN)
    with torch.no_grad():
        hf_logits = hf(torch.as_tensor(tokens)).logits.numpy()
    np.testing.assert_allclose(jaxmerge.logits(model, tokens), hf_logits, atol=1e-4, rtol=0)
    ours = make_fitness(model.spec, prepare(task, rows, load_tokenizer(world.base), item_batch=24)).per_item
    np.testing.assert_array_equal(np.asarray(jax.jit(ours)(model.params)), want.astype(np.float32))
    assert 0 < want.sum() < len(want)  # both verdicts occur, so the comparison means something
