"""An image task's fitness on its own: the `choice` metric (features repeated per choice row) against
transformers' LlavaForConditionalGeneration summing each choice's log-probs, one compilation for several
candidates, and the refusals: an image task with an <image> in a prompt (mode dfs with
a VLM: tests/test_vlm_dfs.py)."""
import json

import jax
import numpy as np
import pytest
import torch
import transformers

from jaxmerge.cli import main
from jaxmerge.fitness import load_items, load_task, make_fitness
from jaxmerge.vlm.checkpoint import load_vlm
from jaxmerge.vlm.model import VLM_DECODER, LanguageSpec
from jaxmerge.vlm.processor import load_processor
from jaxmerge.vlm.tasks import prepare_images
from jaxmerge.errors import JaxmergeError
from tests.vlm_tiny import images, make_tiny_vlm

TEMPLATE = "USER: <image>\\n{prompt} ASSISTANT:"
CHOICES = ["red", "a blue box", "green", "no"]
ROWS = [{"image": f"img/{i}.png", "prompt": f"which {i}?", "answer": CHOICES[i % 4], "choices": CHOICES[:2 + i % 3]}
        for i in range(5)]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from PIL import Image
    root = tmp_path_factory.mktemp("vlm-fit")
    vlm = make_tiny_vlm(root / "vlm", seed=2)
    (root / "img").mkdir()
    for i, im in enumerate(images(len(ROWS), 16, seed=9)):
        Image.fromarray(im).save(root / f"img/{i}.png")
    for r in ROWS:
        r["answer"] = r["answer"] if r["answer"] in r["choices"] else r["choices"][0]
    (root / "dev.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    (root / "task.yml").write_text(f"name: pick\nsplits: {{dev: dev.jsonl}}\nimages: true\nmetric: choice\n"
                                   f"template: \"{TEMPLATE}\"\n")
    return root, vlm


def fitness(root, vlm_dir):
    vlm, task = load_vlm(vlm_dir), load_task(root / "task.yml")
    prepared = prepare_images(task, load_items(task, "dev"), load_processor(vlm_dir), vlm.tower, item_batch=2)
    return vlm, make_fitness(LanguageSpec(vlm.spec.text, vlm.spec.image_token), prepared, decoder=VLM_DECODER)


def transformers_choices(vlm_dir) -> np.ndarray:
    """Per item: 1 iff the answer has the highest summed log-prob of its choices (transformers, float32)."""
    hf = transformers.LlavaForConditionalGeneration.from_pretrained(vlm_dir, dtype=torch.float32,
                                                                    local_files_only=True).eval()
    processor = transformers.AutoProcessor.from_pretrained(str(vlm_dir), local_files_only=True)
    out = []
    for row, im in zip(ROWS, images(len(ROWS), 16, seed=9)):
        prompt = TEMPLATE.replace("\\n", "\n").replace("{prompt}", row["prompt"])
        enc = processor(images=[im], text=[prompt], return_tensors="pt")
        sums = []
        for choice in row["choices"]:
            cont = processor.tokenizer(" " + choice, add_special_tokens=False, return_tensors="pt").input_ids
            with torch.no_grad():
                logp = hf(input_ids=torch.cat([enc.input_ids, cont], 1),
                          pixel_values=enc.pixel_values).logits.log_softmax(-1)[0]
            sums.append(float(logp[-cont.shape[1] - 1:-1].gather(1, cont[0][:, None]).sum()))
        out.append(float(row["choices"][int(np.argmax(sums))] == row["answer"]))
    return np.asarray(out)


def test_choice_scores_match_transformers_and_compile_once(world):
    root, vlm_dir = world
    vlm, fit = fitness(root, vlm_dir)
    per_item = jax.jit(fit.per_item)
    want = transformers_choices(vlm_dir)
    np.testing.assert_array_equal(np.asarray(per_item(vlm.lm.params)), want)
    assert 0 < want.mean() < 1  # right and wrong items both occur
    rng = np.random.default_rng(0)
    for _ in range(2):  # other candidates: no recompilation
        per_item(jax.tree.map(lambda x: x + rng.normal(0, 0.01, x.shape).astype(x.dtype), vlm.lm.params))
    assert per_item._cache_size() == 1


def test_an_image_token_in_a_prompt_is_refused(world, tmp_path):
    root, vlm_dir = world
    task = load_task(root / "task.yml")
    items = load_items(task, "dev")
    items[1] = items[1]._replace(prompt="<image> twice")
    with pytest.raises(JaxmergeError, match="item 1: expected no '<image>' in the prompt"):
        prepare_images(task, items, load_processor(vlm_dir), load_vlm(vlm_dir).tower, item_batch=2)


def test_jaxmerge_eval_scores_an_image_task(world, capsys):
    root, vlm_dir = world
    want = transformers_choices(vlm_dir).mean()
    capsys.readouterr()
    assert main(["eval", str(vlm_dir), str(root / "task.yml")]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("pick") and "choice:" in line and abs(float(line.split()[-1]) - want) < 1e-6, line


def test_jaxmerge_eval_of_an_image_task_on_a_text_model_is_refused(world, tmp_path, capsys):
    from tests.vlm_tiny import text_sibling
    root, vlm_dir = world
    text = text_sibling(vlm_dir, tmp_path / "text")
    capsys.readouterr()
    assert main(["eval", str(text), str(root / "task.yml")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "vision-language model" in err, err


def test_a_sparse_text_config_reads_as_transformers_fills_it():
    """llava-hf/llava-1.5-7b-hf's config.json (its text_config lists only what differs from LlamaConfig)."""
    from jaxmerge.vlm.config import read_vlm_config
    cfg = {"architectures": ["LlavaForConditionalGeneration"], "ignore_index": -100, "image_token_index": 32000,
           "model_type": "llava", "pad_token_id": 32001, "projector_hidden_act": "gelu",
           "text_config": {"_name_or_path": "lmsys/vicuna-7b-v1.5", "architectures": ["LlamaForCausalLM"],
                           "max_position_embeddings": 4096, "model_type": "llama", "rms_norm_eps": 1e-05,
                           "torch_dtype": "float16", "vocab_size": 32064},
           "tie_word_embeddings": False, "torch_dtype": "float16", "transformers_version": "4.36.0.dev0",
           "vision_config": {"hidden_size": 1024, "image_size": 336, "intermediate_size": 4096,
                             "model_type": "clip_vision_model", "num_attention_heads": 16, "num_hidden_layers": 24,
                             "patch_size": 14, "projection_dim": 768, "vocab_size": 32000},
           "vision_feature_layer": -2, "vision_feature_select_strategy": "default", "vocab_size": 32064}
    spec = read_vlm_config(json.loads(json.dumps(cfg)), "llava-1.5")
    want = transformers.LlavaConfig(**cfg)
    t, v = want.text_config, want.vision_config
    assert (spec.text.hidden_size, spec.text.intermediate_size, spec.text.num_layers, spec.text.num_heads,
            spec.text.num_kv_heads, spec.text.vocab_size, spec.text.max_position_embeddings, spec.text.rms_norm_eps,
            spec.text.rope_theta) == (t.hidden_size, t.intermediate_size, t.num_hidden_layers,
                                      t.num_attention_heads, t.num_key_value_heads, t.vocab_size,
                                      t.max_position_embeddings, t.rms_norm_eps, t.rope_parameters["rope_theta"])
    assert (spec.vision.hidden_size, spec.vision.num_layers, spec.vision.image_size, spec.vision.patch_size,
            spec.vision.activation, spec.vision.layer_norm_eps, spec.feature_layers) == (
        v.hidden_size, v.num_hidden_layers, v.image_size, v.patch_size, v.hidden_act, v.layer_norm_eps, (23,))
    assert spec.tokens_per_tile == 576 and spec.image_token == 32000



def test_llava_next_mistral_config_reads_as_transformers_fills_it():
    """llava-hf/llava-v1.6-mistral-7b-hf's config.json (the paper's source model), its sparse Mistral text_config."""
    from jaxmerge.vlm.config import read_vlm_config
    cfg = {"architectures": ["LlavaNextForConditionalGeneration"], "ignore_index": -100,
           "image_grid_pinpoints": [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]],
           "image_token_index": 32000, "model_type": "llava_next", "projector_hidden_act": "gelu",
           "text_config": {"_name_or_path": "mistralai/Mistral-7B-Instruct-v0.2",
                           "architectures": ["MistralForCausalLM"],
                           "intermediate_size": 14336, "max_position_embeddings": 32768, "model_type": "mistral",
                           "num_key_value_heads": 8, "rms_norm_eps": 1e-05, "rope_theta": 1000000.0,
                           "sliding_window": None, "torch_dtype": "bfloat16", "vocab_size": 32064},
           "torch_dtype": "float16", "use_image_newline_parameter": True,
           "vision_config": {"hidden_size": 1024, "image_size": 336, "intermediate_size": 4096,
                             "model_type": "clip_vision_model", "num_attention_heads": 16, "num_hidden_layers": 24,
                             "patch_size": 14, "projection_dim": 768, "vocab_size": 32000},
           "vision_feature_layer": -2, "vision_feature_select_strategy": "default", "vocab_size": 32064}
    spec = read_vlm_config(json.loads(json.dumps(cfg)), "llava-1.6-mistral")
    t = transformers.LlavaNextConfig(**cfg).text_config
    assert (spec.text.model_type, spec.text.hidden_size, spec.text.num_layers, spec.text.num_heads,
            spec.text.num_kv_heads, spec.text.intermediate_size, spec.text.sliding_window, spec.text.rope_theta) == (
        "mistral", t.hidden_size, t.num_hidden_layers, t.num_attention_heads, t.num_key_value_heads,
        t.intermediate_size, t.sliding_window, t.rope_parameters["rope_theta"])
    assert spec.grid == tuple(map(tuple, cfg["image_grid_pinpoints"])) and spec.tiled
